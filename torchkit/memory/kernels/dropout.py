"""Dropout for CPU training: masks from memrl's C++ kernel (``csrc/dropout_cpu.cpp``), else
``F.dropout``. torch's CPU ``bernoulli_`` draws one number at a time; at GPT-2's sizes here (attention
probabilities [B,H,T,T] at T ≈ 100) drawing the masks cost more than the attention itself. The
kernel hashes (seed, element index) with an integer hash (lowbias32, twice); the seed comes from torch's default generator,
so ``torch.manual_seed`` still fixes every mask. Same distribution as ``F.dropout``: each element is
zeroed with probability p (to within 2⁻³²) and the rest are scaled by 1/(1-p)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import native


def dropout_mask(x: Tensor, p: float) -> Tensor:
    """A mask like x (contiguous): 0 with probability p, else 1/(1-p). Needs the C++ kernels."""
    seed = int(torch.randint(-2 ** 63, 2 ** 63 - 1, (), dtype=torch.int64))  # torch's CPU generator
    return native.extension().dropout_mask(x, float(p), seed)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(x, p, training)``, through the C++ mask kernel for float CPU tensors."""
    if not training or p == 0.0:
        return x
    if native.applies(x) and not torch.compiler.is_compiling():
        return x * dropout_mask(x, p)
    return F.dropout(x, p, True)
