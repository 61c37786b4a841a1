"""shm_scan / shm_step (the fused SHM kernels) against shm_scan_steps, the float64 loop written from
the equations beside them (torchkit/memory/kernels/shm.py).

    C_t = 1 + tanh(θ_t ⊗ vc_t),  U_t = ev_t ⊗ k_t,  M_t = clamp(C_t ⊙ M_{t-1} + U_t),  h_t = M_t q_t

The kernel runs in float32 (the training dtype) and must agree with the float64 oracle to 1e-5
relative (max |err| / max |ref|) in h, M_T and the gradients of all six inputs. The accuracy tests
run both the eager PyTorch kernels and the C++ CPU kernel (backend="native", csrc/shm_cpu.cpp).
"""
import pytest
import torch

from torchkit.memory import native
from torchkit.memory.kernels.backend import compile_works, scan_backend
from torchkit.memory.kernels.shm import _shm_gates, shm_scan, shm_scan_steps, shm_step
from torchkit.memory.shm import SHM

f64 = torch.float64
NAMES = ("h", "M_T", "dθ", "dvc", "dev", "dk", "dq", "dM0")


def oracle(*inputs, **kw):
    """The package's float64-ready step loop; also returns the pre-clamp states P [B,T,H,H]."""
    return shm_scan_steps(*inputs, **kw, pre_clamp=True)


def make(B=3, T=13, H=5, seed=0, gate=1.0, bias=0.0, M0_scale=1.0):
    """θ, vc, ev, k, q [B,T,H] and M0 [B,H,H] in float64, with θ = gate·N(0,1) + bias and
    vc ∈ [0.5, 1.5], so θ_i·vc_j ≈ gate·N(0,1) + bias."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=f64)  # noqa: E731
    th, vc = gate * r(B, T, H) + bias, 0.5 + torch.rand(B, T, H, generator=g, dtype=f64)
    k = torch.relu(r(B, T, H))  # exact zeros, as the ReLU keys
    k = k / (1e-5 + k.sum(-1, keepdim=True))
    return [th, vc, r(B, T, H), k, torch.softmax(r(B, T, H), -1), r(B, H, H) * M0_scale]


def run(fn, inputs, dtype, w, **kw):
    xs = [x.to(dtype).requires_grad_() for x in inputs]
    h, M = fn(*xs, **kw)[:2]
    grads = torch.autograd.grad((h * w[0].to(dtype)).sum() + (M * w[1].to(dtype)).sum(), xs)
    return [h, M, *grads]


def compare(inputs, tol=1e-5, dtype=torch.float32, **kw):
    """Kernel (dtype) vs the float64 oracle; returns the oracle's pre-clamp states."""
    B, T, H = inputs[0].shape
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(B, T, H, generator=g, dtype=f64), torch.randn(B, H, H, generator=g, dtype=f64))
    got = run(shm_scan, inputs, dtype, w, **kw)
    kw.pop("backend", None), kw.pop("chunk", None)
    ref = run(oracle, inputs, f64, w, **kw)
    for name, a, b in zip(NAMES, got, ref):
        assert torch.isfinite(a).all(), name
        err = ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
        assert err <= tol, f"{name}: relative error {err:.2e}"
    return oracle(*inputs, **kw)[2]


def resets(B, T, seed=3):
    r = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.15
    r[0, 0] = True  # a reset on the very first step (M0 discarded)
    return r


# ----------------------------------------------------------------------------------- accuracy
needs_native = pytest.mark.skipif(not native.available(), reason="memrl's C++ kernels did not build")


@pytest.fixture(params=["eager", pytest.param("native", marks=needs_native)])
def backend(request):
    return request.param


@pytest.mark.parametrize("chunk", [1, 4, 16])  # T=13: not a multiple of 4; 16 > T
def test_matches_oracle_init_scale(chunk, backend):
    compare(make(), backend=backend, chunk=chunk)


def test_matches_oracle_with_resets_and_random_M0(backend):
    inputs = make(T=21, M0_scale=3.0)
    compare(inputs, backend=backend, reset=resets(3, 21))


@needs_native
@pytest.mark.parametrize("H", [8, 24, 29])  # whole packs of 8 floats, and a scalar tail
def test_native_at_training_sizes(H):
    inputs = make(B=5, T=45, H=H, M0_scale=2.0)
    compare(inputs, backend="native", chunk=8, clamp=100.0, reset=resets(5, 45))
    compare(inputs, backend="native", chunk=8, dtype=f64, tol=1e-12, clamp=1.0, reset=resets(5, 45))


def test_exact_zeros_in_C(backend):
    inputs = make(T=17, gate=300.0)  # |θ·vc| up to ~1e3: C = 0 or 2 exactly in many entries
    X = inputs[0][..., :, None] * inputs[1][..., None, :]  # [B,T,H,H]
    C_ref = 1 + torch.tanh(X)
    assert (C_ref == 0).float().mean() > 0.2  # the oracle itself has exact zeros
    # so are the eager kernel's (batch-last [T,H,H,B]); the compiled gates: test_compiled_…
    for dt, below in ((torch.float32, -60.0), (f64, -400.0)):
        C, _, _ = _shm_gates(*(x.to(dt).permute(1, 2, 0) for x in inputs[:4]), None, deriv=False)
        C = C.permute(3, 0, 1, 2)  # [B,T,H,H]
        assert (X < below).any() and (C[X < below] == 0).all()
        assert ((C - C_ref.to(dt)).abs() <= 4 * torch.finfo(dt).eps).all()
    compare(inputs, backend=backend, chunk=4)
    compare(inputs, backend=backend, chunk=4, dtype=f64, tol=1e-12)


def test_C_near_2(backend):
    inputs = make(T=19, bias=3.0)  # θ·vc ≈ 3 ± 1.5: most C within 1e-2 of 2, M nearly doubles per step
    C = 1 + torch.tanh(inputs[0][..., :, None] * inputs[1][..., None, :])
    assert (C > 1.99).float().mean() > 0.5
    compare(inputs, backend=backend, chunk=4)
    compare(inputs, backend=backend, chunk=4, dtype=f64, tol=1e-12)


@pytest.mark.parametrize("chunk", [3, 8])
def test_clamp_active(chunk, backend):
    inputs = make(T=29, gate=0.3, bias=0.4, M0_scale=2.0)  # C ≈ 1.4: M grows until the clamp
    P = compare(inputs, backend=backend, chunk=chunk, clamp=5.0, reset=resets(3, 29))
    over = (P.abs() > 5.0).flatten(2).any(-1)  # [B,T]: steps where the clamp bites
    assert 0 < over.float().mean() < 0.9, over.float().mean()
    # … and C ≈ 2 for 150 steps: the unclamped M would overflow float32 (2^150)
    inputs = make(T=150, bias=3.0)
    assert oracle(*inputs)[1].abs().max() > torch.finfo(torch.float32).max
    compare(inputs, backend=backend, chunk=chunk, clamp=100.0)


def test_float64_to_roundoff(backend):
    inputs = make(T=23, gate=3.0, M0_scale=2.0)
    compare(inputs, backend=backend, chunk=5, dtype=f64, tol=1e-12, clamp=2.0, reset=resets(3, 23))


def test_shm_step_matches_scan(backend):
    inputs = [x.float() for x in make(T=6)]
    h, M = shm_scan(*inputs, clamp=1.0, backend=backend)
    M_t = inputs[5]
    for t in range(6):
        ht, M_t = shm_step(*(x[:, t] for x in inputs[:5]), M_t, clamp=1.0)
        torch.testing.assert_close(ht, h[:, t])
    torch.testing.assert_close(M_t, M)


def test_reference_equals_the_materialised_hadamard_reference():
    """Two references written independently: shm_scan_steps from the factors, and hadamard_scan_steps
    on C, U materialised [B,T,H,H] (the reset zeroes C_t and so the state carried into step t)."""
    from torchkit.memory.kernels.hadamard import hadamard_scan_steps
    th, vc, ev, k, q, M0 = make(T=17, gate=0.5, bias=0.4, M0_scale=2.0)
    reset = resets(3, 17)
    keep = (~reset).to(f64)[:, :, None, None]
    C = (1 + torch.tanh(th[..., :, None] * vc[..., None, :])) * keep
    Ms = hadamard_scan_steps(C, ev[..., :, None] * k[..., None, :], M0, clamp=3.0)
    h, M, P = shm_scan_steps(th, vc, ev, k, q, M0, clamp=3.0, reset=reset, pre_clamp=True)
    assert (P.abs() > 3.0).any()  # the clamp acts
    torch.testing.assert_close(h, (Ms * q[..., None, :]).sum(-1), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(M, Ms[:, -1], rtol=1e-13, atol=1e-13)


def test_old_import_paths_still_work():
    from torchkit.memory import gru_fused, scan
    from torchkit.memory.kernels import backend, gru, hadamard, shm
    assert scan.shm_scan is shm.shm_scan and scan.shm_step is shm.shm_step
    assert scan.hadamard_scan is hadamard.hadamard_scan and scan.scan_backend is backend.scan_backend
    assert scan.SHM_BACKENDS == backend.SHM_BACKENDS and scan.compile_works is backend.compile_works
    assert gru_fused.fused_gru is gru.fused_gru and gru_fused.gru_backend is gru.gru_backend


def test_saves_no_BTHH_tensor(backend):
    B, T, H, chunk = 4, 64, 8, 8
    inputs = [x.float().requires_grad_() for x in make(B=B, T=T, H=H)]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        h, M = shm_scan(*inputs, backend=backend, chunk=chunk)
    assert sum(saved) <= 5 * B * T * H + B * H * H * (T // chunk)  # inputs + one state per chunk
    assert max(saved) < B * T * H * H / 4


def test_bad_backend_raises():
    with pytest.raises(ValueError, match="backend"):
        scan_backend("fast", torch.zeros(1))
    with pytest.raises(ValueError, match="backend"):
        scan_backend("native", torch.zeros(1))  # native=False: a scan without a C++ kernel
    assert scan_backend("auto", torch.zeros(1, dtype=f64)) == "eager"
    with pytest.raises(ValueError, match="float32/float64 CPU kernel"):
        scan_backend("native", torch.zeros(1, dtype=torch.bfloat16), native=True)
    with pytest.raises(ValueError, match="backend"):
        SHM(4, 8, mem_size=3, backend="fast")


@needs_native
def test_native_rejects_inconsistent_inputs():
    th, vc, ev, k, q, M0 = (x.float() for x in make(B=2, T=5, H=4))
    with pytest.raises(RuntimeError, match="one shape"):
        shm_scan(th, vc[..., :3], ev, k, q, M0, backend="native")
    with pytest.raises(RuntimeError, match="M0 must be"):
        shm_scan(th, vc, ev, k, q, M0[:, :3], backend="native")
    with pytest.raises(RuntimeError, match="dtype"):
        shm_scan(th, vc.double(), ev, k, q, M0, backend="native")


@needs_native
def test_auto_is_native_on_cpu():
    assert scan_backend("auto", torch.zeros(1), native=True) == "native"
    assert scan_backend("auto", torch.zeros(1, dtype=torch.bfloat16), native=True) != "native"


def test_without_a_compiler_auto_falls_back_to_the_pytorch_scan(no_native_kernels, monkeypatch, caplog):
    monkeypatch.setenv("MEMRL_SCAN_BACKEND", "eager")  # the fallback without a compile
    with caplog.at_level("WARNING"):
        assert scan_backend("auto", torch.zeros(1), native=True) == "eager"
    assert "Ninja is required" in caplog.text
    with pytest.raises(RuntimeError, match="did not build here"):
        scan_backend("native", torch.zeros(1), native=True)
    layer = SHM(3, 8, mem_size=4)  # backend auto: still trains, through the PyTorch kernels
    y, (M,) = layer(torch.randn(2, 5, 3))
    y.sum().backward()
    assert y.shape == (2, 5, 8) and M.shape == (2, 4, 4)


# ----------------------------------------------------------------------------------- compiled
needs_compile = pytest.mark.skipif(not compile_works("cpu"), reason="torch.compile unavailable")


@needs_compile
def test_compiled_equals_eager_and_does_not_recompile():
    """One compiled variant (clamp + resets, chunk 2 to keep the compile short); cases: the clamp
    active, exact zeros in C (|θ·vc| up to ~1e3), C near 2, T padded or not."""
    from torch._dynamo.utils import counters

    B, H, kw = 3, 5, dict(clamp=3.0, chunk=2)
    cases = [(13, dict(gate=0.5, bias=0.3, M0_scale=2.0)), (8, dict(gate=300.0)), (21, dict(bias=3.0))]
    for n, (T, opts) in enumerate(cases):
        inputs = make(B=B, T=T, H=H, **opts)
        g = torch.Generator().manual_seed(T)
        w = (torch.randn(B, T, H, generator=g, dtype=f64), torch.randn(B, H, H, generator=g, dtype=f64))
        reset = resets(B, T)
        comp = run(shm_scan, inputs, torch.float32, w, backend="compiled", reset=reset, **kw)
        eager = run(shm_scan, inputs, torch.float32, w, backend="eager", reset=reset, **kw)
        ref = run(oracle, inputs, f64, w, reset=reset, clamp=kw["clamp"])
        for name, a, b, r in zip(NAMES, comp, eager, ref):
            scale = r.abs().max().item()
            assert (a.double() - r).abs().max() <= 1e-5 * scale, name  # compiled vs float64
            torch.testing.assert_close(a, b, rtol=1e-5, atol=3e-6 * scale, msg=name)
        if n == 0:
            graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == graphs  # new T, same (B, H): no recompile


# ----------------------------------------------------------------------------------- SHM layer
def test_shm_layer_fused_equals_reference():
    torch.manual_seed(0)
    layer = SHM(6, output_size=7, mem_size=4, num_thetas=5, clamp=0.5).double()
    with torch.no_grad():  # strong gates so the clamp is active
        layer.vc.weight.mul_(4.0)
        layer.theta.mul_(4.0)
    x = torch.randn(3, 19, 6, dtype=f64)
    reset = resets(3, 19)
    M0 = torch.randn(3, 4, 4, dtype=f64)
    out = {}
    for scan in ("fused", "reference"):
        layer.scan = scan
        torch.manual_seed(5)
        y, (M,) = layer(x, (M0,), reset)
        grads = torch.autograd.grad(y.square().sum() + M.sum(), list(layer.parameters()))
        out[scan] = (y, M, *grads)
    assert out["reference"][1].abs().max() == 0.5  # the clamp was active
    for a, b in zip(out["fused"], out["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_shm_bad_scan_option_raises():
    with pytest.raises(ValueError, match="scan"):
        SHM(5, scan="parallel")
    with pytest.raises(ValueError, match="backend"):
        SHM(5, backend="fast")


def test_clamp_stats_counts_the_entries_the_clamp_cuts():
    """benchmarks/shm_clamp.py: zero when |P| stays below the clamp, > 0 with a tiny clamp, and the
    clamped recurrence it runs equals the layer's own output state."""
    from benchmarks.shm_clamp import clamp_stats
    torch.manual_seed(0)
    layer = SHM(6, output_size=7, mem_size=4, num_thetas=5, clamp=1e6).double()
    x = torch.randn(2, 9, 6, dtype=f64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    assert clamp_stats(layer, x, mask)["entries"] == 0.0
    layer.clamp = 1e-3
    s = clamp_stats(layer, x, mask)
    assert 0 < s["entries"] <= 1 and 0 < s["row_steps"] <= 1 and s["peak"] > 1e-3


def _inputs_both_ways(layer, x):
    """SHM's per-step inputs (vc, ev, k, q, s) and d(random sum)/d(x, params) through the C++ input
    pass and through the PyTorch ops."""
    out = {}
    for use_native in (True, False):
        layer._native_inputs = lambda xh, use_native=use_native: use_native
        xx = x.clone().requires_grad_()
        f = layer._factors(xx)[1:]
        g = torch.Generator().manual_seed(2)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=f64).to(o.dtype)).sum() for o in f)
        grads = torch.autograd.grad(loss, [xx, *layer.parameters()], allow_unused=True)
        out[use_native] = (*f, *(gr for gr in grads if gr is not None))
    del layer._native_inputs
    return out[True], out[False]


@needs_native
def test_native_input_pass_equals_the_pytorch_ops():
    """csrc/shm_inputs_cpu.cpp: k, q = sumnorm(ReLU), ev = σ(η) v, vc, s and every gradient equal the
    PyTorch ops in float64, including a row whose key/query pre-activations are all <= 0 (sum 0:
    k = 0, only eps in the denominator) and exact zeros; float32 is within round-off of float64."""
    torch.manual_seed(0)
    layer = SHM(6, output_size=7, mem_size=4, num_thetas=5).double()
    x = torch.randn(3, 9, 6, dtype=f64)
    with torch.no_grad():  # row (0, 0): every key/query pre-activation <= 0, some exactly 0
        xh = layer.norm(x[0, 0])
        layer.key.weight[:2] = 0.0
        layer.key.weight[2:] = -xh.sign() * 0.5
        layer.query.weight.copy_(-xh.sign().expand(4, -1))
    assert layer._native_inputs(layer.norm(x))  # the path a CPU run takes
    nat, ref = _inputs_both_ways(layer, x)
    assert float(nat[2][0, 0].detach().abs().sum()) == 0.0  # k = 0 on the all-negative row
    assert len(nat) == len(ref) == 5 + 1 + 9  # outputs, dx, LayerNorm (2) and projection (7) gradients
    for a, b in zip(nat, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    nat32, _ = _inputs_both_ways(layer.float(), x.float())
    for a, b in zip(nat32, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
