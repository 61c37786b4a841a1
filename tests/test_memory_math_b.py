"""S6, FFM and GPT-2 fast paths vs naive implementations written from the equations (float64)."""
import math

import pytest
import torch
import torch.nn.functional as F

from torchkit.memory import native
from torchkit.memory.base import forward_by_steps
from torchkit.memory.ffm import FFM
from torchkit.memory.gpt2 import GPT2
from torchkit.memory.s6 import S6, selective_scan
from torchkit.memory.kernels.backend import compile_works

DT = torch.float64
needs_native = pytest.mark.skipif(not native.available(), reason="memrl's C++ kernels did not build")


def _close(a, b, tol=1e-9):
    assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max().item()


def _resets(B, T, cuts):
    r = torch.zeros(B, T, dtype=torch.bool)
    for b, t in cuts:
        r[b, t] = True
    return r


def _grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


# ----------------------------------------------------------------------------------------- S6
def naive_s6(layer: S6, x, h, window, reset):
    """Per-step Mamba block straight from the equations; window [B,E,K-1] = previous conv inputs."""
    E, K = layer.d_inner, layer.d_conv
    A = -torch.exp(layer.A_log)
    w, cb = layer.conv1d.weight[:, 0, :], layer.conv1d.bias  # [E,K]
    ys = []
    for t in range(x.shape[1]):
        if reset is not None:
            keep = (~reset[:, t]).to(x.dtype)
            h = h * keep[:, None, None]
            window = window * keep[:, None, None]
        u, res = layer.in_proj(x[:, t]).chunk(2, -1)                 # [B,E]
        taps = torch.cat([window, u[:, :, None]], 2)                 # [B,E,K], oldest first
        window = taps[:, :, 1:]
        u = F.silu((taps * w).sum(-1) + cb)
        delta, Bt, Ct = layer.x_proj(u).split([layer.dt_rank, layer.d_state, layer.d_state], -1)
        dt = F.softplus(layer.dt_proj(delta))                        # [B,E]
        h = torch.exp(dt[:, :, None] * A) * h + (dt * u)[:, :, None] * Bt[:, None, :]
        y = (h * Ct[:, None, :]).sum(-1) + layer.D * u
        ys.append(layer.out(layer.out_proj(y * F.silu(res))))
    return torch.stack(ys, 1), (h, window)


@pytest.mark.parametrize("method,backend,N", [("loop", "eager", 4), ("chunked", "eager", 4),
                                              pytest.param("loop", "native", 4, marks=needs_native),
                                              pytest.param("loop", "native", 37, marks=needs_native)])
def test_selective_scan_matches_loop_values_and_grads(method, backend, N):
    """T = 13: the chunked scan pads to 16 (two chunks of 8); resets inside both chunks, at t = 0
    and at consecutive steps; the C++ kernel (native) also with N = 37 (16- and 8-wide packs and a
    scalar tail in float32 builds; float64 here)."""
    g = torch.Generator().manual_seed(0)
    B, T, E = 3, 13, 5
    u, Bm, Cm = (torch.randn(B, T, k, generator=g, dtype=DT) for k in (E, N, N))
    dt = torch.rand(B, T, E, generator=g, dtype=DT) * 0.5
    A = -torch.rand(E, N, generator=g, dtype=DT) * 2
    h0 = torch.randn(B, E, N, generator=g, dtype=DT)
    keep = (~_resets(B, T, [(0, 4), (1, 0), (2, 7), (2, 8)])).to(DT)
    ins = [z.requires_grad_() for z in (u, dt, A, Bm, Cm, h0)]
    wy, wh = torch.randn(B, T, E, generator=g, dtype=DT), torch.randn(B, E, N, generator=g, dtype=DT)

    y, h = selective_scan(*ins, keep, method=method, backend=backend)
    fast = (y, h, _grads((y * wy).sum() + (h * wh).sum(), ins))

    hh, ys = h0, []
    for t in range(T):
        hh = torch.exp(dt[:, t, :, None] * A) * keep[:, t, None, None] * hh \
            + (dt[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((hh * Cm[:, t, None, :]).sum(-1))
    y2 = torch.stack(ys, 1)
    slow = (y2, hh, _grads((y2 * wy).sum() + (hh * wh).sum(), ins))

    _close(fast[0], slow[0])
    _close(fast[1], slow[1])
    for a, b in zip(fast[2], slow[2]):
        _close(a, b)


@pytest.mark.parametrize("method,T", [("loop", 5), ("chunked", 10)])
def test_selective_scan_gradcheck(method, T):
    g = torch.Generator().manual_seed(1)
    B, E, N = 2, 3, 2
    args = [torch.randn(B, T, E, generator=g, dtype=DT), torch.rand(B, T, E, generator=g, dtype=DT),
            -torch.rand(E, N, generator=g, dtype=DT), torch.randn(B, T, N, generator=g, dtype=DT),
            torch.randn(B, T, N, generator=g, dtype=DT), torch.randn(B, E, N, generator=g, dtype=DT)]
    keep = (~_resets(B, T, [(1, 2)])).to(DT)
    torch.autograd.gradcheck(lambda *a: selective_scan(*a, keep, method=method, backend="eager"),
                             [z.requires_grad_() for z in args])


@pytest.mark.parametrize("scan,backend", [("loop", "eager"), ("chunked", "eager"),
                                          pytest.param("loop", "native", marks=needs_native)])
def test_s6_layer_matches_naive_with_state_and_resets(scan, backend):
    torch.manual_seed(0)
    layer = S6(6, output_size=7, d_state=4, expand=2, d_conv=4, scan=scan, backend=backend).double()
    B, T = 3, 11
    x = torch.randn(B, T, 6, dtype=DT)
    h0, w0 = (torch.randn_like(s) for s in layer.initial_state(B))
    reset = _resets(B, T, [(0, 0), (0, 6), (1, 2), (1, 3), (2, 10)])
    params = list(layer.parameters())

    y, (h, w) = layer(x, (h0, w0), reset)
    y2, (h2, w2) = naive_s6(layer, x, h0, w0, reset)
    _close(y, y2)
    _close(h, h2)
    _close(w, w2)
    for a, b in zip(_grads(y.square().sum() + h.sum(), params), _grads(y2.square().sum() + h2.sum(), params)):
        _close(a, b)


@pytest.mark.skipif(not compile_works("cpu"), reason="torch.compile unavailable")
def test_selective_scan_compiled_equals_float64_loop():
    g = torch.Generator().manual_seed(2)
    B, T, E, N = 2, 11, 3, 4
    u, Bm, Cm = (torch.randn(B, T, k, generator=g, dtype=DT) for k in (E, N, N))
    dt, A = torch.rand(B, T, E, generator=g, dtype=DT) * 0.5, -torch.rand(E, N, generator=g, dtype=DT) * 2
    h0 = torch.randn(B, E, N, generator=g, dtype=DT)
    keep = (~_resets(B, T, [(0, 3), (1, 9)])).to(DT)
    wy = torch.randn(B, T, E, generator=g, dtype=DT)
    out = {}
    for method, dtype, backend in (("loop", DT, "eager"), ("chunked", torch.float32, "compiled")):
        ins = [z.to(dtype).requires_grad_() for z in (u, dt, A, Bm, Cm, h0)]
        y, h = selective_scan(*ins, keep.to(dtype), method=method, backend=backend)
        out[method] = (y, h, *_grads((y * wy.to(dtype)).sum() + h.sum(), ins))
    for a, b in zip(out["chunked"], out["loop"]):
        assert (a.double() - b).abs().max() <= 1e-5 * b.abs().max(), (a.double() - b).abs().max()


def _scan_inputs(B, T, E, N, dtype, seed=3):
    g = torch.Generator().manual_seed(seed)
    u, Bm, Cm = (torch.randn(B, T, k, generator=g, dtype=DT) for k in (E, N, N))
    dt = torch.rand(B, T, E, generator=g, dtype=DT) * 0.2          # Δ, A at Mamba's init scales
    A = -torch.arange(1, N + 1, dtype=DT).repeat(E, 1) * (1 + 0.1 * torch.rand(E, N, generator=g, dtype=DT))
    h0 = torch.randn(B, E, N, generator=g, dtype=DT)
    return [z.to(dtype).requires_grad_() for z in (u, dt, A, Bm, Cm, h0)]


@needs_native
def test_native_selective_scan_float32_at_training_width():
    """float32 C++ kernel (vectorised exp) against the float64 loop, d_state 64, with resets."""
    B, T, E, N = 3, 20, 6, 64
    keep = (~_resets(B, T, [(0, 0), (1, 9), (2, 18), (2, 19)])).to(DT)
    out = {}
    for backend, dtype in (("eager", DT), ("native", torch.float32)):
        ins = _scan_inputs(B, T, E, N, dtype)
        y, h = selective_scan(*ins, keep.to(dtype), backend=backend)
        g = torch.Generator().manual_seed(4)
        wy, wh = torch.randn(B, T, E, generator=g, dtype=DT), torch.randn(B, E, N, generator=g, dtype=DT)
        out[backend] = (y, h, *_grads((y * wy.to(dtype)).sum() + (h * wh.to(dtype)).sum(), ins))
    for a, b in zip(out["native"], out["eager"]):
        assert (a.double() - b).abs().max() <= 2e-5 * b.abs().max(), (a.double() - b).abs().max()


@needs_native
def test_native_selective_scan_is_auto_on_cpu_and_saves_only_inputs():
    ins = _scan_inputs(2, 9, 3, 16, torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y, h = selective_scan(*ins)                                   # backend auto
    assert type(y.grad_fn).__name__ == "_NativeSelectiveScanBackward"
    assert sum(saved) <= sum(z.numel() for z in ins)                  # no states: recomputed in backward
    u, dt, A, Bm, Cm, h0 = (z.detach() for z in ins)
    with pytest.raises(RuntimeError, match="dtype"):
        native.extension().s6_forward(u, dt.double(), A, Bm, Cm, h0, u.new_empty(0))
    with pytest.raises(RuntimeError, match=r"h0 must be \[B,E,N\]"):
        native.extension().s6_forward(u, dt, A, Bm, Cm, h0[:, :2].contiguous(), u.new_empty(0))


def test_s6_falls_back_without_the_cpp_kernels(no_native_kernels):
    """No compiler: backend auto runs the PyTorch scan (same values); native is a clear error."""
    torch.manual_seed(0)
    layer = S6(6, output_size=7, d_state=5, backend="auto").double()
    x = torch.randn(2, 7, 6, dtype=DT)
    reset = _resets(2, 7, [(1, 3)])
    y, (h, w) = layer(x, None, reset)
    assert type(h.grad_fn).__name__ != "_NativeSelectiveScanBackward"
    y2, (h2, _) = naive_s6(layer, x, *(torch.zeros_like(s) for s in layer.initial_state(2)), reset)
    _close(y, y2)
    _close(h, h2)
    with pytest.raises(RuntimeError, match="did not build"):
        S6(6, output_size=7, d_state=5, backend="native").double()(x)


def test_s6_defaults_and_validation():
    layer = S6(40, output_size=64)
    assert layer.d_inner == 80 and layer.dt_rank == 3 and layer.d_state == 512
    dt = F.softplus(layer.dt_proj.bias.detach())
    assert float(dt.min()) >= 1e-4 - 1e-9 and float(dt.max()) <= 0.1 + 1e-6
    _close(layer.A_log[3].double(), torch.log(torch.arange(1, 513, dtype=DT)), tol=1e-6)
    with pytest.raises(ValueError, match="d_state"):
        S6(40, d_state=0)
    with pytest.raises(ValueError, match="scan"):
        S6(40, scan="parallel")
    with pytest.raises(ValueError, match="backend"):
        S6(40, backend="fast")


# ---------------------------------------------------------------------------------------- FFM
def naive_ffm(layer: FFM, x, s, reset):
    """Plain complex recurrence S_t = γ ⊙ S_{t-1} + x̃_t (reset: S_{t-1} := 0)."""
    m, O = layer.trace_size, layer.output_size
    gamma = torch.exp(layer.log_gamma())                              # [m,c]
    S = torch.view_as_complex(s.contiguous())
    outs = []
    for t in range(x.shape[1]):
        y, thru, gate = layer.pre(x[:, t]).split([m, O, m + O], -1)
        g_in, g_out = torch.sigmoid(gate).split([m, O], -1)
        if reset is not None:
            S = S * (~reset[:, t]).to(DT)[:, None, None]
        S = gamma * S + (y * g_in).to(torch.complex128)[:, :, None]
        z = layer.mix(torch.view_as_real(S).flatten(1))
        outs.append(F.layer_norm(z, (O,)) * g_out + thru * (1 - g_out))
    return torch.stack(outs, 1), torch.view_as_real(S)


@pytest.mark.parametrize("chunk,backend", [(256, "torch"), (4, "torch"),
                                           pytest.param(256, "native", marks=needs_native)])
def test_ffm_closed_form_matches_recurrence(chunk, backend):
    """The closed form (torch) and the C++ recurrence (native) against the complex step loop."""
    torch.manual_seed(0)
    layer = FFM(5, output_size=6, trace_size=3, context_size=2, chunk_size=chunk, backend=backend).double()
    with torch.no_grad():  # faster decays than the init so that old inputs matter less/more
        layer.a.mul_(3.0)
    B, T = 3, 11
    x = torch.randn(B, T, 5, dtype=DT)
    s0 = torch.randn(B, 3, 2, 2, dtype=DT)
    reset = _resets(B, T, [(0, 3), (1, 0), (1, 5), (1, 9), (2, 10)])
    params = list(layer.parameters())
    for r, state in ((None, s0), (reset, s0), (reset, None)):
        y, (s,) = layer(x, None if state is None else (state,), r)
        y2, s2 = naive_ffm(layer, x, torch.zeros_like(s0) if state is None else state, r)
        _close(y, y2)
        _close(s, s2)
        for a, b in zip(_grads(y.square().sum() + s.sum(), params),
                        _grads(y2.square().sum() + s2.sum(), params)):
            _close(a, b, tol=1e-8)


@needs_native
def test_ffm_native_float32_matches_float64_recurrence():
    """float32 C++ recurrence (the training path) within float32 error of the float64 loop."""
    torch.manual_seed(1)
    layer = FFM(5, output_size=8, trace_size=16, context_size=4).double()
    B, T = 3, 40
    x, s0 = torch.randn(B, T, 5, dtype=DT), torch.randn(B, 16, 4, 2, dtype=DT)
    reset = _resets(B, T, [(0, 0), (1, 17), (2, 30), (2, 31)])
    params = list(layer.parameters())
    y2, s2 = naive_ffm(layer, x, s0, reset)
    ref = (y2, s2, *_grads(y2.square().sum() + s2.sum(), params))
    layer.float()
    y, (s,) = layer(x.float(), (s0.float(),), reset)
    assert layer._native(x.float())
    out = (y, s, *_grads(y.square().sum() + s.sum(), params))
    for a, b in zip(out, ref):
        assert (a.double() - b).abs().max() <= 1e-5 * b.abs().max(), (a.double() - b).abs().max()


def test_ffm_falls_back_without_the_cpp_kernels(no_native_kernels):
    torch.manual_seed(0)
    layer = FFM(5, output_size=6, trace_size=3, context_size=2).double()
    x = torch.randn(2, 9, 5, dtype=DT)
    reset = _resets(2, 9, [(1, 4)])
    assert not layer._native(x)
    y, (s,) = layer(x, None, reset)
    y2, s2 = naive_ffm(layer, x, torch.zeros(2, 3, 2, 2, dtype=DT), reset)
    _close(y, y2)
    _close(s, s2)
    with pytest.raises(RuntimeError, match="did not build"):
        FFM(5, output_size=6, trace_size=3, context_size=2, backend="native")(x.float())
    with pytest.raises(ValueError, match="backend"):
        FFM(5, output_size=6, backend="fast")


def test_ffm_long_sequence_is_finite():
    layer = FFM(4, output_size=8, trace_size=4, context_size=2)
    y, (s,) = layer(torch.randn(2, 700, 4))
    assert torch.isfinite(y).all() and torch.isfinite(s).all()


# -------------------------------------------------------------------------------------- GPT-2
def naive_gpt2(layer: GPT2, x, reset=None):
    """Full attention with explicit score matrices; a token sees the last `window` tokens of its episode."""
    B, T, _ = x.shape
    n, H, W = layer.output_size, layer.n_head, layer.window
    if reset is None:
        reset = torch.zeros(B, T, dtype=torch.bool)
    pos = torch.zeros(B, T)
    seg = reset.long().cumsum(1)
    for t in range(1, T):
        pos[:, t] = torch.where(reset[:, t], 0.0, pos[:, t - 1] + 1)
    i = torch.arange(n // 2, dtype=DT)
    ang = pos.double()[..., None] / 10000 ** (2 * i / n)
    pe = torch.stack([ang.sin(), ang.cos()], -1).flatten(-2)
    h = layer.map(x) + pe
    tt = torch.arange(T)
    allowed = ((tt[:, None] >= tt[None, :]) & (tt[:, None] - tt[None, :] < W)
               & (seg[:, :, None] == seg[:, None, :]))                            # [B,T,T]
    for blk in layer.blocks:
        q, k, v = blk.c_attn(blk.ln_1(h)).split(n, -1)
        q, k, v = (z.view(B, T, H, -1).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(n // H)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, n)
        h = h + blk.c_proj(a)
        h = h + blk.mlp_proj(F.gelu(blk.c_fc(blk.ln_2(h)), approximate="tanh"))
    return layer.ln_f(h)


def _same_output(out1, out2):
    (y1, s1), (y2, s2) = out1, out2
    _close(y1, y2)
    for a, b in zip(s1, s2):
        _close(a.double(), b.double())


def _gpt(window, n_layer=2):
    torch.manual_seed(0)
    return GPT2(5, output_size=8, n_layer=n_layer, n_head=2, window=window).double().eval()


def test_gpt2_matches_full_attention_split_and_steps():
    layer = _gpt(window=64)
    B, T = 3, 12
    x = torch.randn(B, T, 5, dtype=DT)
    y, s = layer(x)
    _close(y, naive_gpt2(layer, x))
    r0 = _resets(B, T, [(b, 0) for b in range(B)])
    _same_output(layer(x, None, r0), layer(x, layer.initial_state(B), r0))  # fast vs general path
    ya, sa = layer(x[:, :5])                                                 # carried cache
    yb, sb = layer(x[:, 5:], sa)
    _same_output((y, s), (torch.cat([ya, yb], 1), sb))
    _same_output((y, s), forward_by_steps(layer, x, None, None))


def test_gpt2_window_and_resets_with_wraparound():
    layer = _gpt(window=4)
    B, T = 3, 14
    x = torch.randn(B, T, 5, dtype=DT)
    reset = _resets(B, T, [(0, 0), (1, 6), (2, 3), (2, 4), (2, 12)])
    y, s = layer(x, None, reset)
    _close(y, naive_gpt2(layer, x, reset))
    for cut in (3, 7):                            # split forwards across resets and ring wrap-around
        ya, sa = layer(x[:, :cut], None, reset[:, :cut])
        yb, sb = layer(x[:, cut:], sa, reset[:, cut:])
        _same_output((y, s), (torch.cat([ya, yb], 1), sb))
    _same_output((y, s), forward_by_steps(layer, x, None, reset))


def test_gpt2_dropout_only_in_train_and_validation():
    layer = _gpt(window=8, n_layer=1)
    x = torch.randn(2, 6, 5, dtype=DT)
    layer.train()
    assert not torch.allclose(layer(x)[0], layer(x)[0])
    layer.eval()
    _close(layer(x)[0], layer(x)[0])
    with pytest.raises(ValueError, match="n_head"):
        GPT2(5, output_size=10, n_head=4)


@needs_native
def test_gpt2_training_attention_equals_sdpa(monkeypatch):
    """Training on CPU writes attention out (softmax, C++ dropout mask); with masks of ones it must
    equal the eval path (scaled_dot_product_attention): causal, and with a cache, resets and a window."""
    import torchkit.memory.gpt2 as gpt2_mod
    import torchkit.memory.kernels.dropout as drop_mod
    ones = lambda x, p: torch.ones_like(x)  # noqa: E731
    monkeypatch.setattr(gpt2_mod, "dropout_mask", ones)
    monkeypatch.setattr(drop_mod, "dropout_mask", ones)
    layer = _gpt(window=6)
    B, T = 3, 10
    x = torch.randn(B, T, 5, dtype=DT)
    reset = _resets(B, T, [(0, 0), (1, 4), (2, 2), (2, 3)])
    state = tuple(s.detach().clone() for s in layer(torch.randn(B, 4, 5, dtype=DT))[1])
    params = list(layer.parameters())
    for args in ((x,), (x, None, reset), (x, state, reset)):
        out = {}
        for train in (True, False):
            layer.train(train)
            y, s = layer(*args)
            out[train] = (y, *s[:2], *_grads(y.square().sum(), params))
        for a, b in zip(out[True], out[False]):
            _close(a, b)


def test_dropout_masks():
    from torchkit.memory.kernels.dropout import dropout
    x = torch.ones(200, 1000)
    torch.manual_seed(0)
    a = dropout(x, 0.1, True)
    torch.manual_seed(0)
    assert torch.equal(a, dropout(x, 0.1, True))              # torch.manual_seed fixes the mask
    assert not torch.equal(a, dropout(x, 0.1, True))          # a new mask on every call
    zero = (a == 0).double().mean().item()
    assert abs(zero - 0.1) < 4 * (0.1 * 0.9 / x.numel()) ** 0.5
    assert torch.allclose(a[a != 0], torch.tensor(1 / 0.9))
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x


def test_dropout_falls_back_without_the_cpp_kernels(no_native_kernels):
    from torchkit.memory.kernels.dropout import dropout
    a = dropout(torch.ones(100, 1000), 0.25, True)
    assert abs((a == 0).double().mean().item() - 0.25) < 0.01


def test_gpt2_positional_table_equals_sinusoidal():
    from torchkit.memory.gpt2 import sinusoidal
    layer = _gpt(window=8)
    for top in (5, 300):                                        # the table grows past 128 rows
        pos = torch.randint(0, top, (4, 7))
        assert torch.equal(layer._pe(pos, DT), sinusoidal(pos, layer.output_size))


def test_gpt2_step_writes_the_cache_in_place():
    """Acting is O(window) per row: step consumes the state and returns the same cache tensors."""
    layer = _gpt(window=8)
    state = layer.initial_state(3)
    x = torch.randn(3, 5, dtype=torch.float64)
    _, new = layer.step(x, state)
    assert new[0].data_ptr() == state[0].data_ptr() and new[1].data_ptr() == state[1].data_ptr()
    assert new[2].tolist() == [1, 1, 1]
