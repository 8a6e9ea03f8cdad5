"""Near-duplicate search over perceptual hashes (pipeline.data.hash_search): the same pairs as comparing
every pair, for each distance the config allows."""

import numpy as np
import pytest

from pipeline.data.hash_search import near_duplicate_pairs


def brute_force(hashes: list[str], max_distance: int) -> list[tuple[int, int, int]]:
    bits = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    distance = np.bitwise_count(bits[:, None] ^ bits[None, :])
    close = np.argwhere(np.triu(distance <= max_distance, k=1))
    return [(int(i), int(j), int(distance[i, j])) for i, j in close]


def planted_hashes(n: int, seed: int) -> list[str]:
    """n random 64-bit hashes, a quarter of them copies of another with 0-4 bits flipped."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    for i in rng.choice(n, n // 4, replace=False):
        flipped = bits[rng.integers(0, n)]
        for bit in rng.choice(64, rng.integers(0, 5), replace=False):
            flipped ^= np.uint64(1) << np.uint64(bit)
        bits[i] = flipped
    return [f"{int(b):016x}" for b in bits]


@pytest.mark.parametrize("max_distance", [0, 1, 2, 4, 8])
def test_the_same_pairs_as_comparing_every_pair(max_distance):
    hashes = planted_hashes(1500, seed=max_distance)
    found = near_duplicate_pairs(hashes, max_distance)
    assert found == brute_force(hashes, max_distance)
    assert len(found) > 50  # the planted copies are there to be found
