"""Suspected label issues: images whose given class their own embedding argues against.

A cheap classifier (logistic regression on standardized image embeddings, pipeline.data.embeddings)
predicts every image's class probabilities out of sample (k-fold, so no image scores itself), and cleanlab's
confident learning estimates how many labels are wrong and flags that many of the least self-confident
images (`low_self_confidence`), ranked by label quality. Chosen on the hand-sign photos (2,072: 5% of the
labels moved and 10 off-domain images added, for 4 noise seeds and 2 fold seeds, 224 px embeddings,
outliers left out, 2026-11-24): this classifier (C=0.01) reached recall 0.806-0.893 and precision
0.824-0.892 in about 5 s; PCA to 256 dimensions with C=10 was more precise, less complete (0.728-0.816 and
0.913-0.933), raw embeddings at C=1 weaker in both (0.786 and 0.810 on one seed). Of cleanlab's filters only
`low_self_confidence` kept both near 0.8 (`low_normalized_margin` 0.72-0.85 and 0.76-0.86,
`confident_learning` 0.65-0.74 and 0.68-0.73, `predicted_neq_given` 0.97-0.99 and 0.39-0.44).
cleanlab is AGPL-3.0: this is the only module that imports it.
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
from threadpoolctl import threadpool_limits

FOLDS = 5
REGULARIZATION = 0.01  # logistic regression's C, on standardized features
CLASSIFIER = f"standardized-logistic-C{REGULARIZATION}-{FOLDS}fold"  # part of the cache key
# The fits' BLAS threads: OpenBLAS's threads contend with scikit-learn's OpenMP loss threads; on 2 cores the
# digits' 1,797 x 1,280 embeddings took 4.8-5.0 s with two BLAS threads and 0.8-0.9 s with one (20,000
# synthetic rows: 4.3 and 2.9 s), the same probabilities to 1e-4 (2026-11-24). Worker processes (loky,
# n_jobs=2) took 2.1-4.3 s, their start included.
BLAS_THREADS = 1


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
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARIZATION, max_iter=3000))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
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
