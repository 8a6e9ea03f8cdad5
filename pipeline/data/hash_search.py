"""Pairs of 64-bit perceptual hashes within a few bits of each other, without comparing every pair.

Multi-index hashing: the 64 bits are cut into max_distance + 1 chunks; two hashes that differ in at most
max_distance bits agree exactly on at least one chunk (pigeonhole), so only hashes that share a chunk value
are compared. Exact, sorting-bound (n log n) for distinct images, memory linear in n plus the candidates.
Hand-written (30 lines, no dependency) because faiss's exact binary index compares all n^2 pairs and its
HNSW index may miss pairs.
"""

import numpy as np


def hash_bits(hex_hashes: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def _same_chunk_groups(bits: np.ndarray, low: int, high: int):
    """Positions of the hashes sharing bits [low, high), one array per value held by two or more."""
    keys = (bits >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)
    order = np.argsort(keys, kind="stable")
    starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
    ends = np.r_[starts[1:], len(keys)]
    for start, end in zip(starts, ends, strict=True):
        if end - start > 1:
            yield np.sort(order[start:end])


def near_duplicate_pairs(hex_hashes: list[str], max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) for every i < j whose hashes differ in at most max_distance bits, sorted."""
    bits = hash_bits(hex_hashes)
    bounds = np.linspace(0, 64, min(max_distance, 63) + 2).astype(int)
    found: dict[tuple[int, int], int] = {}
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        for members in _same_chunk_groups(bits, int(low), int(high)):
            distance = np.bitwise_count(bits[members][:, None] ^ bits[members][None, :])
            for a, b in zip(*np.nonzero(np.triu(distance <= max_distance, k=1)), strict=True):
                found[(int(members[a]), int(members[b]))] = int(distance[a, b])
    return [(i, j, d) for (i, j), d in sorted(found.items())]
