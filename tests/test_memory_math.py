"""The math of the matrix memories (SHM, FWP, mLSTM) against naive loops written from the equations.

All in float64. The per-model contract (forward ≡ step loop, resets, causality…) is in
test_memory_contract.py; here each fast path is checked against an independent oracle.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from torchkit.memory.fwp import FWP
from torchkit.memory.mlstm import MLSTM
from torchkit.memory.kernels.hadamard import hadamard_scan, hadamard_scan_steps
from torchkit.memory.shm import SHM

f64 = torch.float64


def _close(a, b, tol=1e-10):
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max().item()


def _scan_inputs(B=2, T=13, H=3, seed=0, zeros=True):
    g = torch.Generator().manual_seed(seed)
    C = 2 * torch.rand(B, T, H, H, generator=g, dtype=f64)
    if zeros:  # exact zeros (resets) at a few steps and entries
        C[0, min(4, T - 1)] = 0.0
        C[1, 0] = 0.0
        C[1, T // 2, 0, 1] = 0.0
    U = torch.randn(B, T, H, H, generator=g, dtype=f64)
    M0 = torch.randn(B, H, H, generator=g, dtype=f64)
    return C, U, M0


# ----------------------------------------------------------------------------------------- scan
@pytest.mark.parametrize("T", [1, 5, 13, 37])
@pytest.mark.parametrize("chunk", [1, 4, 16, 64])
def test_scan_values_and_grads_match_loop(T, chunk):
    C, U, M0 = (t.requires_grad_() for t in _scan_inputs(T=T))
    w = torch.randn(C.shape, dtype=f64)  # a generic loss Σ w ⊙ M
    M = hadamard_scan(C, U, M0, chunk=chunk)
    M_ref = hadamard_scan_steps(C, U, M0)
    _close(M, M_ref)
    g = torch.autograd.grad((w * M).sum(), (C, U, M0))
    g_ref = torch.autograd.grad((w * M_ref).sum(), (C, U, M0))
    for a, b in zip(g, g_ref):
        assert torch.isfinite(a).all()
        _close(a, b)


def test_scan_gradcheck_with_zeros():
    C, U, M0 = (t.requires_grad_() for t in _scan_inputs(B=2, T=9, H=2))
    assert gradcheck(lambda c, u, m: hadamard_scan(c, u, m, chunk=4), (C, U, M0))
    # second order (the backward is itself a scan)
    assert torch.autograd.gradgradcheck(lambda c, u, m: hadamard_scan(c, u, m, chunk=4), (C, U, M0),
                                        fast_mode=True)


def test_scan_clamp_matches_clamped_loop():
    C, U, M0 = _scan_inputs(T=30, zeros=False)
    C = (1 + C / 4).requires_grad_()  # C ∈ [1, 1.5): M grows, the clamp starts biting part-way
    U, M0 = U.requires_grad_(), M0.requires_grad_()
    free = hadamard_scan_steps(C, U, M0).detach()
    clamp = 1.01 * free[:, :8].abs().max().item()
    first = int((free.abs() > clamp).flatten(2).any(-1).any(0).int().argmax())
    assert 8 <= first < 25, first  # really exercises the parallel head + sequential tail
    M = hadamard_scan(C, U, M0, clamp=clamp, chunk=4)
    M_ref = hadamard_scan_steps(C, U, M0, clamp=clamp)
    _close(M, M_ref)
    w = torch.randn(C.shape, dtype=f64)
    g = torch.autograd.grad((w * M).sum(), (C, U, M0))
    g_ref = torch.autograd.grad((w * M_ref).sum(), (C, U, M0))
    for a, b in zip(g, g_ref):
        _close(a, b)
    # inactive clamp: the parallel result is returned unchanged
    _close(hadamard_scan(C, U, M0, clamp=1e9), hadamard_scan_steps(C, U, M0))


def test_scan_clamp_survives_overflow_float32():
    """C = 2 for 300 steps overflows float32 without the clamp; the clamped result and grads stay finite."""
    C = torch.full((1, 300, 2, 2), 2.0, requires_grad=True)
    U = torch.ones(1, 300, 2, 2, requires_grad=True)
    M = hadamard_scan(C, U, None, clamp=100.0, chunk=16)
    assert torch.isfinite(M).all() and M.abs().max() <= 100.0
    M.sum().backward()
    assert torch.isfinite(C.grad).all() and torch.isfinite(U.grad).all()


# ------------------------------------------------------------------------------------------ SHM
def _shm_naive(layer, x, idx, reset=None, M=None):
    """Per-step SHM from the equations, with θ rows Θ[idx[b, t]]."""
    B, T, D = x.shape
    H = layer.mem_size
    M = torch.zeros(B, H, H, dtype=x.dtype) if M is None else M
    ys = []
    for t in range(T):
        xh = F.layer_norm(x[:, t], (D,), layer.norm.weight, layer.norm.bias)
        k = torch.relu(xh @ layer.key.weight.T)
        k = k / (1e-5 + k.sum(-1, keepdim=True))
        q = torch.relu(xh @ layer.query.weight.T)
        q = q / (1e-5 + q.sum(-1, keepdim=True))
        v = xh @ layer.value.weight.T
        eta = torch.sigmoid(xh @ layer.eta.weight.T)                    # [B,1]
        vc = xh @ layer.vc.weight.T
        theta = layer.theta[idx[:, t]]                                   # [B,H]
        C = 1 + torch.tanh(torch.einsum("bi,bj->bij", theta, vc))
        U = eta[:, :, None] * torch.einsum("bi,bj->bij", v, k)
        if reset is not None:
            M = M * (~reset[:, t]).to(M.dtype)[:, None, None]
        M = M * C + U
        if layer.clamp is not None:
            M = torch.clamp(M, -layer.clamp, layer.clamp)
        h = torch.einsum("bij,bj->bi", M, q) + xh @ layer.shortcut.weight.T + layer.shortcut.bias
        ys.append(h @ layer.out.weight.T + layer.out.bias)
    return torch.stack(ys, 1), M


def _shm(clamp, B=3, T=21, D=5, H=4, L=7):
    torch.manual_seed(0)
    layer = SHM(D, output_size=6, mem_size=H, num_thetas=L, clamp=clamp).double()
    with torch.no_grad():  # bigger v_c so C spreads over (0,2) and M grows
        layer.vc.weight.mul_(4.0)
        layer.theta.mul_(4.0)
    x = torch.randn(B, T, D, dtype=f64)
    return layer, x


@pytest.mark.parametrize("chunk", [None, 4])  # None: CPU default (loop); 4: the parallel scan
@pytest.mark.parametrize("clamp", [None, 100.0, 0.3])
def test_shm_forward_matches_naive(clamp, chunk):
    layer, x = _shm(clamp)
    layer.scan_chunk = chunk
    B, T = x.shape[:2]
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 6] = reset[2, 1] = reset[2, 15] = True
    M0 = torch.randn(B, layer.mem_size, layer.mem_size, dtype=f64)
    torch.manual_seed(7)
    idx = torch.randint(layer.theta.shape[0], (B, T))  # the draw forward makes first
    y_ref, M_ref = _shm_naive(layer, x, idx, reset, M0)
    torch.manual_seed(7)
    y, (M,) = layer(x, (M0,), reset)
    _close(y, y_ref)
    _close(M, M_ref)
    if clamp == 0.3:
        assert M_ref.abs().max() == 0.3  # the clamp is active
    if clamp == 100.0:
        assert M_ref.abs().max() < 100.0  # … and here it is not
    # gradients agree too
    p = list(layer.parameters())
    torch.manual_seed(7)
    g = torch.autograd.grad(layer(x, (M0,), reset)[0].square().sum(), p)
    g_ref = torch.autograd.grad(_shm_naive(layer, x, idx, reset, M0)[0].square().sum(), p)
    for a, b in zip(g, g_ref):
        _close(a, b, tol=1e-9)


def test_shm_draws_fresh_thetas_and_fixed_uses_row_0():
    layer, x = _shm(None)
    y1, _ = layer(x)
    y2, _ = layer(x)
    assert not torch.allclose(y1, y2)  # new θ rows on every call
    layer.theta_sampling = "fixed"
    idx = torch.zeros(x.shape[:2], dtype=torch.long)
    _close(layer(x)[0], _shm_naive(layer, x, idx)[0])


def test_shm_mean_step_acts_with_the_mean_row_and_trains_with_random_rows():
    layer, x = _shm(None)
    layer.theta_sampling = "mean_step"
    assert not torch.allclose(layer(x)[0], layer(x)[0])  # sequence calls (training): fresh rows
    ref = copy.deepcopy(layer)
    ref.theta_sampling = "fixed"
    with torch.no_grad():
        ref.theta[0] = layer.theta.mean(0)
    state, ys = layer.initial_state(x.shape[0]), []
    for t in range(x.shape[1]):  # steps (acting): Θ̄ = mean row at every step
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    _close(torch.stack(ys, 1), ref(x)[0])


def test_shm_every_theta_row_gets_gradient():
    layer, x = _shm(100.0)
    y, _ = layer(torch.cat([x] * 4, 0))  # 12×21 draws over 7 rows
    y.square().sum().backward()
    assert (layer.theta.grad.abs().sum(-1) > 0).all()


# ------------------------------------------------------------------------------------------ FWP
def _fwp_naive(layer, x, reset=None):
    B, T, D = x.shape
    H = layer.mem_size
    M = torch.zeros(B, H, H, dtype=x.dtype)
    ys = []
    for t in range(T):
        xh = F.layer_norm(x[:, t], (D,), layer.norm.weight, layer.norm.bias)
        k = torch.relu(xh @ layer.key.weight.T)
        k = k / (1e-5 + k.sum(-1, keepdim=True))
        q = torch.relu(xh @ layer.query.weight.T)
        q = q / (1e-5 + q.sum(-1, keepdim=True))
        v = xh @ layer.value.weight.T
        beta = torch.sigmoid(xh @ layer.beta.weight.T)  # [B,1]
        if reset is not None:
            M = M * (~reset[:, t]).to(M.dtype)[:, None, None]
        v_bar = torch.einsum("bij,bj->bi", M, k)
        M = M + torch.einsum("bi,bj->bij", beta * (v - v_bar), k)
        h = torch.einsum("bij,bj->bi", M, q) + xh @ layer.shortcut.weight.T + layer.shortcut.bias
        ys.append(h @ layer.out.weight.T + layer.out.bias)
    return torch.stack(ys, 1), M


@pytest.mark.parametrize("scan,chunk", [("loop", 16), ("chunked", 16), ("chunked", 4), ("chunked", 1)])
def test_fwp_forward_matches_naive(scan, chunk):
    """Chunked: T = 17 leaves a 1-step chunk; resets at a chunk start (8), inside one (9, 10) and
    at step 0; values and all parameter gradients equal the naive loop's."""
    torch.manual_seed(0)
    layer = FWP(5, output_size=6, mem_size=4, scan=scan, chunk=chunk).double()
    x = torch.randn(3, 17, 5, dtype=f64)
    reset = torch.zeros(3, 17, dtype=torch.bool)
    reset[1, 9] = reset[0, 8] = reset[0, 10] = reset[2, 0] = True
    y, (M,) = layer(x, None, reset)
    y_ref, M_ref = _fwp_naive(layer, x, reset)
    _close(y, y_ref)
    _close(M, M_ref)
    params = list(layer.parameters())
    for a, b in zip(torch.autograd.grad(y.square().sum() + M.sum(), params),
                    torch.autograd.grad(y_ref.square().sum() + M_ref.sum(), params)):
        _close(a, b)


def test_fwp_chunked_carries_a_state_across_calls():
    torch.manual_seed(1)
    layer = FWP(5, output_size=6, mem_size=4, chunk=4).double()
    x = torch.randn(2, 11, 5, dtype=f64)
    y, (M,) = layer(x)
    y1, s = layer(x[:, :6])
    y2, (M2,) = layer(x[:, 6:], s)
    _close(torch.cat([y1, y2], 1), y)
    _close(M2, M)
    with pytest.raises(ValueError, match="scan"):
        FWP(5, scan="parallel")


# ---------------------------------------------------------------------------------------- mLSTM
def _mlstm_naive(layer, x, reset=None):
    """Unstabilised recurrence: i = exp(ĩ), f = σ(f̃), readout C q / max(|n·q|, 1)."""
    B, T, _ = x.shape
    H = layer.mem_size
    C, n = torch.zeros(B, H, H, dtype=x.dtype), torch.zeros(B, H, dtype=x.dtype)
    ys = []
    for t in range(T):
        xt = x[:, t]
        q = layer.query(xt)
        k = layer.key(xt) / H ** 0.5
        v = layer.value(xt)
        i = torch.exp(layer.igate(xt))[:, :, None]     # [B,1,1]
        f = torch.sigmoid(layer.fgate(xt))[:, :, None]
        o = torch.sigmoid(layer.ogate(xt))
        if reset is not None:
            keep = (~reset[:, t]).to(x.dtype)
            C, n = C * keep[:, None, None], n * keep[:, None]
        C = f * C + i * torch.einsum("bi,bj->bij", v, k)
        n = f[:, :, 0] * n + i[:, :, 0] * k
        den = torch.einsum("bj,bj->b", n, q).abs().clamp_min(1.0)
        ys.append(layer.out(o * torch.einsum("bij,bj->bi", C, q) / den[:, None]))
    return torch.stack(ys, 1), C, n


def _mlstm(gate_scale=1.0, T=23):
    torch.manual_seed(0)
    layer = MLSTM(5, output_size=6, mem_size=4).double()
    with torch.no_grad():  # larger gate pre-activations exercise the stabiliser
        layer.igate.weight.mul_(gate_scale)
        layer.fgate.weight.mul_(gate_scale)
    B = 3
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[0, 5] = reset[2, 1] = reset[2, 11] = True
    return layer, torch.randn(B, T, 5, dtype=f64), reset


@pytest.mark.parametrize("gate_scale", [1.0, 20.0])
def test_mlstm_matches_unstabilised_naive(gate_scale):
    layer, x, reset = _mlstm(gate_scale)
    y_ref, C_ref, n_ref = _mlstm_naive(layer, x, reset)
    # parallel forward
    y, (C, n, m) = layer(x, None, reset)
    _close(y, y_ref, tol=1e-9)
    _close(C * m.exp()[:, :, None], C_ref, tol=1e-9)  # stored state = true state · e^{-m}
    _close(n * m.exp(), n_ref, tol=1e-9)
    # stabilised step loop
    state, ys = layer.initial_state(x.shape[0]), []
    for t in range(x.shape[1]):
        yt, state = layer.step(x[:, t], state, reset[:, t])
        ys.append(yt)
    _close(torch.stack(ys, 1), y_ref, tol=1e-9)
    _close(state[2], m, tol=1e-9)  # both forms keep the same stabiliser
    # gradients: parallel vs naive
    p = list(layer.parameters())
    g = torch.autograd.grad(layer(x, None, reset)[0].square().sum(), p)
    g_ref = torch.autograd.grad(_mlstm_naive(layer, x, reset)[0].square().sum(), p)
    for a, b in zip(g, g_ref):
        _close(a, b, tol=1e-8)


def test_mlstm_windows_equal_one_window():
    layer, x, reset = _mlstm(T=23)
    y, s = layer(x, None, reset)
    layer.max_parallel_len = 5  # windows of 5 (23 = 4·5 + 3)
    y2, s2 = layer(x, None, reset)
    _close(y, y2)
    for a, b in zip(s, s2):
        _close(a, b)


def test_mlstm_stable_in_float32_where_naive_overflows():
    layer, x, reset = _mlstm()
    layer = layer.float()
    with torch.no_grad():
        layer.igate.bias.fill_(200.0)  # exp(200) overflows float32
    y, _ = layer(x.float(), None, reset)
    assert torch.isfinite(y).all()
    state = layer.initial_state(x.shape[0])
    for t in range(x.shape[1]):
        yt, state = layer.step(x[:, t].float(), state, reset[:, t])
        assert torch.isfinite(yt).all()


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("cls", [SHM, FWP, MLSTM])
def test_bad_sizes_raise(cls):
    with pytest.raises(ValueError, match="mem_size"):
        cls(5, output_size=6, mem_size=0)
    with pytest.raises(ValueError, match="input_size"):
        cls(-1)
    with pytest.raises(ValueError, match="output_size"):
        cls(5, output_size=2.5)


def test_shm_bad_options_raise():
    with pytest.raises(ValueError, match="theta_sampling"):
        SHM(5, theta_sampling="first")
    with pytest.raises(ValueError, match="clamp"):
        SHM(5, clamp=0.0)
    with pytest.raises(ValueError, match="num_thetas"):
        SHM(5, num_thetas=0)
