"""The fused CPU GRU recurrence against gru_steps, its reference beside it (torchkit/memory/kernels/gru.py),
which is checked against nn.GRU stepped one time step at a time (float64)."""
import pytest
import torch

from torchkit.memory.base import forward_by_steps
from torchkit.memory.kernels.gru import fused_available, fused_gru, gru_backend, gru_steps
from torchkit.memory.rnn import GRU

needs_kernel = pytest.mark.skipif(not fused_available(), reason="the fused GRU kernel does not build here")


def _step_loop(gru: torch.nn.GRU, x, h0, reset):
    """Oracle: nn.GRU one step at a time, the state zeroed before x[:, t] where reset[:, t]."""
    h, ys = h0, []
    for t in range(x.shape[1]):
        if reset is not None:
            h = torch.where(reset[:, t:t + 1], torch.zeros_like(h), h)
        h = gru(x[:, t:t + 1], h.unsqueeze(0))[1][0]
        ys.append(h)
    return torch.stack(ys, 1)


@pytest.mark.parametrize("with_reset", [False, True])
def test_reference_gru_steps_equals_nn_gru(with_reset):
    torch.manual_seed(4)
    gru = torch.nn.GRU(4, 5, batch_first=True).double()
    x, h0 = torch.randn(3, 11, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    reset = None
    if with_reset:
        reset = torch.zeros(3, 11, dtype=torch.bool)
        reset[0, 0] = reset[1, 6] = reset[2, 3] = True
    torch.testing.assert_close(gru_steps(x, h0, *gru.parameters(), reset), _step_loop(gru, x, h0, reset),
                               rtol=1e-13, atol=1e-13)


@needs_kernel
@pytest.mark.parametrize("with_reset", [False, True])
def test_fused_gru_matches_step_loop_values_and_all_grads(with_reset):
    torch.manual_seed(0)
    B, T, D, H = 5, 13, 7, 6
    gru = torch.nn.GRU(D, H, batch_first=True).double()
    for p in gru.parameters():  # larger weights than the default init: saturated gates, too
        torch.nn.init.uniform_(p, -1.5, 1.5)
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    reset = (torch.rand(B, T) < 0.25) if with_reset else None
    if with_reset:
        reset[0, 0] = reset[1, 5] = True
    want = gru_steps(x, h0, *gru.parameters(), reset)
    got = fused_gru(x, h0, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0, reset)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(want)
    inputs = [x, h0, *gru.parameters()]
    loss = lambda y: (y * w).sum() + y[:, -1].pow(2).sum()  # noqa: E731 (the last state gets its own gradient)
    for g_want, g_got in zip(torch.autograd.grad(loss(want), inputs), torch.autograd.grad(loss(got), inputs)):
        assert torch.allclose(g_got, g_want, rtol=1e-10, atol=1e-12)


@needs_kernel
def test_fused_gru_float32_close_to_nn_gru_and_no_grad_path():
    torch.manual_seed(1)
    gru = torch.nn.GRU(40, 64, batch_first=True)
    x, h0 = torch.randn(8, 101, 40), torch.randn(8, 64)
    want = gru(x, h0.unsqueeze(0))[0]
    with torch.no_grad():  # nothing saved for backward on this path
        got = fused_gru(x, h0, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
    assert (got - want).abs().max() < 1e-5


@needs_kernel
def test_fused_gru_float32_gradients_close_to_float64():
    """The float32 kernel's gates use a polynomial exp (csrc/vec.h): values and all gradients
    against nn.GRU in float64, with resets, at the training width."""
    torch.manual_seed(3)
    gru = torch.nn.GRU(40, 64, batch_first=True).double()
    x, h0 = torch.randn(6, 50, 40, dtype=torch.float64), torch.randn(6, 64, dtype=torch.float64)
    reset = torch.rand(6, 50) < 0.1
    w = torch.randn(6, 50, 64, dtype=torch.float64)
    ref_in = [x.clone().requires_grad_(), h0.clone().requires_grad_(), *gru.parameters()]
    want = gru_steps(*ref_in, reset)
    g_want = torch.autograd.grad((want * w).sum(), ref_in)
    f32 = [t.detach().float().requires_grad_() for t in ref_in]
    got = fused_gru(f32[0], f32[1], *f32[2:], reset)
    g_got = torch.autograd.grad((got * w.float()).sum(), f32)
    assert (got.double() - want).abs().max() < 1e-5
    for a, b in zip(g_got, g_want):
        assert (a.double() - b).abs().max() <= 1e-4 * b.abs().max()


@needs_kernel
def test_gru_layer_backends_agree_and_match_steps():
    torch.manual_seed(2)
    fused, ref = GRU(5, 7, backend="fused").double(), GRU(5, 7, backend="torch").double()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    reset = torch.zeros(3, 9, dtype=torch.bool)
    reset[1, 4] = reset[2, 0] = True
    state = (torch.randn(3, 7, dtype=torch.float64),)
    y_f, (h_f,) = fused(x, state, reset)
    y_r, (h_r,) = ref(x, state, reset)
    y_s, (h_s,) = forward_by_steps(fused, x, state, reset)
    for a, b in ((y_f, y_r), (h_f, h_r), (y_f, y_s), (h_f, h_s)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_gru_backend_validation():
    with pytest.raises(ValueError, match="backend must be one of"):
        GRU(3, 4, backend="cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        gru_backend("fast", torch.zeros(1))
    assert gru_backend("torch", torch.zeros(1)) == "torch"
    assert gru_backend("auto", torch.zeros(1)) in ("fused", "torch")
    assert gru_backend("auto", torch.zeros(1, dtype=torch.bfloat16)) == "torch"  # the kernel is fp32/fp64
    with pytest.raises(ValueError, match="float32/float64 CPU kernel"):
        gru_backend("fused", torch.zeros(1, dtype=torch.bfloat16))


def test_without_a_compiler_auto_falls_back_to_nn_gru(no_native_kernels, monkeypatch, caplog):
    monkeypatch.delenv("MEMRL_GRU_BACKEND", raising=False)
    with caplog.at_level("WARNING"):
        assert gru_backend("auto", torch.zeros(1)) == "torch"
    assert "Ninja is required" in caplog.text
    with pytest.raises(RuntimeError, match="did not build here"):
        gru_backend("fused", torch.zeros(1))
    layer = GRU(3, 4)  # backend auto: still trains, through nn.GRU
    y, (h,) = layer(torch.randn(2, 5, 3))
    assert y.shape == (2, 5, 4) and torch.equal(h, y[:, -1])
