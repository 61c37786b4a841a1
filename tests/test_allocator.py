"""src.allocator: with glibc, freed activation-sized blocks stay in the process (no fresh page faults)."""
import resource

import pytest
import torch

from src.allocator import keep_freed_memory


def _faults_per_round(rounds: int = 3) -> float:
    def one_round():  # an update's pattern: many large blocks allocated, written, freed
        blocks = [torch.empty(2**20).fill_(1.0) for _ in range(16)]  # 16 × 4 MB = 16,384 pages
        del blocks
    one_round()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        one_round()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds


def test_freed_blocks_are_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator settings do not apply")
    # glibc's defaults fault in ~11k of the 16k pages every round here; kept, a small fraction
    assert _faults_per_round() < 16384 / 4


def test_is_idempotent():
    assert keep_freed_memory() == keep_freed_memory()
