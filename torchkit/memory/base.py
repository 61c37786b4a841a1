"""The memory-layer contract shared by every model (see DESIGN.md).

Every layer is batch-first and exposes three calls:

    initial_state(batch_size, device) -> State          # tuple of tensors, each [B, ...], fixed shape
    forward(x[B,T,D], state=None, reset=None[B,T]) -> (y[B,T,O], State)
    step(x[B,D], state, reset=None[B]) -> (y[B,O], State)

``reset[b, t] = True`` means x[b, t] is the first input of a new episode: the state is replaced by
the initial state *before* x[b, t] is consumed. ``state=None`` means the initial state.

Layers whose last operation is a Linear (``ReadoutMemory``: y = readout(z)) also expose
``forward_unread``/``step_unread`` -> (z, state), so that a consumer feeding y straight into a Linear
of its own can fold the two into one (W₁·(W_o z + b_o) = (W₁W_o) z + W₁b_o): fewer FLOPs whenever z
is narrower than y (SHM: z has mem_size 24 columns, y has width 64-512).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn

State = Tuple[Tensor, ...]
StepFn = Callable[[Tensor, State], Tuple[Tensor, State]]  # (x [B,D], state) -> (y [B,O], state)


def _as_one_step(sequence_fn, x: Tensor, state: State, reset: Optional[Tensor]) -> Tuple[Tensor, State]:
    """A step x [B,D] (reset [B]) through a sequence call on a length-1 sequence."""
    y, state = sequence_fn(x.unsqueeze(1), state, None if reset is None else reset.unsqueeze(1))
    return y.squeeze(1), state


class Memory(nn.Module):
    """Base class of all memory layers. Subclasses set ``input_size``/``output_size``."""

    input_size: int
    output_size: int

    #: The final Linear (y = readout(z)) of layers that end in one; None for the others.
    readout: Optional[nn.Linear] = None

    def initial_state(self, batch_size: int, device=None) -> State:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """The layer's own init, as at construction: each submodule's PyTorch default, then the
        layer's own rules (``_init_own``). The agent's ``agent.init=reference`` overwrites parts of
        it with the reference rule (``reference_init_``); each layer says which."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        self._init_own()

    def _init_own(self) -> None:
        """Layer-specific init on top of the submodules' defaults (none here)."""

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        raise NotImplementedError

    def step(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        """One time step. Default: forward on a length-1 sequence; override for a faster path."""
        return _as_one_step(self.forward, x, state, reset)

    def forward_unread(self, x: Tensor, state: Optional[State] = None,
                       reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        """(z, state) with forward's y = readout(z); y itself when the layer has no readout."""
        return self.forward(x, state, reset)

    def acting_step(self, unread: bool = False) -> StepFn:
        """A step function (x [B,D], state) -> (y [B,O], state) for acting while the parameters stay
        fixed (one rollout): the function of ``step`` (``unread``: of ``step_unread``), with whatever
        the layer can prepare once (e.g. concatenated weights) prepared here. Call it again
        after the parameters change. Default: ``step`` / ``step_unread`` themselves."""
        step = self.step_unread if unread else self.step
        return lambda x, state: step(x, state)

    def step_unread(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        """``step`` without the readout, as ``forward_unread``."""
        return self.step(x, state, reset)

    # ------------------------------------------------------------------ helpers for subclasses
    def _state_or_initial(self, state: Optional[State], x: Tensor) -> State:
        if state is None:
            return self.initial_state(x.shape[0], x.device)
        return state

    def _apply_reset(self, state: State, reset_b: Optional[Tensor]) -> State:
        """Replace the rows of ``state`` flagged by ``reset_b`` [B] with the initial state."""
        if reset_b is None:
            return state
        init = self.initial_state(reset_b.shape[0], reset_b.device)
        out = []
        for s, s0 in zip(state, init):
            keep = (~reset_b).view(-1, *([1] * (s.dim() - 1)))
            out.append(torch.where(keep, s, s0.to(s.dtype)))
        return tuple(out)


class ReadoutMemory(Memory):
    """A layer ending in the Linear ``self.out`` (y = out(z)): subclasses implement ``forward_unread``
    (and ``step_unread`` for a fast acting path); ``forward``/``step`` apply the readout."""

    out: nn.Linear

    @property
    def readout(self) -> nn.Linear:
        return self.out

    def forward_unread(self, x: Tensor, state: Optional[State] = None,
                       reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        raise NotImplementedError

    def step_unread(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        """Default: ``forward_unread`` on a length-1 sequence."""
        return _as_one_step(self.forward_unread, x, state, reset)

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        z, state = self.forward_unread(x, state, reset)
        return self.out(z), state

    def step(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        z, state = self.step_unread(x, state, reset)
        return self.out(z), state


def has_inner_resets(reset: Optional[Tensor]) -> bool:
    """True when some sequence restarts after its first step (t > 0)."""
    return reset is not None and reset.shape[1] > 1 and bool(reset[:, 1:].any())


def forward_by_steps(layer: Memory, x: Tensor, state: Optional[State],
                     reset: Optional[Tensor]) -> Tuple[Tensor, State]:
    """Generic (slow) forward as a loop of ``step``: the reference every fast path is tested against."""
    state = layer._state_or_initial(state, x)
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state, None if reset is None else reset[:, t])
        ys.append(y)
    return torch.stack(ys, 1), state


def reference_init_targets(module: nn.Module):
    """(names the reference rule zeroes, names it makes orthogonal): every parameter named "bias";
    every weight of >= 2 dims except LayerNorm's ("norm"/"ln_" names). Others (SHM's Θ, S6's
    A_log and D, FFM's a and b, LayerNorm weights) keep the layer's own init."""
    zeroed, orthogonal = [], []
    for name, p in module.named_parameters():
        if "bias" in name:
            zeroed.append(name)
        elif "weight" in name and "norm" not in name and "ln_" not in name and p.dim() >= 2:
            orthogonal.append(name)
    return zeroed, orthogonal


@torch.no_grad()
def reference_init_(module: nn.Module) -> None:
    """The reference's blanket memory init (``agent.init=reference``): weights orthogonal, biases
    zero, chosen by parameter name (``reference_init_targets``); it overwrites the layer's own init
    of those parameters (e.g. S6's Δ bias, GPT-2's N(0, 0.02) weights)."""
    params = dict(module.named_parameters())
    zeroed, orthogonal = reference_init_targets(module)
    for name, p in params.items():  # in registration order, as the reference (same RNG draws)
        if name in zeroed:
            nn.init.zeros_(p)
        elif name in orthogonal:
            nn.init.orthogonal_(p)

