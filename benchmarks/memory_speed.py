"""Forward+backward time and saved-for-backward memory of the memory layers (CPU or GPU).

    python benchmarks/memory_speed.py                      # B=64, T ∈ {100, 500, 1000}, H=24
    python benchmarks/memory_speed.py --T 512 --B 64 --H 24
    python benchmarks/memory_speed.py --quick              # T=100 only, 2 timed calls (about 1 min)
    python benchmarks/memory_speed.py --no-shm --no-layers --s6-floor   # S6's floor on Wind (part 3)

Part 1 times the SHM recurrence alone, from its factors θ, vc, ev, k, q [B,T,H] and M0 [B,H,H] to
h [B,T,H] and M_T, by seven methods, and checks each against the package's reference
(torchkit.memory.kernels.shm.shm_scan_steps in float64: "h err" = max |h − h_ref| / max |h_ref|):
  ref_index   the original code's style: C, U materialised [B,T,H,H] and indexed C[:, t] in the
              loop (each SelectBackward allocates a zero [B,T,H,H]: O(T²) backward)
  unbind      the same loop over C.unbind(1) (linear backward): the baseline of the ratios
  steps       shm_scan_steps: the reference, one step at a time from the factors (autograd per step)
  hadamard    torchkit.memory.kernels.hadamard.hadamard_scan on materialised C, U (the previous SHM path)
  eager       shm_scan(backend="eager")
  compiled    shm_scan(backend="compiled") (compile time reported separately)
  native      shm_scan(backend="native"): the C++ CPU kernel (CPU only; what SHM runs on CPU)
Part 2 builds every layer of conf/model/*.yaml (the paper's sizes, or --width) and times
forward+backward; GRU also with backend=torch (nn.GRU) beside its fused CPU kernel.

Part 3 (--s6-floor) is S6's elementwise floor on Wind: what one update's S6 scans would cost at the
per-element speed of SHM's fused C++ kernel (see ``s6_floor``), beside the S6 scans as they run and a
whole S6 Wind update (the Trainer's, as benchmarks.train_speed times it), all in one process.

Time = median of the timed calls after the first call (which is reported apart: it includes any
compile); "saved" = bytes of the distinct storages that autograd keeps for backward
(torch.autograd.graph.saved_tensors_hooks). Threads: --threads (1). --clock cpu times this process's
CPU time instead of wall time, steadier when other jobs share the cores.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import sync  # noqa: E402
from torchkit.memory.kernels.hadamard import hadamard_scan  # noqa: E402
from torchkit.memory.kernels.shm import shm_scan, shm_scan_steps  # noqa: E402


# ------------------------------------------------------------------------------ SHM methods
def _materialise(th, vc, ev, k):
    C = 1 + torch.tanh(th.unsqueeze(-1) * vc.unsqueeze(-2))  # [B,T,H,H]
    return C, ev.unsqueeze(-1) * k.unsqueeze(-2)


def _loop(th, vc, ev, k, q, M, clamp, index: bool):
    C, U = _materialise(th, vc, ev, k)
    steps = ([(C[:, t], U[:, t]) for t in range(C.shape[1])] if index  # the reference's indexing
             else zip(C.unbind(1), U.unbind(1)))
    Ms = []
    for c, u in steps:
        M = M * c + u
        if clamp is not None:
            M = M.clamp(-clamp, clamp)
        Ms.append(M)
    return torch.einsum("btij,btj->bti", torch.stack(Ms, 1), q), M


def ref_index(th, vc, ev, k, q, M0, clamp):
    return _loop(th, vc, ev, k, q, M0, clamp, index=True)


def unbind(th, vc, ev, k, q, M0, clamp):
    return _loop(th, vc, ev, k, q, M0, clamp, index=False)


def steps(th, vc, ev, k, q, M0, clamp):
    return shm_scan_steps(th, vc, ev, k, q, M0, clamp=clamp)


def hadamard(th, vc, ev, k, q, M0, clamp):
    C, U = _materialise(th, vc, ev, k)
    M = hadamard_scan(C, U, M0, clamp=clamp)
    return torch.einsum("btij,btj->bti", M, q), M[:, -1]


def eager(th, vc, ev, k, q, M0, clamp):
    return shm_scan(th, vc, ev, k, q, M0, clamp=clamp, backend="eager")


def compiled(th, vc, ev, k, q, M0, clamp):
    return shm_scan(th, vc, ev, k, q, M0, clamp=clamp, backend="compiled")


def native(th, vc, ev, k, q, M0, clamp):
    return shm_scan(th, vc, ev, k, q, M0, clamp=clamp, backend="native")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
SHM_METHODS = {"ref_index": ref_index, "unbind": unbind, "steps": steps, "hadamard": hadamard,
               "eager": eager, "compiled": compiled, "native": native}


# ------------------------------------------------------------------------------ measurement
def measure(fn, inputs, reps: int, device, clock=time.perf_counter):
    """fn(*inputs) -> tensors; loss = Σ out·1e-3. Returns (first-call s, median s, saved MB)."""
    def call(count_saved=False):
        seen = {}

        def pack(t):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack if count_saved else (lambda t: t),
                                                      lambda t: t):
            outs = fn(*inputs)
        loss = sum((o.float() * 1e-3).sum() for o in outs)
        torch.autograd.grad(loss, [x for x in inputs if x.requires_grad])
        return sum(seen.values()) / 2 ** 20

    sync(device)
    t0 = time.perf_counter()
    saved = call(count_saved=True)
    sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = clock()
        call()
        sync(device)
        times.append(clock() - t0)
    return first, statistics.median(times), saved


def shm_inputs(B, T, H, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    th, vc = r(B, T, H) * 0.3, r(B, T, H) * 0.5     # SHM's init scale: C mostly in (0.7, 1.3)
    ev = r(B, T, H) * 0.5
    k = torch.relu(r(B, T, H))
    k, q = k / (1e-5 + k.sum(-1, keepdim=True)), torch.softmax(r(B, T, H), -1)
    M0 = torch.zeros(B, H, H)
    return [x.to(device).requires_grad_() for x in (th, vc, ev, k, q, M0)]


def fmt_t(s):
    return "skip" if s is None else (f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s")


def shm_table(args, device):
    print(f"## SHM recurrence, forward+backward (B={args.B}, H={args.H}, clamp={args.clamp}, "
          f"{torch.get_num_threads()} thread(s), {device}, {args.clock} time)\n")
    print("| T | method | time | vs unbind | saved MB | vs unbind | first call | h err |")
    print("|---|---|---|---|---|---|---|---|")
    for T in args.T:
        inputs = shm_inputs(args.B, T, args.H, device)
        with torch.no_grad():
            h_ref = shm_scan_steps(*(x.double() for x in inputs), clamp=args.clamp)[0]
        rows, errs = {}, {}
        for name in args.methods:
            if (name == "ref_index" and T > args.max_ref_T) or (name == "native" and device.type != "cpu"):
                rows[name] = None
                continue
            with torch.no_grad():
                h = SHM_METHODS[name](*inputs, args.clamp)[0]
            errs[name] = ((h.double() - h_ref).abs().max() / h_ref.abs().max()).item()
            reps = 1 if name == "ref_index" and T > 200 else args.reps
            rows[name] = measure(lambda *x: SHM_METHODS[name](*x, args.clamp), inputs, reps, device,
                                 CLOCKS[args.clock])
        base = rows.get("unbind")
        for name, r in rows.items():
            if r is None:
                why = "CPU kernel" if name == "native" else f"T > --max-ref-T {args.max_ref_T}"
                print(f"| {T} | {name} | skip ({why}) | | | | | |")
                continue
            first, med, saved = r
            rt = f"{base[1] / med:.2f}×" if base else ""
            rm = f"{saved / base[2]:.3f}×" if base and base[2] else ""
            print(f"| {T} | {name} | {fmt_t(med)} | {rt} | {saved:.1f} | {rm} | {fmt_t(first)} | "
                  f"{errs[name]:.1e} |")
        sys.stdout.flush()
    print()


# ------------------------------------------------------------------------------ all layers
def layers_table(args, device):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    sizes = f"width {args.width}" if args.width else "conf/model sizes"
    print(f"## Memory layers at {sizes}, forward+backward (B={args.B}, T={args.layer_T}, "
          f"D={args.D}, {args.clock} time)\n")
    print("| model | params | time | saved MB | first call |")
    print("|---|---|---|---|---|")
    for path in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        if args.models and path.stem not in args.models:
            continue
        cfg = OmegaConf.create({"model": OmegaConf.load(path)})
        if args.width:
            cfg.model.width = args.width
        torch.manual_seed(0)
        layer = instantiate(cfg.model.memory, input_size=args.D).to(device)
        x = torch.randn(args.B, args.layer_T, args.D, device=device, requires_grad=True)
        params = sum(p.numel() for p in layer.parameters())
        variants = {path.stem: {}}
        if path.stem == "shm":  # the SHM paths: the config's (fused, auto) and the alternatives
            variants.update({"shm scan=fused backend=compiled": {"backend": "compiled"},
                             "shm scan=fused backend=eager": {"backend": "eager"},
                             "shm scan=reference": {"scan": "reference"}})
        if path.stem == "gru":  # the fused CPU kernel (auto) against nn.GRU
            variants["gru backend=torch"] = {"backend": "torch"}
        for name, attrs in variants.items():
            for key, value in attrs.items():
                setattr(layer, key, value)
            fn = lambda x: (layer(x)[0],)  # noqa: E731
            first, med, saved = measure(fn, [x], args.reps, device, CLOCKS[args.clock])
            print(f"| {name} | {params / 1e3:.0f}k | {fmt_t(med)} | {saved:.1f} | {fmt_t(first)} |")
            sys.stdout.flush()
    print()


# ------------------------------------------------------------------------------ S6's floor
# One SAC update of the default agent on Wind (S6 in actor and critic; batch B=64 episodes of 100
# steps, so the memory sees T+1 = 101 inputs in the actor and target critic and T = 100 in the
# critic; src/algos/sac.py) runs S6's scan four times over [B, T, E, N] states (E = 2·40 = 80
# channels of the 40-wide memory input, N = d_state = 512):
S6_WIND_SCANS = (("actor, with backward", 101, True), ("target critic, no grad", 101, False),
                 ("critic, with backward", 100, True), ("critic again, no grad", 100, False))


def _wind_update_seconds(model: str, updates: int, clock=time.perf_counter) -> float:
    """Median seconds of one SAC update on Wind at the released widths (as benchmarks.train_speed)."""
    import tempfile

    from src.config import compose_config
    from src.loop import Trainer
    torch.manual_seed(0)
    cfg = compose_config(["env=wind", f"model={model}", "logger=none", "progress_bar=false",
                          f"num_threads={torch.get_num_threads()}", "experiment=reference_sizes"])
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="memrl_bench_"))
    trainer.collect(int(cfg.train.batch_size), "random")
    batch = lambda: trainer._to_tensors(trainer.buffer.sample(int(cfg.train.batch_size)))  # noqa: E731
    for _ in range(2):
        trainer.algo.update(batch())
    times = []
    for _ in range(updates):
        t0 = clock()
        trainer.algo.update(batch())
        times.append(clock() - t0)
    return statistics.median(times)


def s6_floor(args, device):
    """floor = Σ over an update's scans of B·T·E·N elements × SHM's per-element time.

    SHM's fused kernel does the same kind of elementwise work per state element (a gate through
    exp, a multiply-add into the state, a read-out product; its backward recomputes the states and
    runs the adjoint), so its time per element, forward alone and forward+backward, measured here at
    SHM's Wind sizes (B=64, T=101, H=24), prices S6's [B,T,80,512] states; the S6 scans and a whole
    S6 update are timed beside it."""
    from torchkit.memory.s6 import selective_scan
    B, E, N, H, T_shm = 64, 80, 512, 24, 101
    clock = CLOCKS[args.clock]
    print(f"## S6's elementwise floor on Wind (B={B}, E={E}, N={N}; {torch.get_num_threads()} thread(s), "
          f"{args.clock} time)\n")
    shm = shm_inputs(B, T_shm, H, device)

    def shm_fwd():
        with torch.no_grad():
            shm_scan(*shm, clamp=100.0)

    def shm_fb():
        h, M = shm_scan(*shm, clamp=100.0)
        torch.autograd.grad((h.sum() + M.sum()) * 1e-3, shm)

    def s6_inputs(T):
        g = torch.Generator().manual_seed(0)
        u, Bm, Cm = (torch.randn(B, T, k, generator=g) for k in (E, N, N))
        dt = torch.rand(B, T, E, generator=g) * 0.1
        A = -torch.arange(1, N + 1.0).repeat(E, 1)
        return [z.to(device).requires_grad_() for z in (u, dt, A, Bm, Cm, torch.zeros(B, E, N))]

    def s6_call(ins, grad):
        if not grad:
            with torch.no_grad():
                selective_scan(*ins)
            return
        y, h = selective_scan(*ins)
        torch.autograd.grad((y.sum() + h.sum()) * 1e-3, ins)

    def timed(fn, reps):
        fn()
        out = []
        for _ in range(reps):
            t0 = clock()
            fn()
            out.append(clock() - t0)
        return statistics.median(out)

    per_el = {False: timed(shm_fwd, args.reps) / (B * T_shm * H * H),
              True: timed(shm_fb, args.reps) / (B * T_shm * H * H)}
    print(f"SHM fused kernel: {per_el[False] * 1e9:.3f} ns per state element forward, "
          f"{per_el[True] * 1e9:.3f} ns forward+backward\n")
    print("| S6 scan in one update | elements B·T·E·N | floor (elements × SHM ns) | S6 scan | vs floor |")
    print("|---|---|---|---|---|")
    floor_total = scan_total = 0.0
    for name, T, grad in S6_WIND_SCANS:
        n = B * T * E * N
        floor = n * per_el[grad]
        ins = s6_inputs(T)
        scan = timed(lambda: s6_call(ins, grad), args.reps)
        floor_total, scan_total = floor_total + floor, scan_total + scan
        print(f"| {name} | {n / 1e6:.1f}M | {fmt_t(floor)} | {fmt_t(scan)} | {scan / floor:.2f}× |")
    print(f"| all four | | {fmt_t(floor_total)} | {fmt_t(scan_total)} | {scan_total / floor_total:.2f}× |")
    sys.stdout.flush()
    if args.s6_updates:
        upd = _wind_update_seconds("s6", args.s6_updates, clock)
        gru = _wind_update_seconds("gru", args.s6_updates, clock)
        print(f"\nWhole Wind update (median of {args.s6_updates}): S6 {fmt_t(upd)} = {upd / floor_total:.2f}× the "
              f"floor ({fmt_t(upd - scan_total)} outside the scans); GRU {fmt_t(gru)}, S6 / GRU {upd / gru:.1f}×")
    print()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--B", type=int, default=64)
    p.add_argument("--T", type=int, nargs="+", default=[100, 500, 1000])
    p.add_argument("--H", type=int, default=24)
    p.add_argument("--D", type=int, default=48, help="input size of the layers (part 2)")
    p.add_argument("--layer-T", type=int, default=None, help="T of part 2 (default: first --T)")
    p.add_argument("--clamp", type=float, default=100.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-ref-T", type=int, default=256, help="skip ref_index above this T (O(T²))")
    p.add_argument("--methods", nargs="+", default=list(SHM_METHODS), choices=list(SHM_METHODS))
    p.add_argument("--models", nargs="*", default=None, help="part 2 models (default: all)")
    p.add_argument("--width", type=int, default=None, help="part 2: model.width for every model "
                   "(default: each config's, the paper's sizes; 64 = the released code's Wind width)")
    p.add_argument("--no-shm", action="store_true", help="skip part 1")
    p.add_argument("--no-layers", action="store_true", help="skip part 2")
    p.add_argument("--s6-floor", action="store_true", help="part 3: S6's elementwise floor on Wind")
    p.add_argument("--s6-updates", type=int, default=5,
                   help="part 3: also time this many whole S6 and GRU Wind updates (0: skip)")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="cpu = this process's CPU time (steadier on a shared machine; 1 thread)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="T=100, 2 timed calls")
    args = p.parse_args(argv)
    if args.quick:
        args.T, args.reps = [100], 2
    args.layer_T = args.layer_T or args.T[0]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if not args.no_shm:
        shm_table(args, device)
    if not args.no_layers:
        layers_table(args, device)
    if args.s6_floor:
        s6_floor(args, device)


if __name__ == "__main__":
    main()
