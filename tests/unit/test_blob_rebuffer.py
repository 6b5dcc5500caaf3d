"""The blob adapter's re-cutting of arbitrary chunks into fixed-size blocks."""

from __future__ import annotations

import random

import pytest

from shared.adapters.blobs import _rebuffer


@pytest.mark.parametrize("sizes", [[], [0, 0], [10], [5, 0, 7, 3, 20, 1], [3, 3, 3, 1], [25], [9, 1, 10, 0, 11]])
def test_blocks_are_full_but_the_last_and_the_bytes_are_unchanged(sizes: list[int]) -> None:
    rng = random.Random(len(sizes))
    chunks = [rng.randbytes(n) for n in sizes]
    blocks = list(_rebuffer(iter(chunks), 10))
    assert b"".join(blocks) == b"".join(chunks)
    assert all(len(b) == 10 for b in blocks[:-1])
    assert all(type(b) is bytes and b for b in blocks)  # real bytes (not views of the caller's buffers), none empty
