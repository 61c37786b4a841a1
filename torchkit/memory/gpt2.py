"""GPT-2 memory: a pre-LN causal transformer whose state is a fixed-size window KV cache.

    e_t = Drop(map(x_t) + PE(p_t))          p_t = steps since the last reset (episode start)
    h  = h + Drop(Attn(LN_1 h));  h = h + Drop(MLP(LN_2 h))      (n_layer blocks, MLP 4×, GELU-tanh)
    y  = LN_f(h)

A query at position p attends to keys of the same episode at positions p-W+1..p (W = `window`), so the
layer equals full causal attention while episodes are at most W steps long.

State = (k [B,n_layer,n_head,W,d_head], v [same], pos [B] long). pos = tokens of the current episode
seen so far; the token at position q lives in slot q mod W. Validity follows from pos: slot s holds
position q_s = pos-1 - ((pos-1-s) mod W), valid iff q_s >= 0. Invalid slots are kept at zero.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native
from ..precision import recurrence_dtype
from .base import Memory, State
from .kernels.dropout import dropout, dropout_mask


def _check_sizes(owner: str, **sizes) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{owner}: {name} must be a positive int, got {v!r}; "
                             f"set {name} to an integer >= 1")


def sinusoidal(pos: Tensor, dim: int) -> Tensor:
    """PE(p)[2i] = sin(p·10000^(-2i/dim)), PE(p)[2i+1] = cos(...). pos [...] -> [..., dim]."""
    freq = torch.exp(torch.arange(0, dim, 2, device=pos.device, dtype=torch.float64)
                     * (-math.log(10000.0) / dim))                            # [ceil(dim/2)]
    ang = pos.double()[..., None] * freq
    return torch.stack([ang.sin(), ang.cos()], -1).flatten(-2)[..., :dim]


def _attention(q: Tensor, keys: Tensor, vals: Tensor, mask: Optional[Tensor], p: float) -> Tensor:
    """softmax(q kᵀ/√d_head, masked) v with dropout p on the probabilities; mask: bool [B,1,T,S],
    True = may attend, or None = causal. Training on CPU (p > 0, float): written out, with the C++
    dropout mask (``kernels.dropout``); SDPA's CPU path with dropout would draw it with bernoulli_
    and handle the mask in extra passes. Otherwise ``scaled_dot_product_attention``."""
    if p == 0.0 or not native.applies(q) or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, dropout_p=p, is_causal=mask is None)
    B, H, T, dh = q.shape
    S = keys.shape[-2]
    if mask is None:  # causal: key j > query i is hidden; the -inf bias enters the product (baddbmm)
        bias = q.new_zeros(T, S).masked_fill_(torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1),
                                              float("-inf"))
        scores = torch.baddbmm(bias, q.reshape(B * H, T, dh), keys.reshape(B * H, S, dh).transpose(1, 2),
                               alpha=dh ** -0.5).view(B, H, T, S)
    else:
        scores = torch.matmul(q * dh ** -0.5, keys.transpose(-1, -2)).masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, -1)                                                   # [B,H,T,S]
    return torch.matmul(probs * dropout_mask(probs, p), vals)


def _stack_layers(zs) -> Tensor:
    """[B,H,W,dh] per layer -> [B,n_layer,H,W,dh] (no copy for one layer)."""
    return zs[0].unsqueeze(1) if len(zs) == 1 else torch.stack(zs, 1)


class _Block(nn.Module):
    """Pre-LN transformer block; attention over [cached keys, new keys] under a boolean mask."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.ln_1 = nn.LayerNorm(n_embd)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)
        self.drop = nn.Dropout(dropout)

    def qkv(self, h: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """h [B,T,n] -> q, k, v [B,H,T,dh]."""
        B, T, n = h.shape
        q, k, v = self.c_attn(self.ln_1(h)).split(n, dim=-1)
        return tuple(z.view(B, T, self.n_head, -1).transpose(1, 2) for z in (q, k, v))

    def finish(self, h: Tensor, q: Tensor, keys: Tensor, vals: Tensor, mask: Optional[Tensor]) -> Tensor:
        """Attention of q over keys/vals (mask None: causal), then both residual branches."""
        B, T, n = h.shape
        p = self.dropout if self.training else 0.0
        a = _attention(q, keys, vals, mask, p)                               # [B,H,T,dh]
        h = h + dropout(self.c_proj(a.transpose(1, 2).reshape(B, T, n)), p, self.training)
        return h + dropout(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(h)), approximate="tanh")), p, self.training)

    def forward(self, h: Tensor, cache: Optional[Tuple[Tensor, Tensor]],
                mask: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """h [B,T,n]; cache (k, v) [B,H,W,dh] or None; mask [B,1,T,W+T] or [B,1,T,T] (None: causal).

        Returns (h [B,T,n], k, v of the new tokens [B,H,T,dh]).
        """
        q, k, v = self.qkv(h)
        keys, vals = (k, v) if cache is None else (torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2))
        return self.finish(h, q, keys, vals, mask), k, v


class GPT2(Memory):
    """Causal transformer with a window KV cache; output_size = n_embd.

    Init: GPT-2's in the blocks (``_init_own``), nn.Linear/LayerNorm defaults for ``map`` and
    ``ln_f``. agent.init=reference overwrites every Linear: map, c_attn, c_proj, c_fc and mlp_proj
    weights orthogonal (instead of GPT-2's N(0, 0.02) and scaled residual projections), their
    biases zero (as GPT-2's; map's too, and the LayerNorm biases, zero already); LayerNorm weights keep 1."""

    def __init__(self, input_size: int, output_size: int = 512, n_layer: int = 1, n_head: int = 4,
                 window: int = 1024, dropout: float = 0.1):
        super().__init__()
        _check_sizes("GPT2", input_size=input_size, output_size=output_size, n_layer=n_layer,
                     n_head=n_head, window=window)
        if output_size % n_head:
            raise ValueError(f"GPT2: output_size (n_embd) {output_size} is not divisible by n_head "
                             f"{n_head}; pick n_head dividing it")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GPT2: dropout must be in [0, 1), got {dropout}")
        self.input_size, self.output_size = input_size, output_size
        self.n_layer, self.n_head, self.window = n_layer, n_head, window
        self.d_head = output_size // n_head
        self.map = nn.Linear(input_size, output_size)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(output_size, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(output_size)
        self._pe_tables = {}  # (device, dtype) -> positional-encoding rows; a cache, not state
        self._init_own()

    def _init_own(self) -> None:
        # GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/√(2·n_layer).
        for name, p in self.blocks.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * self.n_layer) if "proj" in name else 0.02
                nn.init.normal_(p, 0.0, std)

    def _pe(self, pos: Tensor, dtype) -> Tensor:
        """sinusoidal(pos, n_embd) in ``dtype``, read from a table of rows 0..P-1 (P a power of two
        >= max(pos)+1) that is kept per device and dtype and grows when a larger position comes."""
        need = int(pos.max()) + 1 if pos.numel() else 1
        key = (pos.device, dtype)
        table = self._pe_tables.get(key)
        if table is None or table.shape[0] < need:
            rows = 1 << max(need - 1, 127).bit_length()
            table = sinusoidal(torch.arange(rows, device=pos.device), self.output_size).to(dtype)
            self._pe_tables[key] = table
        return F.embedding(pos, table)

    def initial_state(self, batch_size: int, device=None) -> State:
        kv = torch.zeros(batch_size, self.n_layer, self.n_head, self.window, self.d_head,
                         device=device, dtype=self.map.weight.dtype)
        return kv, kv.clone(), torch.zeros(batch_size, device=device, dtype=torch.long)

    def forward(self, x: Tensor, state: Optional[State] = None,
                reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        B, T, _ = x.shape
        W, dev = self.window, x.device
        t = torch.arange(T, device=dev)
        cache = recurrence_dtype(x, self.map.weight)  # the KV state's dtype: float32 under mixed precision
        if state is None:
            k0 = v0 = None
            pos0 = torch.zeros(B, device=dev, dtype=torch.long)
        else:
            k0, v0 = state[0].to(cache), state[1].to(cache)
            pos0 = state[2].round().long() if state[2].is_floating_point() else state[2].long()

        # Positions and episode ids of the new tokens.
        if reset is None:
            last = torch.full((B, T), -1, device=dev, dtype=torch.long)
            seg = torch.zeros(B, T, device=dev, dtype=torch.long)
        else:
            last = torch.where(reset, t, -1).cummax(dim=1).values          # last reset <= t, -1 if none
            seg = reset.long().cumsum(1)                                   # 0 = episode of the cache
        pos = torch.where(last >= 0, t - last, pos0[:, None] + t)          # [B,T]

        # Attention mask [B,1,T,(W+)T]: causal, same episode, within the window.
        # simple: one episode from position 0 that fits the window -> plain causal attention.
        simple = state is None and T <= W and (reset is None or not bool(reset[:, 1:].any()))
        slot = torch.arange(W, device=dev)
        mask = None
        if not simple:
            mask = ((t[:, None] >= t[None, :]) & (t[:, None] - t[None, :] < W)
                    & (seg[:, :, None] == seg[:, None, :]))                # [B,T,T]
            if state is not None:
                q_old = pos0[:, None] - 1 - torch.remainder(pos0[:, None] - 1 - slot, W)  # [B,W]
                old = ((seg[:, :, None] == 0) & (q_old[:, None, :] >= 0)
                       & (pos[:, :, None] - q_old[:, None, :] < W))        # [B,T,W]
                mask = torch.cat([old, mask], -1)
            mask = mask[:, None]

        h = dropout(self.map(x) + self._pe(pos, x.dtype), self.drop.p, self.training)
        ks, vs = [], []
        for i, blk in enumerate(self.blocks):
            h, k, v = blk(h, None if state is None else (k0[:, i], v0[:, i]), mask)
            ks.append(k)
            vs.append(v)
        y = self.ln_f(h)

        # Write the window: slot s gets the newest token with position ≡ s (mod W), if that token is
        # one of ours and in the current episode; otherwise it keeps the cached entry while valid.
        pos_end = pos[:, -1] + 1                                           # [B]
        if simple:                                                         # token t -> slot t
            k_new, v_new = (F.pad(torch.stack(z, 1), (0, 0, 0, W - T)).to(cache) for z in (ks, vs))
            return y, (k_new, v_new, pos_end)
        back = torch.remainder(pos_end[:, None] - 1 - slot, W)             # steps back from the last token
        src = T - 1 - back                                                 # token index for slot s [B,W]
        first = last[:, -1].clamp(min=0)                                   # first token of the episode
        written = (src >= first[:, None])[:, None, :, None]                # [B,1,W,1]
        kept = (pos_end[:, None] - 1 - back >= 0)[:, None, :, None] & ~written
        idx = src.clamp(min=0)[:, None, :, None].expand(B, self.n_head, W, self.d_head)
        zero = torch.zeros((), dtype=cache, device=dev)
        k_out, v_out = [], []
        for i in range(self.n_layer):
            for new, old, acc in ((ks[i], k0, k_out), (vs[i], v0, v_out)):
                val = torch.where(written, torch.gather(new, 2, idx), zero)
                if old is not None:
                    val = torch.where(kept, old[:, i], val)
                acc.append(val)
        return y, (_stack_layers(k_out).to(cache), _stack_layers(v_out).to(cache), pos_end)

    def step(self, x: Tensor, state: State, reset: Optional[Tensor] = None) -> Tuple[Tensor, State]:
        """One token per row, in O(window) per row: its k, v go into slot pos mod W of the cache *in
        place* (the state passed in is consumed and returned updated: clone it first to keep it), and
        attention runs over the occupied slots only (the first max(pos)+1 while no row has wrapped)."""
        k_c, v_c, pos = state
        pos = pos.round().long() if pos.is_floating_point() else pos.long()
        cache = recurrence_dtype(x, self.map.weight)  # float32 under mixed precision (attention: bf16)
        if k_c.dtype != cache:
            k_c, v_c = k_c.to(cache), v_c.to(cache)
        B, W, dev = x.shape[0], self.window, x.device
        if reset is not None:
            pos = torch.where(reset, 0, pos)
            gone = reset[:, None, None, None, None]
            k_c.masked_fill_(gone, 0.0)
            v_c.masked_fill_(gone, 0.0)
        rows, slot = torch.arange(B, device=dev), torch.remainder(pos, W)
        n = min(int(pos.max()) + 1, W)                                          # slots in use
        back = torch.remainder(pos[:, None] - torch.arange(n, device=dev), W)  # steps back from this token
        mask = (pos[:, None] - back >= 0)[:, None, None, :]                     # valid slots [B,1,1,n]
        h = dropout(self.map(x) + self._pe(pos, x.dtype), self.drop.p, self.training)[:, None]  # [B,1,n_embd]
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv(h)                                               # [B,H,1,dh]
            k_c[rows, i, :, slot] = k[:, :, 0].to(cache)
            v_c[rows, i, :, slot] = v[:, :, 0].to(cache)
            h = blk.finish(h, q, k_c[:, i, :, :n], v_c[:, i, :, :n], mask)
        return self.ln_f(h)[:, 0], (k_c, v_c, pos + 1)
