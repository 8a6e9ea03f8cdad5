"""Structured config schemas, registered in Hydra's ConfigStore: the one home of every setting's type,
allowed values and default.

`conf/config.yaml` lists `base_config` first in its defaults, so every YAML file is merged onto these
dataclasses: an unknown key, a value of the wrong type or a choice outside its `Enum` fails when the config
is composed, before any work is done. YAML files in `conf/` name a group option and state only what it
changes. The exception is `trainer`: Lightning's own `Trainer` arguments, passed through as written
(`conf/trainer/auto.yaml` holds their defaults), so a new Trainer option is one YAML line.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.data.decode import MAX_PIXELS


class CorruptPolicy(StrEnum):
    skip = "skip"
    fail = "fail"


class LeakagePolicy(StrEnum):
    warn = "warn"
    fail = "fail"
    drop = "drop"  # the held-out copy of each pair across splits


class CacheMode(StrEnum):
    auto = "auto"
    always = "always"
    never = "never"


class IssuePolicy(StrEnum):
    warn = "warn"
    drop = "drop"  # from the training split only: val and test keep them, so scores stay comparable


class Holdout(StrEnum):
    auto = "auto"  # split folders with val but no test: val is held out as the test split
    none = "none"  # val picks the checkpoint; no held-out split


class Balance(StrEnum):
    auto = "auto"  # weighted_sampler when data.imbalance_threshold is reached, else none
    none = "none"
    class_weights = "class_weights"
    weighted_sampler = "weighted_sampler"
    oversample = "oversample"
    undersample = "undersample"


class Interpolation(StrEnum):
    nearest = "nearest"
    bilinear = "bilinear"
    bicubic = "bicubic"
    area = "area"
    lanczos = "lanczos"


class Scheduler(StrEnum):
    cosine = "cosine"
    step = "step"
    multistep = "multistep"
    onecycle = "onecycle"
    plateau = "plateau"
    none = "none"


class FinetuneStrategy(StrEnum):
    auto = "auto"  # gradual for pretrained weights, full from random init (pipeline.recipe)
    full = "full"
    linear_probe = "linear_probe"
    gradual = "gradual"


class Quantize(StrEnum):
    none = "none"
    static = "static"
    dynamic = "dynamic"


class ObjectiveMode(StrEnum):
    auto = "auto"  # min for a loss, else max
    max = "max"
    min = "min"


@dataclass
class DataConfig:
    name: str = MISSING
    root: str | None = MISSING  # an image folder or a CSV manifest; null means the built-in digits
    cache_dir: str = ".cache/data"  # where the built-in digits are written as PNG files
    image_size: int | None = MISSING  # null: the pretrained model's input size
    val_fraction: float = 0.2
    test_fraction: float = 0.15  # flat folders and manifests without splits: held out until the end
    holdout: Holdout = Holdout.auto  # split folders without test: val held out, checkpoint on a train slice
    split_seed: int = 42
    batch_size: int = 64
    num_workers: int = 0
    # decode and resize each image once into a memory-mapped file (pipeline.data.resized_cache); auto: when
    # it fits resized_cache_mb
    resized_cache: CacheMode = CacheMode.auto
    resized_cache_mb: int = 2048
    on_corrupt: CorruptPolicy = CorruptPolicy.skip  # unreadable files
    on_leakage: LeakagePolicy = LeakagePolicy.warn  # duplicates across splits
    near_duplicate_distance: int = 2  # max perceptual-hash bits that differ for a near duplicate
    inspect_workers: int = 2  # processes that decode and hash files in the data stage
    max_pixels: int = MAX_PIXELS  # larger images count as unreadable (data.on_corrupt); predict and serve
    # refuse them too (the exported model carries the cap): bounded memory
    audit: bool = True  # embed every image to find suspected label issues, outliers, near duplicates (audit:)
    on_label_issue: IssuePolicy = IssuePolicy.warn
    on_outlier: IssuePolicy = IssuePolicy.warn
    balance: Balance = Balance.auto  # class balancing in training
    imbalance_threshold: float = 3.0  # largest / smallest training class from which auto balances


@dataclass
class ModelConfig:
    name: str = MISSING
    pretrained: bool = False  # timm hub weights (needs the network)
    weights: str | None = None  # a local state_dict/safetensors file, or pkg:<package>/<file>
    zero_init_head: bool = True  # last linear layer starts at zero: loss at init = ln(num_classes)
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth (timm models that support it)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    name: str = MISSING
    # albumentations transforms applied to training images only, each a `_target_` dict.
    train: list[Any] = field(default_factory=list)
    # null: the model's pretrained data config when it starts from weights, else the training set's own
    # mean and std, bilinear resizing and the whole image squeezed to a square.
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: Interpolation | None = None
    crop_pct: float | None = None  # (0, 1]: shortest side to image_size / crop_pct, then a center crop


@dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd (nesterov when set), or any of timm.optim.list_optimizers(): adamw, lamb, ...
    lr: float = MISSING
    weight_decay: float = 0.0  # never applied to biases and norm layers
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False  # sgd


@dataclass
class SchedulerConfig:
    name: Scheduler = MISSING
    warmup_epochs: int = 0  # cosine
    min_lr: float = 0.0  # cosine
    step_size: int = 10  # step
    milestones: list[int] = field(default_factory=list)  # multistep
    gamma: float = 0.1  # step, multistep; plateau's reduction factor
    patience: int = 2  # plateau: epochs without val/loss improvement
    pct_start: float = 0.3  # onecycle: share of steps spent warming up


@dataclass
class FinetuneConfig:
    strategy: FinetuneStrategy = MISSING
    unfreeze_epoch: int = 1  # gradual: the epoch at which the backbone starts training
    backbone_lr_factor: float = 1.0  # backbone lr = optimizer.lr x this factor (discriminative lr)
    # null: one backbone rate; else earlier stages lower, down to optimizer.lr x this at the stem
    first_stage_lr_factor: float | None = None
    freeze_batchnorm: bool = True  # frozen batch norm layers stay in eval mode (running stats kept)


@dataclass
class TrainConfig:
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # 0 disables mixup
    cutmix_alpha: float = 0.0  # 0 disables cutmix
    mix_prob: float = 1.0  # chance that a batch is mixed when mixup or cutmix is on
    early_stopping_patience: int | None = None  # epochs without improvement of `objective`; null: off
    ema_decay: float | None = 0.99  # exponential moving average of the weights (warmed up); null: off
    lr_find: bool = False  # run Lightning's LR finder and train with its suggestion
    lr_find_steps: int = 100
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU (README; GPU not measured)
    compile: bool = False  # torch.compile the network for training (on 2 CPU cores: slower at 32 px; README)
    resume: str | None = None  # a last.ckpt to continue from (epoch, optimizer and scheduler state)


@dataclass
class ValidateConfig:
    top_k: int = 5
    tta: bool = False  # also score horizontally flipped images and report the change
    top_losses: int = 16  # most confidently wrong images shown in a grid
    gradcam: int = 8  # Grad-CAM heatmaps of this many top losses (0: none); checkpoints only
    gradcam_per_class: int = 2  # and of this many correctly classified images per class
    calibration_bins: int = 15


@dataclass
class TrackingConfig:
    experiment: str = MISSING
    # null: the embedded store under `dir` (SQLite + artifacts). MLFLOW_TRACKING_URI overrides it.
    uri: str | None = None
    dir: str = "mlruns"
    run_name: str | None = None


@dataclass
class SanityConfig:
    enforce: bool = True
    init_loss_tolerance: float = 0.5  # allowed |loss_at_init - ln(C)| / ln(C)
    overfit_batch_size: int = 16
    overfit_steps: int = 100
    overfit_lr: float = 3e-3  # Adam; 1e-3 left sound small or pretrained models short of the target by chance
    overfit_target_loss: float = 0.05


@dataclass
class AuditConfig:
    """How the data audit (data.audit) judges images: pipeline/data/audit.py and the modules it names."""

    backbone: ModelConfig = MISSING  # the embedding model: a conf/model option (config.yaml's defaults)
    image_size: int | None = None  # null: the backbone's own input size (224 for EfficientNet-Lite0)
    outlier_neighbours: int = 10  # an outlier's score: its mean distance to this many nearest images
    outlier_fence: float = 3.0  # flagged beyond Q3 + fence x IQR of all scores
    duplicate_similarity: float = 0.98  # embedding cosine similarity of near duplicates
    # image quality (pipeline/data/quality.py says how each was chosen)
    dark: float = 0.2  # the 99th luminance percentile (0-1) below which an image is too dark
    bright: float = 0.9  # the 1st luminance percentile above which it is too bright
    blurry: float = 0.5  # edge strength over contrast on a 64 px thumbnail below which it is blurry
    low_information: float = 1.0  # grey-level entropy (bits) below which it holds little information
    odd_aspect_ratio: float = 3.0  # long side / short side above which its shape is odd
    grid_images: int = 24  # images per plot


@dataclass
class ExportConfig:
    opset: int = 18
    parity_atol: float = 1e-4
    # none | static | dynamic: also write an INT8 model and report its accuracy change and speed-up
    quantize: Quantize = Quantize.none
    calibration_images: int = 256  # training images that set the activation ranges of `static`
    latency_runs: int = 20  # timed repetitions per batch size (median reported)
    register: bool = False  # register the logged ONNX model in the MLflow model registry
    model_name: str = "image-classifier"


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    augment: AugmentConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: dict[str, Any] = MISSING  # lightning.Trainer's arguments (conf/trainer/)
    tracking: TrackingConfig = MISSING
    finetune: FinetuneConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    stages: list[str] = field(default_factory=lambda: ["data", "sanity", "train", "validate", "export"])
    seed: int = 42
    output_dir: str = MISSING
    ckpt_path: str | None = None  # validate/export this checkpoint
    from_run: str | None = None  # validate/export the best checkpoint of this MLflow run
    onnx_path: str | None = None  # validate this ONNX file
    resume: Any = None  # true: the newest KILLED/FAILED pipeline run; or a parent run id
    # The val metric that picks the best checkpoint, drives early stopping and is returned to sweepers:
    # auto (val/bal_acc when the training classes are imbalanced, else val/acc) or one of VAL_METRICS.
    objective: str = "auto"
    objective_mode: ObjectiveMode = ObjectiveMode.auto


STAGE_NAMES = ("data", "sanity", "train", "validate", "export")
# what the train stage logs after each epoch's validation (pipeline.models.module): what can pick a checkpoint
VAL_METRICS = ("val/acc", "val/bal_acc", "val/f1_macro", "val/loss")


def plain(node: DictConfig) -> dict[str, Any]:
    """A config section as plain Python values (choices as their strings), as checkpoints store them."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def tasks_per_node(devices: Any) -> int:
    """SLURM tasks a node runs for Lightning's `trainer.devices`: one per device (Lightning's DDP under SLURM
    takes its ranks from the tasks), one for `auto`. `-1` (all devices) is a number SLURM must be told."""
    if devices == "auto":
        return 1
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):  # device indices, e.g. [0, 1]
        return len(devices)
    raise ValueError(f"trainer.devices={devices} cannot size a SLURM job: give the devices per node, e.g. 4")


def gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """GPUs to request on each node: none for CPU training (None leaves the option out of sbatch)."""
    return None if accelerator == "cpu" else tasks_per_node(devices)


def register() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver("slurm_tasks", tasks_per_node, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus", gpus_per_node, replace=True)
