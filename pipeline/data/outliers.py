"""Outliers: images far from every other image in embedding space (a placeholder, a screenshot, another
dataset's picture), whatever class folder they sit in.

An image's score is its mean distance to its `k` nearest neighbours among the embeddings
(pipeline.data.embeddings, unit vectors); scores far above the rest, beyond Tukey's far-out fence
(Q3 + `fence` x IQR of all scores), are flagged. Ten neighbours, not fewer, so that a handful of
placeholders alike (four text renders among 2,062 hand-sign photos) cannot vouch for each other: with k=10
and fence 3 all 10 planted off-domain images were flagged there (5 neighbours: 6 of 10), beside 10-14 photos.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors


@dataclass(frozen=True)
class Outlier:
    index: int  # the row of the embeddings it came from
    score: float  # mean distance to its nearest neighbours


def neighbour_distances(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each row's mean Euclidean distance to its k nearest other rows (itself left out)."""
    k = min(k, len(vectors) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(vectors).kneighbors(vectors)
    return distances[:, 1:].mean(1)


def find_outliers(vectors: np.ndarray, k: int = 10, fence: float = 3.0) -> list[Outlier]:
    """The rows whose neighbour distance lies beyond Q3 + fence x IQR, farthest first."""
    if len(vectors) < 3:
        return []
    scores = neighbour_distances(vectors, k)
    q1, q3 = np.percentile(scores, [25, 75])
    flagged = np.flatnonzero(scores > q3 + fence * (q3 - q1))
    return [Outlier(int(i), float(scores[i])) for i in flagged[np.argsort(-scores[flagged])]]
