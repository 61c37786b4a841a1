"""The fused ReLU MLP (torchkit.nets.relu_mlp) against the plain nn.Sequential it replaces, in
float64: outputs and every gradient, with frozen weights (the actor loss), without grad, and for
the policy head's shared output layer."""
import pytest
import torch
from torch import nn

from torchkit import nets
from torchkit.nets import MLP, LOG_STD_MAX, LOG_STD_MIN, TanhGaussianHead


def plain(mlp: MLP, x):
    return mlp.last(mlp.body(x))


@pytest.mark.parametrize("hidden,out", [([16, 8], 1), ([16], 3), ([], 2), ([12, 12, 12], 1)])
def test_mlp_matches_sequential_in_float64(hidden, out):
    torch.manual_seed(0)
    mlp = MLP(7, hidden, out).double()
    with torch.no_grad():  # non-zero final weights and some dead ReLUs
        mlp.last.weight.normal_()
    x = torch.randn(5, 11, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 11, out, dtype=torch.float64)
    params = [x, *mlp.parameters()]
    y_fused, y_plain = mlp(x), plain(mlp, x)
    torch.testing.assert_close(y_fused, y_plain, rtol=1e-12, atol=1e-12)
    g_fused = torch.autograd.grad((y_fused * w).sum(), params)
    g_plain = torch.autograd.grad((y_plain * w).sum(), params)
    for a, b in zip(g_fused, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if hidden:
        assert (mlp.body(x) == 0).any(), "the test should exercise the ReLU gate"


def test_mlp_frozen_weights_give_input_gradient_only():
    torch.manual_seed(1)
    mlp = MLP(6, [10, 10], 1).double().requires_grad_(False)
    x = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    mlp(x).sum().backward()
    gx = x.grad
    assert all(p.grad is None for p in mlp.parameters())
    mlp.requires_grad_(True)
    (ref,) = torch.autograd.grad(plain(mlp, x).sum(), x)
    torch.testing.assert_close(gx, ref, rtol=1e-12, atol=1e-12)


def test_mlp_weight_gradients_without_input_gradient():
    torch.manual_seed(2)
    mlp = MLP(6, [10], 4).double()
    x = torch.randn(30, 6, dtype=torch.float64)
    mlp(x).pow(2).sum().backward()
    fused = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    plain(mlp, x).pow(2).sum().backward()
    for a, p in zip(fused, mlp.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-12, atol=1e-12)


def test_mlp_no_grad_forward_and_empty_batch():
    mlp = MLP(3, [8], 2)
    with torch.no_grad():
        x = torch.randn(4, 3)
        torch.testing.assert_close(mlp(x), plain(mlp, x))
        assert mlp(torch.zeros(0, 3)).shape == (0, 2)


def test_tanh_gaussian_head_matches_separate_layers():
    torch.manual_seed(3)
    head = TanhGaussianHead(5, [9, 9], 2).double()
    with torch.no_grad():
        head.log_std.weight.normal_(0, 3.0)  # push some log_std past the clamp
    x = torch.randn(3, 20, 5, dtype=torch.float64, requires_grad=True)
    mean, log_std = head(x)
    h = head.mlp.body(x)
    ref_mean, ref_log_std = head.mlp.last(h), head.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_std, ref_log_std, rtol=1e-12, atol=1e-12)
    params = [x, *head.parameters()]
    g = torch.autograd.grad((mean.sin() + log_std.cos()).sum(), params)
    g_ref = torch.autograd.grad((ref_mean.sin() + ref_log_std.cos()).sum(), params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mlp_rejects_wrong_input_size():
    with pytest.raises(RuntimeError):
        MLP(3, [4], 1)(torch.zeros(2, 5))


def test_mlp_state_dict_keys_unchanged():
    # checkpoints of earlier runs load: the fused forward keeps the nn.Sequential layout
    assert list(MLP(3, [4, 4], 1).state_dict()) == [
        "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias", "last.weight", "last.bias"]
    assert isinstance(MLP(3, [4], 1).body[0], nn.Linear)


@pytest.mark.skipif(nets._LINEAR_POINTWISE is None, reason="no oneDNN linear in this torch build")
def test_onednn_forward_matches_addmm(monkeypatch):
    torch.manual_seed(4)
    mlp = MLP(10, [32, 32], 3)
    x = torch.randn(200, 10, requires_grad=True)
    y = mlp(x)
    gy = torch.autograd.grad(y.square().sum(), [x, *mlp.parameters()])
    monkeypatch.setattr(nets, "_LINEAR_POINTWISE", None)  # the plain addmm path
    y_ref = mlp(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *mlp.parameters()])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(gy, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
