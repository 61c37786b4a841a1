"""Forward+backward time and saved-for-backward memory of the memory layers (CPU or GPU).

    python benchmarks/memory_speed.py                      # B=64, T ∈ {100, 500, 1000}, H=24
    python benchmarks/memory_speed.py --T 512 --B 64 --H 24
    python benchmarks/memory_speed.py --quick              # T=100 only, 2 timed calls (about 1 min)

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
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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

    _sync(device)
    t0 = time.perf_counter()
    saved = call(count_saved=True)
    _sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = clock()
        call()
        _sync(device)
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


if __name__ == "__main__":
    main()
