"""MLP heads with the reference's (rlkit) initialisation, and the tanh-Gaussian policy distribution."""
from __future__ import annotations

import contextlib
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from torchkit.precision import lower_precision


def fanin_init_(linear: nn.Linear, bias: float = 0.1) -> None:
    # rlkit quirk kept from the reference: the bound uses weight.size(0), the *output* dim.
    bound = 1.0 / math.sqrt(linear.weight.size(0))
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.constant_(linear.bias, bias)


_threshold_backward_ = torch.ops.aten.threshold_backward.grad_input  # out= variant, used in place


def _onednn_linear():
    """oneDNN's linear with the bias and ReLU fused into the matrix product (one pass over the output
    instead of bias copy + GEMM + ReLU): ~25 % faster on CPU for the heads' [B*T, 128] layers.
    Returns (op, the dtypes it computes correctly here: float32, and bfloat16 where oneDNN has it)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        if not torch.backends.mkldnn.is_available():
            return None, ()
        x, w, b = torch.randn(3, 2), torch.randn(4, 2), torch.randn(4)
        ok = []
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
            try:
                y = op(x.to(dtype), w.to(dtype), b.to(dtype), "relu", [], "").float()
                if y.dtype == torch.float32 and torch.allclose(y, torch.relu(x @ w.t() + b), rtol=tol, atol=tol):
                    ok.append(dtype)
            except RuntimeError:  # no kernel for this dtype
                pass
        return (op, tuple(ok)) if ok else (None, ())
    except Exception:  # a build without oneDNN, or the private op changed
        return None, ()


_LINEAR_POINTWISE, _POINTWISE_DTYPES = _onednn_linear()


def _linear(a: Tensor, w: Tensor, b: Tensor, relu: bool) -> Tensor:
    """relu?(a wᵀ + b) into a fresh tensor (ReLU in place); a, w, b of one dtype."""
    if _LINEAR_POINTWISE is not None and a.dtype in _POINTWISE_DTYPES and a.device.type == "cpu":
        return _LINEAR_POINTWISE(a.contiguous(), w.contiguous(), b, "relu" if relu else "none", [], "")
    out = torch.addmm(b, a, w.t())
    return out.clamp_min_(0.0) if relu else out


class _ReLUMLP(torch.autograd.Function):
    """x [N, D] -> (Linear -> ReLU)* -> Linear, as one autograd node; params = (W_0, b_0, ..., W_L, b_L).

    Same math as the nn.Sequential, with less memory traffic, which is what these heads cost on CPU
    (the [B*T, 128] activations of a batch do not fit in cache): the ReLU runs in place on the
    matrix product's output and the gate of its backward in place on the incoming gradient, the
    backward skips every gradient nobody asked for (the actor loss needs dQ/da only), and a
    1-wide output layer's backward is a broadcast product instead of a k=1 GEMM.

    Layers may differ in dtype (mixed precision: bf16 hidden layers, a float32 output layer): each
    layer reads its input in its own weight's dtype, and its gradients come back in that dtype."""

    @staticmethod
    def forward(ctx, x: Tensor, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        acts = []                                      # inputs of each layer, in its dtype
        a = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            a = a.to(w.dtype)                          # (no copy when the dtype is already w's)
            acts.append(a)
            a = _linear(a, w, b, relu=i < len(weights) - 1)  # [N, out_i]
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(*acts, *weights)
            ctx.x_dtype = x.dtype
        return a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        n = len(saved) // 2
        acts, weights = saved[:n], saved[n:]
        need = ctx.needs_input_grad                    # (x, W_0, b_0, W_1, b_1, ...)
        grads: List = [None] * len(need)
        g = grad.contiguous()                           # gradient w.r.t. layer i's output [N, out_i]
        for i in reversed(range(n)):
            g = g.to(weights[i].dtype)
            if need[1 + 2 * i]:
                grads[1 + 2 * i] = g.t().mm(acts[i])
            if need[2 + 2 * i]:
                grads[2 + 2 * i] = g.sum(0)
            if i == 0 and not need[0]:
                break
            g_in = g * weights[i] if g.shape[1] == 1 else g.mm(weights[i])  # [N, in_i]
            if i > 0:  # through the ReLU that produced acts[i]
                g_in = g_in.to(acts[i].dtype)
                _threshold_backward_(g_in, acts[i], 0.0, grad_input=g_in)
            g = g_in
        if need[0]:
            grads[0] = g.to(ctx.x_dtype)
        return tuple(grads)


def relu_mlp(x: Tensor, layers: Sequence[Tuple[Tensor, Tensor]]) -> Tensor:
    """[..., D] -> ReLU MLP over ``layers`` [(weight [out, in], bias [out]), ...] (no ReLU after the
    last) -> [..., out].

    Under autocast (mixed precision) the hidden layers run in the autocast dtype and the output
    layer in float32: what the losses read (Q values, action means and log-stds) keeps float32
    resolution, and the narrow output layer gains little from bf16 anyway. The casts sit outside
    the fused node, so the float32 parameters receive float32 gradients."""
    low = lower_precision(x.device.type)
    if low is not None:
        *hidden, last = layers
        layers = [(w.to(low), b.to(low)) for w, b in hidden] + [(last[0].float(), last[1].float())]
        x = x.to(layers[0][0].dtype)
    params = [p for wb in layers for p in wb]
    with torch.autocast(x.device.type, enabled=False) if low is not None else _NO_CONTEXT:
        y = _ReLUMLP.apply(x.reshape(-1, x.shape[-1]), *params)
    return y.reshape(*x.shape[:-1], y.shape[-1])


_NO_CONTEXT = contextlib.nullcontext()


def fold_readout(weight: Tensor, bias: Tensor, readout: nn.Linear) -> Tuple[Tensor, Tensor]:
    """A first layer reading x = [y, rest] with y = readout(z) (weight [h, O + r], bias [h]) -> the same
    layer reading [z, rest]: weight [h, Z + r] = [W_y W_o, W_rest], bias b + W_y b_o. Gradients reach
    W_y and the readout's W_o, b_o through these small products."""
    w_y = weight[:, :readout.out_features]                                    # [h, O]
    return (torch.cat([w_y @ readout.weight, weight[:, readout.out_features:]], 1),
            torch.addmv(bias, w_y, readout.bias))


class MLP(nn.Module):
    """ReLU MLP; hidden layers fan-in initialised, last layer uniform(±init_w)."""

    def __init__(self, in_size: int, hidden: Sequence[int], out_size: int, init_w: float = 3e-3):
        super().__init__()
        layers, size = [], in_size
        for h in hidden:
            lin = nn.Linear(size, h)
            fanin_init_(lin)
            layers += [lin, nn.ReLU()]
            size = h
        self.body = nn.Sequential(*layers)
        self.last = nn.Linear(size, out_size)
        nn.init.uniform_(self.last.weight, -init_w, init_w)
        nn.init.uniform_(self.last.bias, -init_w, init_w)
        self.feature_size = size

    def hidden_layers(self) -> List[Tuple[Tensor, Tensor]]:
        return [(m.weight, m.bias) for m in self.body if isinstance(m, nn.Linear)]

    def layers(self, readout: Optional[nn.Linear] = None,
               last: Optional[Tuple[Tensor, Tensor]] = None) -> List[Tuple[Tensor, Tensor]]:
        """(weight, bias) of every layer (``last`` in place of the last one's); ``readout``: the first
        layer folded to read z (see fold_readout)."""
        layers = [*self.hidden_layers(), last or (self.last.weight, self.last.bias)]
        if readout is not None:
            layers[0] = fold_readout(*layers[0], readout)
        return layers

    def forward(self, x: Tensor, readout: Optional[nn.Linear] = None) -> Tensor:
        """x [..., in_size] -> [..., out_size]; with ``readout``, x = [z, rest] stands for [readout(z), rest]."""
        return relu_mlp(x, self.layers(readout))


class Embedder(nn.Module):
    """Linear + ReLU; ``size == 0`` switches the input off (the output has width 0)."""

    def __init__(self, in_size: int, size: int):
        super().__init__()
        if size < 0:
            raise ValueError(f"embedding size must be >= 0, got {size}")
        self.size = size
        self.net = nn.Sequential(nn.Linear(in_size, size), nn.ReLU()) if size > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        if self.net is None:
            return x.new_zeros(*x.shape[:-1], 0)
        return self.net(x)


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def tanh_gaussian_sample(mean: Tensor, log_std: Tensor, reparameterize: bool = True
                         ) -> Tuple[Tensor, Tensor]:
    """a = tanh(μ + σ ε); log π(a) = Σ_i [log N(z_i; μ_i, σ_i) − log(1 − a_i² + 1e-6)] -> ([..., A], [..., 1])."""
    std = log_std.exp()
    eps = torch.randn_like(mean)
    z = mean + std * eps
    if not reparameterize:
        z = z.detach()
    a = torch.tanh(z)
    log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)) - torch.log(1 - a.pow(2) + 1e-6)
    return a, log_prob.sum(-1, keepdim=True)


class TanhGaussianHead(nn.Module):
    """Features -> (mean, log_std) of a tanh-squashed Gaussian; log_std clamped to [-20, 2]."""

    def __init__(self, in_size: int, hidden: Sequence[int], action_dim: int, init_w: float = 1e-3):
        super().__init__()
        self.mlp = MLP(in_size, hidden, action_dim, init_w)  # .last produces the mean
        self.log_std = nn.Linear(self.mlp.feature_size, action_dim)
        nn.init.uniform_(self.log_std.weight, -init_w, init_w)
        nn.init.uniform_(self.log_std.bias, -init_w, init_w)

    def forward(self, x: Tensor, readout: Optional[nn.Linear] = None) -> Tuple[Tensor, Tensor]:
        """As ``MLP.forward`` (``readout``: x = [z, rest] stands for [readout(z), rest])."""
        # mean and log_std layers as one [2A, hidden] output layer of the fused MLP
        out = (torch.cat([self.mlp.last.weight, self.log_std.weight]),
               torch.cat([self.mlp.last.bias, self.log_std.bias]))
        y = relu_mlp(x, self.mlp.layers(readout, last=out))
        mean, log_std = y.split(self.log_std.out_features, -1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


class ImageEncoder(nn.Module):
    """The reference's small CNN for egocentric pixel crops (ref-credit-assignment §6.5).

    [..., H, W, C] pixels (uint8 or float in 0..255, HWC) -> /255 -> CHW ->
    Conv(C->8, 2x2) + ReLU -> Conv(8->16, 2x2) + ReLU -> flatten -> Linear(-> size), no activation.
    For 5x5x3 crops: 3->8 (4x4) -> 16 (3x3) -> 144 -> 100 (15,132 parameters at size 100).
    """

    def __init__(self, image_shape: Sequence[int], size: int = 100, channels: Sequence[int] = (8, 16),
                 kernel_size: int = 2):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"ImageEncoder needs (H, W, C) images, got shape {tuple(image_shape)}")
        h, w, c = (int(s) for s in image_shape)
        if size <= 0:
            raise ValueError(f"image embedding size must be positive, got {size}")
        layers, in_ch = [], c
        for out_ch in channels:
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size), nn.ReLU()]
            in_ch, h, w = out_ch, h - kernel_size + 1, w - kernel_size + 1
        if h <= 0 or w <= 0:
            raise ValueError(f"images of shape {tuple(image_shape)} are too small for {len(channels)} "
                             f"convolutions of kernel {kernel_size}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Linear(in_ch * h * w, size)
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        x = x.reshape(-1, *self.image_shape).permute(0, 3, 1, 2).float() / 255.0
        return self.fc(self.conv(x)).reshape(*lead, self.size)
