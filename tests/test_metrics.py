import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from pipeline.evaluation.metrics import classification_metrics, confusion_matrix


@pytest.fixture
def predictions():
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 4, (200,), generator=gen)
    logits = torch.randn(200, 4, generator=gen) + 1.5 * torch.nn.functional.one_hot(targets, 4)
    return logits, targets


def test_metrics_agree_with_scikit_learn(predictions):
    logits, targets = predictions
    y, pred, prob = targets.numpy(), logits.argmax(1).numpy(), logits.softmax(1).numpy()
    got = classification_metrics(logits, targets, 4)
    assert got["acc"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert got["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"), abs=1e-6)
    assert got["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro"), abs=1e-6)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-6)
    assert got["auc_macro"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr"), abs=1e-4)


def test_confusion_matrix_rows_are_true_classes(predictions):
    logits, targets = predictions
    got = confusion_matrix(logits, targets, 4).numpy()
    assert np.array_equal(got, skm.confusion_matrix(targets.numpy(), logits.argmax(1).numpy()))
