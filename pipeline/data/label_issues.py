"""Suspected label issues: images whose given class their own embedding argues against.

A cheap classifier (PCA to 256 dimensions, then logistic regression, on the image embeddings of
pipeline.data.embeddings) predicts every image's class probabilities out of sample (k-fold, so no image
scores itself), and cleanlab's confident learning estimates how many labels are wrong and flags that many of
the least self-confident images (`low_self_confidence`), ranked by label quality. Chosen on the hand-sign
photos (2,072 with 10 planted off-domain images, 5% of the labels moved, 224 px embeddings, outliers left
out, two fold seeds): this classifier 0.816-0.845 recall and 0.875-0.888 precision in 5-6 s; without PCA
the same in 10-11 s; at C=1 0.786 and 0.810; standardized features more recall, less precision (C=0.01:
0.864-0.893 and 0.793-0.824). Of cleanlab's filters only `low_self_confidence` kept precision near 0.8
(`prune_by_noise_rate`, the default: 0.55-0.63, as real photos hold ambiguous images besides the moved).
cleanlab is AGPL-3.0: this is the only module that imports it.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

FOLDS = 5
COMPONENTS = 256
REGULARIZATION = 10.0  # logistic regression's C
CLASSIFIER = f"pca{COMPONENTS}-logistic-C{REGULARIZATION}-{FOLDS}fold"  # part of the cache key


@dataclass(frozen=True)
class LabelIssue:
    index: int  # the row of the embeddings it came from
    given: int
    suggested: int
    score: float  # cleanlab's label quality: low = the given label is unlikely


def out_of_sample_probabilities(vectors: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Each row's class probabilities from a model fit on the other folds (fewer folds for a small class);
    `labels` are 0..K-1, each with two rows or more."""
    folds = max(2, min(FOLDS, int(np.bincount(labels).min())))
    components = min(COMPONENTS, len(labels) - -(-len(labels) // folds), vectors.shape[1])  # <= fold size
    classifier = make_pipeline(
        PCA(components, random_state=seed), LogisticRegression(C=REGULARIZATION, max_iter=3000)
    )
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, vectors, labels, cv=splitter, method="predict_proba")


def cached_probabilities(
    vectors: np.ndarray, labels: np.ndarray, seed: int, folder: Path | None
) -> np.ndarray:
    """out_of_sample_probabilities, kept in `folder` under a digest of its inputs: a re-run skips the fits."""
    if folder is None:
        return out_of_sample_probabilities(vectors, labels, seed)
    digest = hashlib.sha256(f"{CLASSIFIER} {seed}".encode())
    digest.update(np.ascontiguousarray(vectors).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    path = folder / f"probabilities-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    probabilities = out_of_sample_probabilities(vectors, labels, seed)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, probabilities)
    partial.replace(path)
    return probabilities


def find_label_issues(
    vectors: np.ndarray, labels: np.ndarray, seed: int = 0, cache_folder: Path | None = None
) -> list[LabelIssue]:
    """Suspected mislabels, most suspect first. Classes need two images each; none are searched otherwise."""
    from cleanlab.filter import find_label_issues as confident_learning
    from cleanlab.rank import get_label_quality_scores

    classes, dense = np.unique(np.asarray(labels), return_inverse=True)  # cleanlab wants labels 0..K-1
    if len(classes) < 2 or np.bincount(dense).min() < 2:
        return []
    probabilities = cached_probabilities(vectors, dense, seed, cache_folder)
    flagged = confident_learning(
        dense, probabilities, filter_by="low_self_confidence", return_indices_ranked_by="self_confidence"
    )
    quality = get_label_quality_scores(dense, probabilities)
    suggested = classes[probabilities.argmax(1)]
    return [LabelIssue(int(i), int(classes[dense[i]]), int(suggested[i]), float(quality[i])) for i in flagged]
