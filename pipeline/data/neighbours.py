"""What each image's nearest neighbours in embedding space say: outliers and near duplicates.

Outliers are images far from every other image (a placeholder, a screenshot, another dataset's picture),
whatever class folder they sit in. An image's score is its mean distance to its `k` nearest neighbours among
the embeddings (pipeline.data.embeddings, unit vectors); scores far above the rest, beyond Tukey's far-out
fence (Q3 + `fence` x IQR of all scores), are flagged. Ten neighbours, not fewer, so that a handful of
placeholders alike (four text renders among 2,062 hand-sign photos) cannot vouch for each other: with k=10
and fence 3 all 10 planted off-domain images were flagged there (5 neighbours: 6 of 10), beside 10-14 photos.

Near duplicates are pairs whose cosine similarity reaches a threshold (default 0.98): resized, recompressed
and recoloured copies, beside the perceptual hash. A crop is not a copy at this threshold; a lower one finds
crops on varied photos, and no threshold tells a crop from another shot of a near-identical scene
(docs/design.md has the similarities measured).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Outlier:
    index: int  # the row of the embeddings it came from
    score: float  # mean distance to its nearest neighbours


@dataclass(frozen=True)
class Neighbours:
    distances: np.ndarray  # (n, k): Euclidean distances to each row's k nearest other rows, nearest first
    indices: np.ndarray  # (n, k): which rows those are


def nearest(vectors: np.ndarray, k: int) -> Neighbours:
    """Each row's k nearest other rows (itself left out), from one exact search."""
    from sklearn.neighbors import NearestNeighbors  # slow to import: only when the audit runs

    k = min(k, len(vectors) - 1)
    distances, indices = NearestNeighbors(n_neighbors=k + 1).fit(vectors).kneighbors(vectors)
    return Neighbours(distances[:, 1:], indices[:, 1:])


def find_outliers(neighbours: Neighbours, fence: float = 3.0) -> list[Outlier]:
    """The rows whose mean neighbour distance lies beyond Q3 + fence x IQR, farthest first."""
    if len(neighbours.distances) < 3:
        return []
    scores = neighbours.distances.mean(1)
    q1, q3 = np.percentile(scores, [25, 75])
    flagged = np.flatnonzero(scores > q3 + fence * (q3 - q1))
    return [Outlier(int(i), float(scores[i])) for i in flagged[np.argsort(-scores[flagged])]]


def similar_pairs(neighbours: Neighbours, min_similarity: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine similarity) for i < j among each row's neighbours, at `min_similarity` or above."""
    similarity = 1.0 - neighbours.distances**2 / 2.0  # unit vectors: |a - b|^2 = 2 - 2 a.b
    pairs = {}
    for i, j in zip(*np.nonzero(similarity >= min_similarity), strict=True):
        a, b = sorted((int(i), int(neighbours.indices[i, j])))
        pairs[(a, b)] = round(float(similarity[i, j]), 4)
    return [(a, b, s) for (a, b), s in sorted(pairs.items())]
