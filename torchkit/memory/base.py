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

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

State = Tuple[Tensor, ...]


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


def orthogonal_init_(module: nn.Module) -> None:
    """The reference's memory init: weights orthogonal, biases zero.

    Names containing "norm"/"ln_" (LayerNorm) are skipped, as are parameters whose names are
    neither weights nor biases (e.g. SHM's Θ, S6's A_log): they keep the layer's own init.
    """
    for name, p in module.named_parameters():
        if "bias" in name:
            nn.init.zeros_(p)
        elif "weight" in name and "norm" not in name and "ln_" not in name and p.dim() >= 2:
            nn.init.orthogonal_(p)
