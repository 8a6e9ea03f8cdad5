"""Structured config schemas, registered in Hydra's ConfigStore: the one home of every setting's type,
allowed values and default.

`conf/config.yaml` lists `base_config` first in its defaults, so every YAML file is merged onto these
dataclasses: an unknown key, a value of the wrong type or a choice outside its `Enum` fails when the config
is composed, before any work is done. YAML files in `conf/` name a group option and state only what it
changes. The exception is `trainer`: Lightning's own `Trainer` arguments, passed through as written
(`conf/trainer/auto.yaml` holds their defaults), so a new Trainer option is one YAML line.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from numbers import Number
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.limits import MAX_PIXELS


def _is_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """A bound on a setting's value, stated on its field (`bounded`): config_checks applies every one before
    any work is done, and the configuration reference shows it. A null value passes (where the type allows
    null, null means "off" or "the default")."""

    text: str  # as the error and the reference say it: "> 0", "within [0, 1]"
    holds: Callable[[Any], bool]


POSITIVE = Rule("> 0", lambda v: _is_number(v) and v > 0)
NON_NEGATIVE = Rule(">= 0", lambda v: v >= 0)
FRACTION = Rule("within [0, 1]", lambda v: 0 <= v <= 1)
BELOW_ONE = Rule("< 1", lambda v: v < 1)
MIN_IMAGE_SIZE = 4  # px; at 2 px ResNet-18 trained, then had no feature map to explain (docs: bad input)
IMAGE_SIZE = Rule(
    f">= {MIN_IMAGE_SIZE} px or auto", lambda v: v == "auto" or isinstance(v, int) and v >= MIN_IMAGE_SIZE
)
EPOCHS = Rule("> 0 or auto", lambda v: v == "auto" or _is_number(v) and v > 0)


def within(low: float, high: float) -> Rule:
    return Rule(f"within [{low}, {high}]", lambda v: low <= v <= high)


def rules_of(dataclass_field) -> tuple[Rule, ...]:
    return dataclass_field.metadata.get("rules", ())


def bounded(default: Any, *rules: Rule) -> Any:
    """A dataclass field with its default and the rules its value must keep."""
    return field(default=default, metadata={"rules": rules})


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


class Task(StrEnum):
    auto = "auto"  # multilabel when a labels file names several labels for some image, else multiclass
    multiclass = "multiclass"  # one label an image
    multilabel = "multilabel"  # any number of labels an image (a labels file: pipeline/data/labels_file.py)


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
    name: str = MISSING  # the conf/data option
    # an image folder, or a labels file (CSV or JSON lines: pipeline/data/labels_file.py); null: the digits
    root: str | None = MISSING
    task: Task = Task.auto  # one label an image or several
    label_separator: str = ";"  # what joins a labels file's labels of one image
    cache_dir: str = ".cache/data"  # where the built-in digits are written as PNG files
    # px; auto: 192 when the training images' median short side reaches it, else 160 (pipeline.recipe);
    # null: the pretrained model's input size
    image_size: Any = bounded(MISSING, IMAGE_SIZE)  # an int, auto or null (OmegaConf's unions break merging)
    # share of each class held out to pick the checkpoint (of train, with holdout=auto)
    val_fraction: float = bounded(0.2, FRACTION, POSITIVE)
    # flat folders and manifests without splits: held out until the end
    test_fraction: float = bounded(0.15, FRACTION)
    holdout: Holdout = Holdout.auto  # split folders without test: val held out, checkpoint on a train slice
    # share of each class's training images held out for the calibrate stage (the calib split): they neither
    # train nor pick the checkpoint; classes of fewer than 30 training images give none; without a calib split
    # the calibrate stage fits on val and says so
    calib_fraction: float = bounded(0.1, FRACTION, BELOW_ONE)
    split_seed: int = 42  # seeds the stratified split, apart from the training seed
    batch_size: int = bounded(64, POSITIVE)  # images per training and evaluation batch
    # loader worker processes (lowered to the run's CPU share; with the resized cache, and for passes that
    # only score on the CPU, to a quarter of the cores)
    num_workers: int = bounded(0, NON_NEGATIVE)
    # decode and resize each image once into a memory-mapped file (pipeline.data.resized_cache); auto: when
    # it fits resized_cache_mb
    resized_cache: CacheMode = CacheMode.auto
    resized_cache_mb: int = bounded(2048, POSITIVE)  # the largest resized cache `auto` builds
    # finetune.head_fit's backbone features under cache_dir/features: the least recently used go above it
    feature_cache_mb: int = bounded(1024, POSITIVE)
    on_corrupt: CorruptPolicy = CorruptPolicy.skip  # unreadable files
    on_leakage: LeakagePolicy = LeakagePolicy.warn  # duplicates across splits
    # max perceptual-hash bits that differ for a near duplicate
    near_duplicate_distance: int = bounded(2, within(0, 63))
    inspect_workers: int = bounded(2, NON_NEGATIVE)  # processes that decode and hash files in the data stage
    # larger images count as unreadable (data.on_corrupt); predict and serve refuse them too (the exported
    # model carries the cap): bounded memory
    max_pixels: int = bounded(MAX_PIXELS, POSITIVE)  # PIL itself refuses more than 178,956,970 at open
    audit: bool = True  # embed every image to find suspected label issues, outliers, near duplicates (audit:)
    # warn, or drop suspected label issues from the training split
    on_label_issue: IssuePolicy = IssuePolicy.warn
    on_outlier: IssuePolicy = IssuePolicy.warn  # warn, or drop outliers from the training split
    # a review's decisions (make review): its decisions.yaml, or the reviewed run's id; relabels, drops and
    # keeps applied to the index, the user's images untouched
    decisions: str | None = None
    balance: Balance = Balance.auto  # class balancing in training
    # largest / smallest training class from which auto balances
    imbalance_threshold: float = bounded(3.0, POSITIVE, within(1.0, float("inf")))


@dataclass
class ModelConfig:
    # a timm model name, resnet18, efficientnet_lite0, simple_cnn, alexnet, vgg11, googlenet (conf/model)
    name: str = MISSING
    pretrained: bool = False  # timm hub weights (needs the network)
    weights: str | None = None  # a local state_dict/safetensors file, or pkg:<package>/<file>
    zero_init_head: bool = True  # last linear layer starts at zero: loss at init = ln(num_classes)
    drop_rate: float = bounded(0.0, NON_NEGATIVE, BELOW_ONE)  # dropout before the classifier
    # stochastic depth (timm models that support it)
    drop_path_rate: float = bounded(0.0, NON_NEGATIVE, BELOW_ONE)
    # extra arguments to the model's constructor (e.g. simple_cnn's channels)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    name: str = MISSING  # the conf/augment option
    # albumentations transforms applied to training images only, each a `_target_` dict.
    train: list[Any] = field(default_factory=list)
    # null: the model's pretrained data config when it starts from weights, else the training set's own
    # mean and std, bilinear resizing and the whole image squeezed to a square.
    mean: list[float] | None = None
    std: list[float] | None = None  # per-channel std for normalization; null: as for mean
    # resizing filter; null: the pretrained config's, else bilinear
    interpolation: Interpolation | None = None
    crop_pct: float | None = None  # (0, 1]: shortest side to image_size / crop_pct, then a center crop


@dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd (nesterov when set), or any of timm.optim.list_optimizers(): adamw, lamb, ...
    # the head's learning rate (the backbone's is lr x finetune.backbone_lr_factor)
    lr: float = bounded(MISSING, POSITIVE)
    weight_decay: float = bounded(0.0, NON_NEGATIVE)  # never applied to biases and norm layers
    momentum: float = bounded(0.9, NON_NEGATIVE)  # sgd and rmsprop
    nesterov: bool = False  # sgd


@dataclass
class SchedulerConfig:
    name: Scheduler = MISSING  # cosine, step, multistep, onecycle, plateau or none (conf/scheduler)
    warmup_epochs: int = 0  # cosine
    min_lr: float = 0.0  # cosine
    step_size: int = 10  # step
    milestones: list[int] = field(default_factory=list)  # multistep
    gamma: float = 0.1  # step, multistep; plateau's reduction factor
    patience: int = 2  # plateau: epochs without val/loss improvement
    pct_start: float = 0.3  # onecycle: share of steps spent warming up


@dataclass
class FinetuneConfig:
    strategy: FinetuneStrategy = MISSING  # auto, full, linear_probe or gradual (pipeline.models.finetune)
    unfreeze_epoch: int = bounded(1, NON_NEGATIVE)  # gradual: the epoch at which the backbone starts training
    # backbone lr = optimizer.lr x this factor (discriminative lr)
    backbone_lr_factor: float = bounded(1.0, NON_NEGATIVE)
    # null: one backbone rate; else earlier stages lower, down to optimizer.lr x this at the stem
    first_stage_lr_factor: float | None = bounded(None, POSITIVE)
    freeze_batchnorm: bool = True  # frozen batch norm layers stay in eval mode (running stats kept)
    # pretrained weights: fit the new head to convergence on the frozen backbone's cached features first
    # (LP-FT); then linear_probe is done, gradual trains every layer from the first epoch
    head_fit: bool = False


@dataclass
class TrainConfig:
    label_smoothing: float = bounded(0.0, NON_NEGATIVE, BELOW_ONE)  # cross-entropy label smoothing
    mixup_alpha: float = bounded(0.0, NON_NEGATIVE)  # 0 disables mixup
    cutmix_alpha: float = bounded(0.0, NON_NEGATIVE)  # 0 disables cutmix
    mix_prob: float = bounded(1.0, FRACTION)  # chance that a batch is mixed when mixup or cutmix is on
    early_stopping_patience: int | None = None  # epochs without improvement of `objective`; null: off
    # exponential moving average of the weights (warmed up); null: off
    ema_decay: float | None = bounded(0.99, POSITIVE, BELOW_ONE)
    lr_find: bool = False  # run Lightning's LR finder and train with its suggestion
    lr_find_steps: int = 100  # steps the LR finder tries
    # NHWC memory layout: faster convolutions on CPU (docs/guides/training.md; GPU not measured)
    channels_last: bool = True
    # torch.compile the network for training (on 2 CPU cores: slower at 32 px; docs/guides/training.md)
    compile: bool = False
    resume: str | None = None  # a last.ckpt to continue from (epoch, optimizer and scheduler state)


@dataclass
class ValidateConfig:
    top_k: int = bounded(5, POSITIVE)  # k of top-k accuracy (capped at the number of classes)
    tta: bool = False  # also score horizontally flipped images and report the change
    top_losses: int = bounded(16, NON_NEGATIVE)  # most confidently wrong images shown in a grid
    # Grad-CAM heatmaps of this many top losses (0: none; several labels an image: each label it shows or is
    # given); checkpoints only
    gradcam: int = bounded(8, NON_NEGATIVE)
    # and of this many correctly classified images per class (per label)
    gradcam_per_class: int = bounded(2, NON_NEGATIVE)
    calibration_bins: int = 15  # bins of the expected calibration error and the reliability plot
    # folders of images unlike the training ones (any layout): how well the unknown answer tells each apart,
    # e.g. validate.ood_roots=[/data/flowers,/data/screenshots]; metrics named after each folder
    ood_roots: list[str] = field(default_factory=list)
    # resamples of the 95% bootstrap interval of acc, bal_acc and f1_macro (seeded by `seed`); 0: none
    bootstrap_resamples: int = bounded(1000, NON_NEGATIVE)


class ConformalMix(StrEnum):
    auto = "auto"  # balanced when the training classes are imbalanced (data.imbalance_threshold), else calib
    calib = "calib"  # coverage for images mixed like the calib split (which follows the training folder)
    balanced = "balanced"  # coverage for every class equally often (calib images weighted 1 / class count)


class UnknownMethod(StrEnum):
    # distance of the normalized features to the nearest class mean, one shared covariance
    mahalanobis = "mahalanobis"
    knn = "knn"  # cosine distance to the k-th nearest training feature (normalized)
    energy = "energy"  # -logsumexp of the logits: no features needed, weak with few classes


@dataclass
class CalibrateConfig:
    """What the calibrate stage fits on the calib split (data.calib_fraction) and stores with the checkpoint:
    pipeline/stages/calibrate.py."""

    # temperature scaling, kept where it lowers the calib split's cross-validated NLL without raising its ECE
    temperature: bool = True
    # error rate of the prediction sets (split conformal); null: no sets
    conformal_alpha: float | None = bounded(0.1, POSITIVE, BELOW_ONE)
    conformal_mix: ConformalMix = ConformalMix.auto  # the class mix the sets' coverage is promised for
    # share of new images like the calib ones the unknown threshold accepts (with 90% confidence, from the
    # calib scores: pipeline.evaluation.unknown); null: no unknown answer
    unknown_accept: float | None = bounded(0.975, POSITIVE, BELOW_ONE)
    unknown_method: UnknownMethod = UnknownMethod.mahalanobis  # what scores how unlike the training images
    # mahalanobis on a fine-tuned model: also read the layers of the pretrained network it started from, which
    # fine-tuning has not pulled toward its classes; its weights join the model (twice the backbone's compute)
    unknown_pretrained: bool = True
    unknown_neighbours: int = bounded(5, POSITIVE)  # knn: the k of the k-th nearest training feature
    # training images (a seeded, stratified sample) the unknown score is fitted on; knn keeps their features
    # in the model, so this bounds its size
    unknown_train_images: int = bounded(2048, POSITIVE)


@dataclass
class TrackingConfig:
    experiment: str = MISSING  # the MLflow experiment the runs go to
    # null: the embedded store under `dir` (SQLite + artifacts). MLFLOW_TRACKING_URI overrides it.
    uri: str | None = None
    dir: str = "mlruns"  # the embedded store's folder (SQLite database and artifacts)
    run_name: str | None = None  # the parent run's name; null: model, data and time


@dataclass
class SanityConfig:
    enforce: bool = True  # a failed check stops the run (false: reported only)
    init_loss_tolerance: float = 0.5  # allowed |loss_at_init - ln(C)| / ln(C)
    overfit_batch_size: int = bounded(16, POSITIVE)  # images in the batch the overfit check trains on
    overfit_steps: int = bounded(100, POSITIVE)  # steps the overfit check may take
    overfit_lr: float = 3e-3  # Adam; 1e-3 left sound small or pretrained models short of the target by chance
    overfit_target_loss: float = 0.05  # the loss the overfit check must reach


@dataclass
class AuditConfig:
    """How the data audit (data.audit) judges images: pipeline/data/audit.py and the modules it names."""

    backbone: ModelConfig = MISSING  # the embedding model: a conf/model option (config.yaml's defaults)
    # null: the backbone's own input size (224 for EfficientNet-Lite0)
    image_size: int | None = bounded(None, POSITIVE)
    # an outlier's score: its mean distance to this many nearest images
    outlier_neighbours: int = bounded(10, POSITIVE)
    outlier_fence: float = bounded(3.0, POSITIVE)  # flagged beyond Q3 + fence x IQR of all scores
    # embedding cosine similarity of near duplicates
    duplicate_similarity: float = bounded(0.98, within(0.5, 1.0))
    # image quality (pipeline/data/quality.py says how each was chosen)
    # the 99th luminance percentile (0-1) below which an image is too dark
    dark: float = bounded(0.2, FRACTION)
    bright: float = bounded(0.9, FRACTION)  # the 1st luminance percentile above which it is too bright
    # edge strength over contrast on a 64 px thumbnail below which it is blurry
    blurry: float = bounded(0.5, NON_NEGATIVE)
    # grey-level entropy (bits) below which it holds little information
    low_information: float = bounded(1.0, NON_NEGATIVE)
    # long side / short side above which its shape is odd
    odd_aspect_ratio: float = bounded(3.0, within(1.0, float("inf")))
    grid_images: int = bounded(24, POSITIVE)  # images per plot


@dataclass
class ExportConfig:
    opset: int = bounded(18, within(18, 26))  # ONNX opset of the exported file
    parity_atol: float = 1e-4  # largest difference allowed between ONNX and PyTorch outputs
    # none | static | dynamic: also write an INT8 model and report its accuracy change and speed-up
    quantize: Quantize = Quantize.none
    # training images that set the activation ranges of `static`
    calibration_images: int = bounded(256, POSITIVE)
    latency_runs: int = bounded(20, POSITIVE)  # timed repetitions per batch size (median reported)
    register: bool = False  # register the logged ONNX model in the MLflow model registry
    model_name: str = "image-classifier"  # the registered model's name (export.register=true)


STAGE_NAMES = ("data", "sanity", "train", "calibrate", "validate", "export")  # in the order they run


@dataclass
class TrialConfig:
    """Set by the Optuna sweeper (hydra/sweeper=optuna) in each job it launches; null outside a sweep."""

    number: int | None = None  # this job's trial in the study
    study: str | None = None  # the study's name (hydra.sweeper.study_name)
    storage: str | None = None  # the study's storage URL


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
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    # the stages to run, in order; a stage runs alone when its inputs are given
    stages: list[str] = field(default_factory=lambda: list(STAGE_NAMES))
    seed: int = 42  # seeds Python, NumPy and torch (Lightning's seed_everything) for the run
    output_dir: str = MISSING  # the run's folder (Hydra's run or sweep folder by default)
    ckpt_path: str | None = None  # validate/export this checkpoint
    from_run: str | None = None  # validate/export the best checkpoint of this MLflow run
    onnx_path: str | None = None  # validate this ONNX file
    resume: Any = None  # true: the newest KILLED/FAILED pipeline run; or a parent run id
    # The val metric that picks the best checkpoint, drives early stopping and is returned to sweepers:
    # auto (val/bal_acc when the training classes are imbalanced, else val/acc; val/map for several labels
    # an image), or one of VAL_METRICS.
    objective: str = "auto"
    objective_mode: ObjectiveMode = ObjectiveMode.auto  # auto (min for a loss, else max), max or min


# lightning.Trainer's arguments are passed through as written (conf/trainer/), not fields: their bounds here
TRAINER_RULES = {"max_epochs": (EPOCHS,), "num_nodes": (POSITIVE,)}


def bounds() -> list[tuple[str, Rule]]:
    """Every (dotted key, rule) the config's values must keep, in the schema's order."""
    found = []
    for section in fields(Config):
        kind = section.type
        if isinstance(kind, type) and is_dataclass(kind):
            found += [(f"{section.name}.{f.name}", rule) for f in fields(kind) for rule in rules_of(f)]
    return found + [(f"trainer.{name}", r) for name, rules in TRAINER_RULES.items() for r in rules]


# what the train stage logs after each epoch's validation (pipeline.models.module), what can pick a
# checkpoint; val/map and val/map_micro for several labels an image, where val/acc and val/bal_acc are not
VAL_METRICS = ("val/acc", "val/bal_acc", "val/f1_macro", "val/loss", "val/map", "val/map_micro")
SINGLE_LABEL_ONLY, MULTILABEL_ONLY = ("val/acc", "val/bal_acc"), ("val/map", "val/map_micro")


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
