"""Suspected label issues: images whose given class their own embedding argues against.

A cheap classifier (logistic regression on standardized image embeddings, pipeline.data.embeddings)
predicts every image's class probabilities out of sample (k-fold, so no image scores itself), and cleanlab's
confident learning estimates how many labels are wrong and flags that many of the least self-confident
images (`low_self_confidence`), ranked by label quality. The regularization is the one whose out-of-sample
probabilities fit the given labels best (log-loss): folders differ in how much their embeddings separate the
classes. Each choice was made on real photos with planted label errors (docs/design.md). cleanlab is
AGPL-3.0: this is the only module that imports it.

cleanlab is imported only when label issues are searched.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.cpu_share import one_blas_thread

FOLDS = 5
STRENGTHS = (0.003, 0.01, 0.03, 0.1)  # logistic regression's C on standardized features, chosen by log-loss
CLASSIFIER = f"standardized-logistic-C{'/'.join(map(str, STRENGTHS))}-by-log-loss-{FOLDS}fold"  # cache key


@dataclass(frozen=True)
class LabelIssue:
    index: int  # the row of the embeddings it came from
    given: int
    suggested: int
    score: float  # cleanlab's label quality: low = the given label is unlikely


def out_of_sample_probabilities(
    vectors: np.ndarray, labels: np.ndarray, seed: int, strength: float = 0.01
) -> np.ndarray:
    """Each row's class probabilities from a model fit on the other folds (fewer folds for a small class),
    logistic regression's C `strength`; `labels` are 0..K-1, each with two rows or more."""
    folds = max(2, min(FOLDS, int(np.bincount(labels).min())))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=3000))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with one_blas_thread():
        found = cross_val_predict(classifier, vectors, labels, cv=splitter, method="predict_proba")
    found = found.astype(np.float64)  # summing to 1 in float64, as log_loss checks
    return found / found.sum(1, keepdims=True)


def fitted_probabilities(vectors: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """The out-of-sample probabilities at the strength whose probabilities have the lowest log-loss."""
    from sklearn.metrics import log_loss

    by_strength = {c: out_of_sample_probabilities(vectors, labels, seed, c) for c in STRENGTHS}
    classes = np.arange(labels.max() + 1)
    return by_strength[min(STRENGTHS, key=lambda c: log_loss(labels, by_strength[c], labels=classes))]


def flag(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """cleanlab's estimate of the mislabelled rows, most suspect first."""
    from cleanlab.filter import find_label_issues as confident_learning

    return confident_learning(
        labels, probabilities, filter_by="low_self_confidence", return_indices_ranked_by="self_confidence"
    )


def cached_probabilities(
    vectors: np.ndarray, labels: np.ndarray, seed: int, folder: Path | None
) -> np.ndarray:
    """fitted_probabilities, kept in `folder` under a digest of its inputs: a re-run skips the fits."""
    if folder is None:
        return fitted_probabilities(vectors, labels, seed)
    digest = hashlib.sha256(f"{CLASSIFIER} {seed}".encode())
    digest.update(np.ascontiguousarray(vectors).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    path = folder / f"probabilities-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    probabilities = fitted_probabilities(vectors, labels, seed)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, probabilities)
    partial.replace(path)
    return probabilities


def find_label_issues(
    vectors: np.ndarray, labels: np.ndarray, seed: int = 0, cache_folder: Path | None = None
) -> list[LabelIssue]:
    """Suspected mislabels, most suspect first. Classes need two images each; none are searched otherwise."""
    from cleanlab.rank import get_label_quality_scores

    classes, dense = np.unique(np.asarray(labels), return_inverse=True)  # cleanlab wants labels 0..K-1
    if len(classes) < 2 or np.bincount(dense).min() < 2:
        return []
    probabilities = cached_probabilities(vectors, dense, seed, cache_folder)
    flagged = flag(dense, probabilities)
    quality = get_label_quality_scores(dense, probabilities)
    suggested = classes[probabilities.argmax(1)]
    return [LabelIssue(int(i), int(classes[dense[i]]), int(suggested[i]), float(quality[i])) for i in flagged]
