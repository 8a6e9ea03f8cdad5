"""Training options: fine-tuning strategies, optimizers, schedules, the classics, resume, LR finder, DDP."""

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from conftest import free_port, make_image_folder, make_multilabel_folder
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from pipeline.errors import PipelineError
from pipeline.models.checkpoint_io import keep_weights_only
from pipeline.models.factory import classifier_head, create_model
from pipeline.models.finetune import FinetuneSchedule, freeze_backbone, param_groups
from pipeline.models.module import Classifier, load_classifier
from pipeline.models.optim import build_optimizer, build_scheduler
from pipeline.models.trainer import RanksInSync, build_trainer, fit, training_callbacks
from pipeline.recipe import objective_direction
from pipeline.runner import run
from pipeline.schema import TrainConfig, plain

TINY_CNN = {"name": "simple_cnn", "kwargs": {"channels": [4, 8], "convs_per_block": 1}, "drop_rate": 0.0}
STAGE_TRAIN = [
    "stages=[train]",
    "model=simple_cnn",
    "model.kwargs.channels=[8,16]",
    "data.image_size=16",
    "data.batch_size=8",
    "data.audit=false",
]


TRAIN_DEFAULTS = plain(OmegaConf.structured(TrainConfig))


def optimizer_spec(name: str, **extra) -> dict:
    return {"name": name, "lr": 0.01, "weight_decay": 0.05, "momentum": 0.9, "nesterov": False, **extra}


def test_param_groups_split_head_from_backbone_and_spare_norms_and_biases():
    model = create_model("simple_cnn", 3, kwargs={"channels": [4, 8]})
    groups = {g["name"]: g for g in param_groups(model, lr=1e-2, weight_decay=0.05, backbone_lr_factor=0.1)}
    assert set(groups) == {"head", "head_no_decay", "backbone", "backbone_no_decay"}
    head = classifier_head(model)
    assert groups["head"]["params"] == [head.weight] and groups["head_no_decay"]["params"] == [head.bias]
    assert groups["head"]["lr"] == 1e-2 and groups["backbone"]["lr"] == pytest.approx(1e-3)
    assert all(p.ndim == 1 for p in groups["backbone_no_decay"]["params"])
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.05
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "spec, cls, nesterov",
    [
        (optimizer_spec("sgd", nesterov=True), torch.optim.SGD, True),
        (optimizer_spec("sgd"), torch.optim.SGD, False),
        (optimizer_spec("adam"), torch.optim.Adam, None),
        (optimizer_spec("adamw"), torch.optim.AdamW, None),
        (optimizer_spec("rmsprop"), torch.optim.RMSprop, None),
    ],
)
def test_optimizers_keep_group_settings(spec, cls, nesterov):
    model = create_model("simple_cnn", 3, kwargs={"channels": [4]})
    optimizer = build_optimizer(param_groups(model, 0.01, 0.05, 0.5), spec)
    assert type(optimizer) is cls
    assert sorted(g["lr"] for g in optimizer.param_groups) == [0.005, 0.005, 0.01, 0.01]
    if nesterov is not None:
        assert optimizer.param_groups[0]["nesterov"] is nesterov


@pytest.mark.parametrize("name, cls", [("lamb", "Lamb"), ("lion", "Lion"), ("adamp", "AdamP")])
def test_timm_optimizers_beyond_the_classics_build_with_the_groups(name, cls):
    model = create_model("simple_cnn", 3, kwargs={"channels": [4]})
    optimizer = build_optimizer(param_groups(model, 0.01, 0.05, 0.5), optimizer_spec(name))
    assert type(optimizer).__name__ == cls
    assert sorted(g["lr"] for g in optimizer.param_groups) == [0.005, 0.005, 0.01, 0.01]


def scheduled_lrs(spec: dict, epochs: int, steps_per_epoch: int = 4) -> list[float]:
    """Head lr at the start of each epoch, stepping the scheduler as Lightning would."""
    param = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": 1.0}])
    config = build_scheduler(optimizer, spec, epochs, epochs * steps_per_epoch)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            optimizer.step()
            if config["interval"] == "step":
                config["scheduler"].step()
        if config["interval"] == "epoch":
            args = (1.0,) if "monitor" in config else ()  # plateau: a val/loss that never improves
            config["scheduler"].step(*args)
    return lrs


def test_schedulers_follow_their_definitions():
    base = {"warmup_epochs": 0, "min_lr": 0.0, "step_size": 2, "milestones": [1, 3], "gamma": 0.5}
    assert scheduled_lrs({**base, "name": "step"}, 5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert scheduled_lrs({**base, "name": "multistep"}, 5) == [1.0, 0.5, 0.5, 0.25, 0.25]
    cosine = scheduled_lrs({**base, "name": "cosine", "warmup_epochs": 1}, 5)
    decay = [0.5 * (1 + math.cos(math.pi * epoch / 4)) for epoch in range(4)]  # after one warm-up epoch
    assert cosine == pytest.approx([0.5, *decay])
    floored = scheduled_lrs({**base, "name": "cosine", "min_lr": 0.1}, 3)
    assert floored == pytest.approx([1.0, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25])
    onecycle = scheduled_lrs({**base, "name": "onecycle", "pct_start": 0.3}, 5)
    assert onecycle[0] < 0.1 and max(onecycle) > 0.8 and onecycle[-1] < onecycle[2]
    plateau = scheduled_lrs({**base, "name": "plateau", "patience": 1}, 5)
    assert plateau == [1.0, 1.0, 1.0, 0.5, 0.5]  # patience 1: the second epoch without improvement halves it


@pytest.mark.parametrize("name, size", [("alexnet", 64), ("googlenet", 32), ("vgg11_bn", 32)])
def test_classic_architectures_build_with_a_fresh_zero_head(name, size):
    model = create_model(name, 4).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 4)
    head = classifier_head(model)
    assert head.out_features == 4 and not head.weight.any()


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "resnet18", "googlenet"])
def test_freezing_the_backbone_leaves_only_the_head_trainable(name):
    model = create_model(name, 4).train()
    freeze_backbone(model, freeze_batchnorm=True)
    head = {id(p) for p in classifier_head(model).parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == head
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)  # normalizing with the pretrained statistics


class WeightsAfterEachEpoch(Callback):
    def __init__(self):
        self.snapshots = []

    def on_train_epoch_end(self, trainer, module):
        self.snapshots.append({k: v.detach().clone() for k, v in module.model.state_dict().items()})


def tiny_classifier(optimizer: str, **extra) -> Classifier:
    """A seeded Classifier around TINY_CNN for 8 px inputs and 3 classes."""
    L.seed_everything(0, verbose=False)
    return Classifier(
        model=TINY_CNN,
        num_classes=3,
        class_names=["a", "b", "c"],
        preprocess={"image_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3},
        optimizer=optimizer_spec(optimizer),
        scheduler={"name": "none"},
        **extra,
    )


class HeldAsUnderDDP(FinetuneSchedule):
    """The schedule as it runs with several ranks, here in one process."""

    def setup(self, trainer, pl_module, stage):
        self.distributed = True
        BaseFinetuning.setup(self, trainer, pl_module, stage)


def fit_tiny(
    strategy: str, unfreeze_epoch: int = 1, epochs: int = 2, schedule=FinetuneSchedule
) -> tuple[dict, list[dict]]:
    """Fit a tiny CNN on random tensors; the weights before and after each epoch."""
    classifier = tiny_classifier("adamw", finetune={"strategy": strategy, "backbone_lr_factor": 0.5})
    before = {k: v.clone() for k, v in classifier.model.state_dict().items()}
    data = TensorDataset(torch.randn(32, 3, 8, 8) * 2 + 1, torch.randint(0, 3, (32,)))
    recorder = WeightsAfterEachEpoch()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        callbacks=[schedule(strategy, unfreeze_epoch, freeze_batchnorm=True), recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(classifier, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    return before, recorder.snapshots


BACKBONE_KEYS = ("features.0.0.weight", "features.0.1.weight", "features.0.1.running_mean")


def test_linear_probe_trains_the_head_only_and_keeps_batchnorm_statistics():
    before, (_, after) = fit_tiny("linear_probe")
    for key in BACKBONE_KEYS:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["head.3.weight"], after["head.3.weight"])


def test_gradual_unfreezes_the_backbone_at_the_configured_epoch():
    before, (first, second) = fit_tiny("gradual", unfreeze_epoch=1)
    for key in BACKBONE_KEYS:
        assert torch.equal(before[key], first[key]) and not torch.equal(first[key], second[key]), key


def test_gradual_under_ddp_holds_the_backbone_exactly_as_freezing_would():
    """Under DDP the backbone keeps requires_grad (DDP registers parameters once) and its gradients are
    dropped until the unfreeze epoch: the weights after each epoch are those of the frozen schedule."""
    _, frozen = fit_tiny("gradual", unfreeze_epoch=1, epochs=3)
    _, held = fit_tiny("gradual", unfreeze_epoch=1, epochs=3, schedule=HeldAsUnderDDP)
    for epoch, (a, b) in enumerate(zip(frozen, held, strict=True)):
        for key in a:
            assert torch.equal(a[key], b[key]), (epoch, key)


class FakeRanks:
    """What RanksInSync reads of a Trainer: two ranks whose digests all_gather stacks."""

    def __init__(self, other_rank_shift: float):
        self.world_size, self.is_global_zero, self.shift = 2, True, other_rank_shift
        self.strategy = SimpleNamespace(all_gather=lambda digest: torch.stack([digest, digest + self.shift]))


def test_ranks_that_end_with_different_weights_fail_the_run_in_one_line():
    logged = []
    tracker = SimpleNamespace(log_metrics=logged.append)
    module = tiny_classifier("adamw")
    RanksInSync(tracker).on_train_end(FakeRanks(0.0), module)
    assert logged == [{"train/rank_weight_diff": 0.0}]
    with pytest.raises(PipelineError, match=r"the 2 ranks ended training with different weights"):
        RanksInSync(tracker).on_train_end(FakeRanks(0.01), module)
    assert logged[-1]["train/rank_weight_diff"] > 1e-6


def test_full_finetuning_trains_everything_from_the_start():
    before, (first,) = fit_tiny("full", epochs=1)
    assert all(not torch.equal(before[k], first[k]) for k in BACKBONE_KEYS)


class ScriptedScores(L.LightningModule):
    """Logs planted val scores, one pair per epoch: accuracy peaks at epoch 2, the loss is lowest at 0."""

    ACC = [0.5, 0.7, 0.9, 0.6, 0.55, 0.5]
    LOSS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.model(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", self.ACC[self.current_epoch])
        self.log("val/loss", self.LOSS[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def log_train_epoch(self) -> None:  # what training_callbacks asks of a module (Classifier's)
        pass


@pytest.mark.parametrize(
    "objective, mode, best_score, epochs_run",
    [("val/acc", "auto", 0.9, 4), ("val/loss", "min", 0.3, 2), ("val/loss", "auto", 0.3, 2)],
)
def test_objective_picks_the_checkpoint_and_stops_early(tmp_path, objective, mode, best_score, epochs_run):
    """With patience 1 the run stops at the first epoch after the best that does not improve the objective."""
    data = DataLoader(TensorDataset(torch.ones(2, 1), torch.zeros(2)), batch_size=2)
    no_tracker = SimpleNamespace(log_metrics=lambda *_, **__: None, logged_epochs=set)
    full = {"strategy": "full", "unfreeze_epoch": 0, "freeze_batchnorm": True}
    direction = objective_direction(objective, mode)
    best, callbacks = training_callbacks(objective, direction, full, 1, no_tracker, tmp_path / "ckpt")
    options = {"accelerator": "cpu", "max_epochs": 6, "enable_progress_bar": False, "num_sanity_val_steps": 0}
    trainer = build_trainer(options, callbacks, tmp_path)
    trainer.fit(ScriptedScores(), train_dataloaders=data, val_dataloaders=data)
    assert float(best.best_model_score) == pytest.approx(best_score)
    assert trainer.current_epoch == epochs_run


class TiedScores(ScriptedScores):
    """Accuracy ties at epochs 1-3 while the loss falls until epoch 2."""

    ACC = [0.5, 0.9, 0.9, 0.9, 0.6]
    LOSS = [0.9, 0.5, 0.3, 0.4, 0.2]


def test_of_equal_scores_the_checkpoint_with_the_lower_val_loss_is_kept(tmp_path):
    data = DataLoader(TensorDataset(torch.ones(2, 1), torch.zeros(2)), batch_size=2)
    no_tracker = SimpleNamespace(log_metrics=lambda *_, **__: None, logged_epochs=set)
    full = {"strategy": "full", "unfreeze_epoch": 0, "freeze_batchnorm": True}
    best, callbacks = training_callbacks("val/acc", "max", full, None, no_tracker, tmp_path / "ckpt")
    options = {"accelerator": "cpu", "max_epochs": 5, "enable_progress_bar": False, "num_sanity_val_steps": 0}
    trainer = build_trainer(options, callbacks, tmp_path)
    trainer.fit(TiedScores(), train_dataloaders=data, val_dataloaders=data)
    assert float(best.best_model_score) == pytest.approx(0.9)
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == 2  # not 1, the first 0.9
    assert best.state_dict()["best_tie_breaker"] == pytest.approx(0.3)


class PeerGone(ScriptedScores):
    """Fails its second step as a DDP rank does when a peer has stopped; `signalled`: SIGTERM came first."""

    def __init__(self, signalled: bool):
        super().__init__()
        self.signalled = signalled

    def training_step(self, batch, batch_idx):
        if batch_idx == 1:
            self.trainer._signal_connector.received_sigterm = self.signalled  # what the SIGTERM handler sets
            raise RuntimeError("[gloo] Connection closed by peer")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("signalled, ending", [(True, SIGTERMException), (False, RuntimeError)])
def test_a_failure_after_sigterm_ends_training_as_an_interrupt(tmp_path, signalled, ending):
    """Under DDP a rank that saw SIGTERM a moment sooner stops alone and the others' next collective fails:
    after SIGTERM that failure is the interrupt (the runs end KILLED, resumable); without it, an error."""
    data = L.LightningDataModule.from_datasets(TensorDataset(torch.ones(4, 1), torch.zeros(4)), batch_size=1)
    options = {"accelerator": "cpu", "max_epochs": 1, "enable_progress_bar": False, "limit_val_batches": 0}
    with pytest.raises(ending, match="Connection closed by peer"):
        fit(build_trainer(options, [], tmp_path), PeerGone(signalled), data, None)


def test_a_new_trainer_option_is_one_config_line(make_cfg, tmp_path):
    """`trainer` reaches lightning.Trainer as written: an option the pipeline never names takes effect."""
    cfg = make_cfg("+trainer.check_val_every_n_epoch=2", "+trainer.max_time=00:00:10:00")
    trainer = build_trainer(plain(cfg.trainer), [], tmp_path)
    assert trainer.check_val_every_n_epoch == 2 and trainer.max_epochs == cfg.trainer.max_epochs


def train_run(client: MlflowClient):
    (child,) = [
        r
        for r in client.search_runs(client.search_experiments()[0].experiment_id)
        if r.info.run_name == "train"
    ]
    return child


@pytest.mark.slow
def test_training_extras_lr_finder_mixing_gradual_and_resume(make_cfg, tmp_path):
    """One run with the LR finder, mixup/cutmix, label smoothing, channels_last and a gradual unfreeze;
    a second run resumes its last checkpoint for one more epoch, with accumulation and clipping."""
    images = make_image_folder(tmp_path / "images", per_class=30, size=16)
    extras = [
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "train.lr_find=true",
        "train.lr_find_steps=20",
        "train.mixup_alpha=0.2",
        "train.cutmix_alpha=1.0",
        "train.label_smoothing=0.1",
        "train.channels_last=true",
        "finetune=gradual",
        "finetune.unfreeze_epoch=1",
    ]
    run(make_cfg(*STAGE_TRAIN, *extras, root=images))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    first = train_run(client)
    assert first.data.metrics["train/epochs"] == 2 and first.data.metrics["train/lr_found"] > 0
    assert "plots/lr_find.png" in {a.path for a in client.list_artifacts(first.info.run_id, "plots")}
    assert "train/lr_backbone" in first.data.metrics

    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    resume = [
        *[o for o in extras if not o.startswith(("train.lr_find", "trainer.max_epochs"))],
        "trainer.max_epochs=3",
        f"train.resume={last}",
        f"output_dir={tmp_path / 'out2'}",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=1.0",
    ]
    run(make_cfg(*STAGE_TRAIN, *resume, root=images))
    runs = client.search_runs(client.search_experiments()[0].experiment_id, "attributes.run_name = 'train'")
    resumed = next(r for r in runs if r.info.run_id != first.info.run_id)
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")]
    assert steps == [2] and resumed.data.metrics["train/epochs"] == 3


def resnet_checkpoint(tmp_path: Path) -> Path:
    classifier = Classifier(
        model={"name": "resnet18"}, num_classes=3, class_names=["a", "b", "c"], preprocess={}, optimizer={}
    )
    path = tmp_path / "resnet.ckpt"
    torch.save({"hyper_parameters": dict(classifier.hparams), "state_dict": {}}, path)
    return path


def run_on_two_cpu_ranks(image_folder: Path, tmp_path: Path, *overrides: str) -> None:
    """The CLI with two CPU processes (`trainer.devices=2`), two epochs, its store and outputs in tmp_path."""
    command = [
        sys.executable, "-m", "pipeline", *overrides,
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"data.root={image_folder}", f"data.cache_dir={tmp_path / 'cache'}",
        f"tracking.dir={tmp_path / 'mlruns'}", f"hydra.run.dir={tmp_path / 'out'}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=Path.cwd())
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_records_one_mlflow_run(image_folder, tmp_path, store):
    """Lightning's DDP launcher re-runs the command for rank 1; only rank 0 may write to MLflow."""
    run_on_two_cpu_ranks(image_folder, tmp_path, *STAGE_TRAIN, "trainer=ddp")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs(client.search_experiments()[0].experiment_id)
    assert sorted(r.info.run_name == "train" for r in runs) == [False, True]  # one parent, one train child
    assert {r.info.status for r in runs} == {"FINISHED"}
    train = train_run(client)
    assert (
        train.data.params["train.devices"] == "2"
        and train.data.params["train.accelerator"] == "CPUAccelerator"
    )
    assert [m.step for m in client.get_metric_history(train.info.run_id, "train/loss")] == [0, 1]
    assert train.data.params["train.world_size"] == "2" and train.data.metrics["train/rank_weight_diff"] == 0
    assert (tmp_path / "out" / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_several_labels_an_image(tmp_path, store):
    """The multi-label scores of each epoch gathered from both ranks: the objective val/map, ranks in step."""
    labels_file = make_multilabel_folder(tmp_path / "mosaics", images=40)
    run_on_two_cpu_ranks(labels_file, tmp_path, *STAGE_TRAIN, "trainer=ddp")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    train = train_run(client)
    assert train.data.params["train.objective"] == "val/map" and train.data.params["train.world_size"] == "2"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "val/map")] == [0, 1]
    assert (
        0 < train.data.metrics["train/best_val_map"] <= 1
        and train.data.metrics["train/rank_weight_diff"] == 0
    )


@pytest.mark.slow
def test_implicit_ddp_fine_tunes_a_pretrained_model_gradually_with_ranks_in_step(
    image_folder, tmp_path, store
):
    """trainer.devices=2 without trainer=ddp: Lightning picks DDP by itself, and the pretrained model's
    gradual schedule (head alone first) must still train both ranks alike."""
    overrides = ["stages=[train]", "model=efficientnet_lite0", "data.image_size=32", "data.batch_size=8"]
    run_on_two_cpu_ranks(image_folder, tmp_path, *overrides, "data.audit=false")
    train = train_run(MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"))
    assert (train.data.params["train.world_size"], train.data.params["train.finetune"]) == ("2", "gradual")
    assert train.data.metrics["train/rank_weight_diff"] == 0.0


@pytest.mark.slow
def test_ddp_on_two_nodes_started_by_torchrun_records_one_run(image_folder, tmp_path, store):
    """Multi-node DDP without SLURM, as docs/guides/slurm.md shows it: torchrun on each node with its node
    rank and the first node's address, two processes a node; here both "nodes" are this machine. Four ranks,
    one run."""
    rendezvous = [
        "--nnodes=2",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
    ]
    command = [
        "-m", "pipeline", *STAGE_TRAIN,
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=2",
        "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        f"data.root={image_folder}", f"data.cache_dir={tmp_path / 'cache'}",
        f"tracking.dir={tmp_path / 'mlruns'}", f"hydra.run.dir={tmp_path / 'out'}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--node_rank={rank}", *command],
            env={**env, "OMP_NUM_THREADS": "1"},  # four processes on the machine's cores
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=400)[0] for node in nodes]
    shown = outputs[0][-8000:] + outputs[1][-8000:]  # the ranks' own lines too, not only the launchers'
    assert [node.returncode for node in nodes] == [0, 0], shown
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs(client.search_experiments()[0].experiment_id)
    assert sorted(r.info.run_name == "train" for r in runs) == [False, True]  # one parent, one train child
    train = train_run(client)
    assert (train.data.params["train.world_size"], train.data.params["train.num_nodes"]) == ("4", "2")
    assert train.data.metrics["train/rank_weight_diff"] == 0.0
    assert [m.step for m in client.get_metric_history(train.info.run_id, "train/loss")] == [0, 1]


def test_compile_traces_the_network_and_keeps_plain_checkpoint_names(tmp_path, monkeypatch):
    """train.compile=true compiles the network in place when fitting starts (here with dynamo's eager backend:
    the graph capture is real, the minutes of C++ code generation are left to the measurement in
    docs/guides/training.md)."""
    compiled = []
    real_compile = torch.compile

    def eager_backend(fn, **kwargs):
        compiled.append(fn)
        return real_compile(fn, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_backend)
    torch._dynamo.reset()
    classifier = tiny_classifier("sgd", train={**TRAIN_DEFAULTS, "compile": True})
    data = DataLoader(TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(classifier, data)
    assert len(compiled) == 1 and torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    assert load_classifier(tmp_path / "compiled.ckpt").state_dict().keys() == classifier.state_dict().keys()
    assert not any("_orig_mod" in k for k in classifier.state_dict())


class StepLosses(L.Callback):
    """Each step's loss and batch size, by epoch: what the epoch's train/loss must average."""

    def __init__(self):
        self.losses: dict[int, list[tuple[float, int]]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.setdefault(trainer.current_epoch, []).append((float(outputs["loss"]), len(batch[1])))


def test_train_metrics_are_each_epochs_own_and_reach_the_tracker(tmp_path):
    """train/loss is the batch-size-weighted mean of that epoch's step losses (the metrics start afresh each
    epoch), train/acc a share; both reach the tracker at the epoch's step."""
    logged = []
    tracker = SimpleNamespace(
        log_metrics=lambda m, step=None, **_: logged.append((step, m)), logged_epochs=set
    )
    full = {"strategy": "full", "unfreeze_epoch": 0, "freeze_batchnorm": True}
    _, callbacks = training_callbacks("val/acc", "max", full, None, tracker, tmp_path / "ckpt")
    steps = StepLosses()
    options = {"accelerator": "cpu", "max_epochs": 2, "enable_progress_bar": False, "limit_val_batches": 0}
    trainer = build_trainer(options, [*callbacks, steps], tmp_path)
    data = DataLoader(TensorDataset(torch.randn(20, 3, 8, 8), torch.randint(0, 3, (20,))), batch_size=8)
    trainer.fit(tiny_classifier("sgd"), data)  # batches of 8, 8 and 4
    for epoch, metrics in logged:
        losses, sizes = zip(*steps.losses[epoch], strict=True)
        assert metrics["train/loss"] == pytest.approx(np.average(losses, weights=sizes), rel=1e-5)
        assert 0 <= metrics["train/acc"] <= 1
    assert [epoch for epoch, _ in logged] == [0, 1]


def test_checkpoint_reloads_into_an_identical_model(tmp_path):
    """Lightning's checkpoint, read back with torch.load(weights_only=True), rebuilds the trained model:
    same hyperparameters, every tensor (batch norm statistics included) and the same outputs."""
    classifier = tiny_classifier("sgd")
    data = DataLoader(TensorDataset(torch.randn(16, 3, 8, 8) + 1, torch.randint(0, 3, (16,))), batch_size=8)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(classifier, data)
    trainer.save_checkpoint(tmp_path / "trained.ckpt")

    reloaded = load_classifier(tmp_path / "trained.ckpt")
    assert dict(reloaded.hparams) == {
        **classifier.hparams,
        "model": {**TINY_CNN, "pretrained": False, "weights": None},
    }
    trained, restored = classifier.state_dict(), reloaded.state_dict()
    assert trained.keys() == restored.keys()
    assert all(torch.equal(trained[k], restored[k]) for k in trained)
    assert trained["model.features.0.1.running_mean"].abs().sum() > 0  # not a fresh model
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(classifier.eval()(x), reloaded(x))


class DriftingWeight(ScriptedScores):
    """One weight that a constant gradient walks by 1 each step; val/acc logs the weight validation sees."""

    def training_step(self, batch, batch_idx):
        return -self.model.weight.sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", self.model.weight.sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def test_weight_ema_is_what_validation_scores_and_the_best_checkpoint_holds(tmp_path):
    """With train.ema_decay the weights validation sees (and the best checkpoint keeps) are the warmed-up
    moving average of the trained ones, which go on from their own last value."""
    data = DataLoader(TensorDataset(torch.ones(4, 1), torch.zeros(4)), batch_size=1)  # 4 steps an epoch
    no_tracker = SimpleNamespace(log_metrics=lambda *_, **__: None, logged_epochs=set)
    full = {"strategy": "full", "unfreeze_epoch": 0, "freeze_batchnorm": True}
    best, callbacks = training_callbacks("val/acc", "max", full, None, no_tracker, tmp_path / "ckpt", 0.5)
    options = {"accelerator": "cpu", "max_epochs": 2, "enable_progress_bar": False, "num_sanity_val_steps": 0}
    module = DriftingWeight()
    start = module.model.weight.item()
    trainer = build_trainer(options, callbacks, tmp_path)
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)

    trained, average = [start + step for step in range(1, 9)], start + 1.0
    for n, weight in enumerate(trained[1:], start=1):
        average += (weight - average) * (1 - min(0.5, (1 + n) / (10 + n)))
    saved = torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=True)
    assert float(best.best_model_score) == pytest.approx(average)
    assert saved["state_dict"]["model.weight"].item() == pytest.approx(average)
    assert saved["current_model_state"]["model.weight"].item() == pytest.approx(trained[-1])
    assert module.model.weight.item() == pytest.approx(average)  # the trained model ends averaged

    keep_weights_only(tmp_path / "ckpt" / "best.ckpt")  # what the train stage does with it
    slim = torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=True)
    assert slim["state_dict"]["model.weight"].item() == pytest.approx(average)
    assert not {"optimizer_states", "current_model_state", "callbacks"} & set(slim)


def test_channels_last_is_set_when_the_classifier_is_built_and_changes_no_result():
    """Set at construction, before DDP or a checkpoint load sees the parameters; only the layout differs."""
    train = plain(OmegaConf.structured(TrainConfig))
    nhwc = tiny_classifier("adamw", train=train)
    plain_layout = tiny_classifier("adamw", train={**train, "channels_last": False})
    assert train["channels_last"]  # the default
    convs = [m.weight for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(nhwc.eval()(nhwc._inputs(x)), plain_layout.eval()(x))


class EpochCounter(Callback):
    def __init__(self):
        self.epochs = 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs += 1


def test_a_caller_adds_callbacks_to_the_train_stage(make_cfg, image_folder):
    """What the benchmark hooks in (scripts/bench.py): run(cfg, callbacks=...) reaches the train stage's
    Lightning trainer beside the pipeline's own callbacks."""
    counter = EpochCounter()
    run(make_cfg(*STAGE_TRAIN, "trainer.max_epochs=2", root=image_folder), callbacks=(counter,))
    assert counter.epochs == 2
