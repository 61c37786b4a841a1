"""Stable Hadamard Memory (Le et al., ICLR 2025), as in the authors' pomdp-baselines critic.

    x̂ = LN(x);  k, q = sumnorm(ReLU(W x̂));  v = W_v x̂;  η = σ(w_η·x̂);  v_c = W_c x̂
    θ_t = Θ[l_t], l_t ~ U{0..L-1} per (batch row, step)      (or l_t = 0 with theta_sampling="fixed";
          "mean_step": random rows in sequence calls (training), the mean row Θ̄ in step() (acting))
    C_t = 1 + tanh(θ_t ⊗ v_c)        C[i,j] = 1 + tanh(θ_i v_c,j) ∈ (0, 2)
    U_t = η v ⊗ k
    M_t = clamp(M_{t-1} ⊙ C_t + U_t, ±clamp)
    y_t = W_o (M_t q_t + W_s x̂_t + b_s) + b_o

scan: fused = ``shm_scan`` on the factors θ, v_c, η v, k, q (never builds [B,T,H,H]; backend
native (C++ CPU kernel) | eager | compiled | auto) | reference = C, U materialised and ``hadamard_scan`` (the test oracle).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import native
from ..precision import full_precision, recurrence_dtype
from .base import ReadoutMemory, State
from .kernels.backend import SHM_BACKENDS, scan_backend
from .kernels.hadamard import hadamard_scan
from .kernels.shm import shm_scan, shm_step
from .util import SUMNORM_EPS, check_positive_ints, sumnorm_relu


class _NativeInputs(torch.autograd.Function):
    """x̂ [N,D] -> vc, ev, k, q, s [N,H] through one GEMM, Z = x̂ Wᵀ with W = [W_k; W_q; W_v; W_vc;
    W_s; w_η] [5H+1, D], and the C++ pass over Z's rows (csrc/shm_inputs_cpu.cpp); the backward is
    that pass's adjoint and two GEMMs (dx̂ = dZ W, dW = dZᵀ x̂)."""

    @staticmethod
    def forward(ctx, xh: Tensor, W: Tensor, b_s: Tensor):
        Z = xh.mm(W.t())                                                   # [N, 5H+1]
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(xh, W, Z)
        return tuple(native.extension().shm_inputs_forward(Z, b_s, SUMNORM_EPS))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dvc, dev, dk, dq, ds):
        xh, W, Z = ctx.saved_tensors
        dZ = native.extension().shm_inputs_backward(Z, dvc, dev, dk, dq, ds, SUMNORM_EPS)
        need = ctx.needs_input_grad
        return (dZ.mm(W) if need[0] else None, dZ.t().mm(xh) if need[1] else None,
                ds.sum(0) if need[2] else None)


THETA_RULES = ("random", "fixed", "mean_step")


class SHM(ReadoutMemory):
    """Stable Hadamard Memory; state = (M [B,H,H],); readout ``out``: y = out(M q + shortcut).

    Init: Θ Xavier-uniform (``_init_own``), nn.Linear/LayerNorm defaults for the rest.
    agent.init=reference overwrites the Linears: key, query, value, vc, eta, shortcut and out
    weights orthogonal, shortcut/out biases zero (and the LayerNorm bias, zero already); Θ and the
    LayerNorm weight keep their init."""

    scan_chunk: Optional[int] = None  # scan=reference: hadamard_scan's chunk (None: per-device default)

    def __init__(self, input_size: int, output_size: int = 512, mem_size: int = 24,
                 num_thetas: int = 128, theta_sampling: str = "random",
                 clamp: Optional[float] = 100.0, scan: str = "fused", backend: str = "auto"):
        super().__init__()
        check_positive_ints("SHM", input_size=input_size, output_size=output_size,
                            mem_size=mem_size, num_thetas=num_thetas)
        if theta_sampling not in THETA_RULES:
            raise ValueError(f"SHM: theta_sampling must be one of {THETA_RULES}, got {theta_sampling!r}")
        if clamp is not None and not clamp > 0:
            raise ValueError(f"SHM: clamp must be positive or null (no clamp), got {clamp!r}")
        if scan not in ("fused", "reference"):
            raise ValueError(f"SHM: scan must be 'fused' or 'reference', got {scan!r}")
        if backend not in SHM_BACKENDS:
            raise ValueError(f"SHM: backend must be one of {SHM_BACKENDS}, got {backend!r}")
        self.input_size, self.output_size, self.mem_size = input_size, output_size, mem_size
        self.theta_sampling, self.clamp = theta_sampling, None if clamp is None else float(clamp)
        self.scan, self.backend = scan, backend
        H = mem_size
        self.norm = nn.LayerNorm(input_size)
        self.key = nn.Linear(input_size, H, bias=False)
        self.query = nn.Linear(input_size, H, bias=False)
        self.value = nn.Linear(input_size, H, bias=False)
        self.vc = nn.Linear(input_size, H, bias=False)
        self.eta = nn.Linear(input_size, 1, bias=False)
        self.shortcut = nn.Linear(input_size, H)
        self.out = nn.Linear(H, output_size)
        self.theta = nn.Parameter(torch.empty(num_thetas, H))  # Θ [L,H]
        self._init_own()

    def _init_own(self) -> None:
        nn.init.xavier_uniform_(self.theta)

    def initial_state(self, batch_size: int, device=None) -> State:
        H = self.mem_size
        return (torch.zeros(batch_size, H, H, device=device, dtype=self.out.weight.dtype),)

    def _sample_theta(self, lead: Tuple[int, ...], device, step: bool = False) -> Tensor:
        """θ rows for every position of ``lead`` (e.g. (B,T)): [*lead, H]."""
        if self.theta_sampling == "fixed":
            return self.theta[0].expand(*lead, -1)
        if self.theta_sampling == "mean_step" and step:
            return self.theta.mean(0).expand(*lead, -1)
        idx = torch.randint(self.theta.shape[0], lead, device=device)  # fresh draw on every call
        # = self.theta[idx]; index_select (backward: index_add) is ~2x cheaper on CPU than advanced indexing
        return self.theta.index_select(0, idx.view(-1)).view(*lead, -1)

    def _factors(self, x: Tensor, step: bool = False):
        """Per-step factors for x [...,D]: θ, v_c, η v, k, q and the shortcut s, each [...,H].

        Under mixed precision these projections run in float32 too (autocast off): the key and
        query gradients pass through the sum-normalisation, whose cancellations turn bf16 rounding
        into ~5-10 % errors of dW_k, dW_q, and the projections are a small part of an update."""
        with full_precision(x):
            return self._factors_full(x.to(recurrence_dtype(x, self.out.weight)), step)

    def _factors_full(self, x: Tensor, step: bool):
        xh = self.norm(x)
        theta = self._sample_theta(tuple(x.shape[:-1]), x.device, step)
        if self._native_inputs(xh):
            outs = _NativeInputs.apply(xh.reshape(-1, self.input_size), self._input_weight(), self.shortcut.bias)
            vc, ev, k, q, s = (o.view(*x.shape[:-1], self.mem_size) for o in outs)
            return theta, vc, ev, k, q, s
        k, q = sumnorm_relu(self.key(xh)), sumnorm_relu(self.query(xh))
        ev = torch.sigmoid(self.eta(xh)) * self.value(xh)  # η v
        return theta, self.vc(xh), ev, k, q, self.shortcut(xh)

    def _input_weight(self) -> Tensor:
        """W = [W_k; W_q; W_v; W_vc; W_s; w_η] [5H+1, D], the native input pass's one GEMM."""
        return torch.cat([self.key.weight, self.query.weight, self.value.weight, self.vc.weight,
                          self.shortcut.weight, self.eta.weight])

    def acting_step(self, unread: bool = False):
        """``step`` / ``step_unread`` with the native input pass's concatenated weight made once (the
        fused scan on its C++ path; other configurations use ``step`` as it is)."""
        if self.scan != "fused" or scan_backend(self.backend, self.theta, native=True) != "native":
            return super().acting_step(unread)
        W_t, ext = self._input_weight().detach().t(), native.extension()

        def step(x: Tensor, state: State) -> Tuple[Tensor, State]:
            xh = self.norm(x)
            theta = self._sample_theta((x.shape[0],), x.device, step=True)
            vc, ev, k, q, s = ext.shm_inputs_forward(xh.mm(W_t), self.shortcut.bias, SUMNORM_EPS)
            h, M = shm_step(theta, vc, ev, k, q, state[0], clamp=self.clamp)
            z = h + s
            return (z if unread else self.out(z)), (M,)
        return step

    def _native_inputs(self, xh: Tensor) -> bool:
        """The C++ input pass runs wherever the fused scan runs its C++ kernel."""
        return self.scan == "fused" and scan_backend(self.backend, xh, native=True) == "native"

    def _write(self, x: Tensor, step: bool = False):
        """Reference path: C, U [...,H,H], query q [...,H], shortcut s [...,H] for x [...,D]."""
        theta, vc, ev, k, q, s = self._factors(x, step)
        C = 1 + torch.tanh(theta.unsqueeze(-1) * vc.unsqueeze(-2))  # C[i,j] = 1+tanh(θ_i v_c,j)
        U = ev.unsqueeze(-1) * k.unsqueeze(-2)                        # U[i,j] = η v_i k_j
        return C, U, q, s

    @staticmethod
    def _read(M: Tensor, q: Tensor, s: Tensor) -> Tensor:
        return (M * q.unsqueeze(-2)).sum(-1) + s  # M q + shortcut (before the readout)

    def forward_unread(self, x: Tensor, state: Optional[State] = None,
                       reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        (M0,) = self._state_or_initial(state, x)
        if self.scan == "fused":
            theta, vc, ev, k, q, s = self._factors(x)  # [B,T,H] each
            with full_precision(x):  # the scan and the state in the factors' (float32) dtype
                h, M = shm_scan(theta, vc, ev, k, q, M0, clamp=self.clamp, reset=reset, backend=self.backend)
            return h + s, (M,)
        C, U, q, s = self._write(x)  # [B,T,H,H] ×2, [B,T,H] ×2
        with full_precision(x):
            if reset is not None:  # the initial state is zero, so a reset = zero decay into x_t
                C = C * (~reset).to(C.dtype)[:, :, None, None]
            M = hadamard_scan(C, U, M0, clamp=self.clamp, chunk=self.scan_chunk)  # [B,T,H,H]
            return self._read(M, q, s), (M[:, -1].contiguous(),)

    def step_unread(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        (M,) = self._apply_reset(state, reset)
        if self.scan == "fused":
            theta, vc, ev, k, q, s = self._factors(x, step=True)  # [B,H] each
            with full_precision(x):
                h, M = shm_step(theta, vc, ev, k, q, M, clamp=self.clamp)
            return h + s, (M,)
        C, U, q, s = self._write(x, step=True)  # [B,H,H] ×2, [B,H] ×2
        with full_precision(x):
            M = C * M + U
            if self.clamp is not None:
                M = M.clamp(-self.clamp, self.clamp)
            return self._read(M, q, s), (M,)
