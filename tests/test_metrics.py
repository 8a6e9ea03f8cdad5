"""The validation metrics against scikit-learn (or, for ECE, a direct computation) on one fixed example."""

import csv
import io

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from pipeline.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    per_class_metrics,
    pr_curves,
    roc_curves,
    top_k,
    top_losses,
)
from pipeline.evaluation.report import COLUMNS, report_rows, to_csv, to_markdown

C = 4


@pytest.fixture
def predictions():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, C, (200,), generator=gen)
    logits = torch.randn(200, C, generator=gen) + 1.5 * torch.nn.functional.one_hot(targets, C)
    return logits, targets


def as_numpy(logits, targets):
    return targets.numpy(), logits.argmax(1).numpy(), logits.softmax(1).numpy()


def test_metrics_agree_with_scikit_learn(predictions):
    logits, targets = predictions
    y, pred, prob = as_numpy(logits, targets)
    got = classification_metrics(logits, targets, C, k=2, calibration_bins=10)
    onehot = label_binarize(y, classes=range(C))
    expected = {
        "acc": skm.accuracy_score(y, pred),
        "bal_acc": skm.balanced_accuracy_score(y, pred),
        "top2_acc": skm.top_k_accuracy_score(y, prob, k=2),
        "auc_micro": skm.roc_auc_score(onehot, prob, average="micro"),
        "ap_macro": skm.average_precision_score(onehot, prob, average="macro"),
        "ap_micro": skm.average_precision_score(onehot, prob, average="micro"),
        "loss": skm.log_loss(y, prob, labels=range(C)),
    }
    for average in ("macro", "weighted"):
        expected[f"precision_{average}"] = skm.precision_score(y, pred, average=average)
        expected[f"recall_{average}"] = skm.recall_score(y, pred, average=average)
        expected[f"f1_{average}"] = skm.f1_score(y, pred, average=average)
        expected[f"auc_{average}"] = skm.roc_auc_score(y, prob, multi_class="ovr", average=average)
    assert set(got) == {*expected, "ece"}
    assert {k: got[k] for k in expected} == pytest.approx(expected, abs=1e-5)
    assert 0.3 < got["acc"] < got["top2_acc"] < 1.0  # the example is neither trivial nor hopeless


def test_top_k_is_capped_at_the_number_of_classes(predictions):
    logits, targets = predictions
    assert top_k(5, C) == C and top_k(2, C) == 2
    got = classification_metrics(logits, targets, C, k=10, calibration_bins=10)
    assert got[f"top{C}_acc"] == 1.0 and "top10_acc" not in got


def test_expected_calibration_error_matches_a_direct_computation(predictions):
    logits, targets = predictions
    y, pred, prob = as_numpy(logits, targets)
    bins = 10
    confidence, correct = prob.max(1), (pred == y)
    which = np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True)
    ece = sum(
        abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
        for b in range(bins)
        if (which == b).any()
    )
    got = classification_metrics(logits, targets, C, k=1, calibration_bins=bins)["ece"]
    assert got == pytest.approx(ece, abs=1e-5) and got > 0.01


def test_per_class_metrics_agree_with_scikit_learn(predictions):
    logits, targets = predictions
    y, pred, prob = as_numpy(logits, targets)
    got = per_class_metrics(logits, targets, C)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred, average=None)
    assert got["precision"] == pytest.approx(precision.tolist(), abs=1e-6)
    assert got["recall"] == pytest.approx(recall.tolist(), abs=1e-6)
    assert got["f1"] == pytest.approx(f1.tolist(), abs=1e-6)
    assert got["support"] == support.tolist()
    assert got["auc"] == pytest.approx([skm.roc_auc_score(y == c, prob[:, c]) for c in range(C)], abs=1e-5)
    assert got["ap"] == pytest.approx(
        [skm.average_precision_score(y == c, prob[:, c]) for c in range(C)], abs=1e-5
    )


def test_confusion_matrix_counts_and_row_shares(predictions):
    logits, targets = predictions
    y, pred, _ = as_numpy(logits, targets)
    assert np.array_equal(confusion_matrix(logits, targets, C).numpy(), skm.confusion_matrix(y, pred))
    shares = confusion_matrix(logits, targets, C, normalize="true").numpy()
    assert shares == pytest.approx(skm.confusion_matrix(y, pred, normalize="true"), abs=1e-6)


def test_curves_agree_with_scikit_learn(predictions):
    logits, targets = predictions
    y, _, prob = as_numpy(logits, targets)
    roc, pr = roc_curves(logits, targets, C), pr_curves(logits, targets, C)
    for c in range(C):
        fpr, tpr, _ = skm.roc_curve(y == c, prob[:, c], drop_intermediate=False)
        assert roc.per_class[c][0] == pytest.approx(fpr, abs=1e-6) and roc.per_class[c][1] == pytest.approx(
            tpr
        )
        precision, recall, _ = skm.precision_recall_curve(y == c, prob[:, c], drop_intermediate=False)
        assert pr.per_class[c][0] == pytest.approx(recall, abs=1e-6)
        assert pr.per_class[c][1] == pytest.approx(precision, abs=1e-6)
    fpr, tpr, _ = skm.roc_curve(
        label_binarize(y, classes=range(C)).ravel(), prob.ravel(), drop_intermediate=False
    )
    assert roc.micro[0] == pytest.approx(fpr, abs=1e-6) and roc.micro[1] == pytest.approx(tpr, abs=1e-6)
    macro_auc = skm.roc_auc_score(y, prob, multi_class="ovr")
    assert skm.auc(*roc.macro) == pytest.approx(macro_auc, abs=0.01)  # interpolated onto common points


def test_top_losses_are_the_highest_cross_entropies(predictions):
    logits, targets = predictions
    y, _, prob = as_numpy(logits, targets)
    losses = -np.log(prob[np.arange(len(y)), y])
    chosen = top_losses(logits, targets, 5).tolist()
    assert chosen == np.argsort(-losses)[:5].tolist()
    assert len(top_losses(logits[:3], targets[:3], 5)) == 3


def test_report_has_a_row_per_class_then_the_averages(predictions):
    logits, targets = predictions
    names = ["a", "b", "c", "d"]
    metrics = classification_metrics(logits, targets, C, k=2, calibration_bins=10)
    rows = report_rows(names, per_class_metrics(logits, targets, C), metrics)
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert [r["class"] for r in parsed] == [*names, "macro avg", "weighted avg"]
    assert list(parsed[0]) == ["class", *COLUMNS]
    assert float(parsed[-2]["f1"]) == pytest.approx(metrics["f1_macro"])
    assert float(parsed[-1]["auc"]) == pytest.approx(metrics["auc_weighted"])
    assert sum(int(r["support"]) for r in parsed[:C]) == int(parsed[-1]["support"]) == len(targets)
    markdown = to_markdown(rows, "Per-class report (val)").splitlines()
    assert markdown[0] == "# Per-class report (val)" and len(markdown) == 4 + len(rows)
    assert markdown[4].startswith(f"| a | {rows[0][1]:.4f} |")


def test_a_class_the_split_lacks_is_left_out_of_the_macro_auc_not_scored_zero():
    """Three classes, the third with no image in the split (its only image went to train)."""
    targets = torch.tensor([0, 0, 1, 1, 0, 1])
    logits = torch.tensor([[3.0, 0, 0], [2, 1, 0], [0, 3, 0], [0.5, 1, 0], [1, 0.8, 0], [0.9, 1, 0]])
    found = classification_metrics(logits, targets, num_classes=3, k=1, calibration_bins=5)
    two = classification_metrics(logits[:, :2], targets, num_classes=2, k=1, calibration_bins=5)
    assert found["auc_macro"] == pytest.approx(two["auc_macro"]) and found["auc_macro"] > 0.5
    assert found["ap_macro"] == pytest.approx(two["ap_macro"])
