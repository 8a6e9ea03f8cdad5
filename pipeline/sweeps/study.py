"""The study a sweep fills, seen from the sweeper and from each trial's job: where it is stored, which way
it optimizes, and the pruning callback a trial's training reports to. Both sides open it the same way, from
the sweeper's config (hydra.sweeper) and the trial the sweeper put in the job's config (`trial`).
"""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from pipeline.atomic import one_at_a_time
from pipeline.errors import PipelineError
from pipeline.recipe import objective_direction

STUDY_FILE = "optuna.db"  # beside the embedded MLflow store's mlflow.db
MLFLOW_RUN = "mlflow_run_id"  # the trial's user attribute naming its MLflow parent run
OBJECTIVE = "objective"  # the trial's user attribute naming the metric its value is (objective=auto resolved)


@dataclass(frozen=True)
class Pruned:
    """What a pruned trial's job returns to the sweeper instead of the objective."""

    epoch: int


def storage_url(storage: str | None, tracking_dir: str) -> str:
    """The study's storage: as configured, else SQLite in the MLflow store's folder (absolute, so jobs that
    start elsewhere, such as SLURM's, open the same file)."""
    if storage:
        return storage
    folder = Path(tracking_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / STUDY_FILE}"


def direction(objective: str, mode: str) -> str:
    """maximize or minimize, from the pipeline's resolved objective and objective_mode."""
    return "maximize" if objective_direction(objective, mode) == "max" else "minimize"


def load_storage(url: str):
    """Optuna's storage for a URL: a `.log` file is Optuna's journal (safe on shared file systems without
    locks, e.g. for SLURM jobs), anything else a database URL. One PipelineError line when it cannot be
    opened (SQLAlchemy and the file system raise many types; each means that)."""
    import optuna

    try:
        if url.endswith(".log") and "://" not in url:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
        with one_at_a_time(url):
            return optuna.storages.get_storage(url)
    except Exception as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        hint = (
            f"; a database file is named as sqlite:///{Path(url).resolve()}, a journal file ends in .log"
            if "://" not in url and not url.endswith(".log")
            else ""
        )
        raise PipelineError(f"hydra.sweeper.storage={url}: Optuna cannot open it ({reason}){hint}") from err


def open_trial(trial: DictConfig, pruner=None):
    """The job's trial (`trial.number` of `trial.study` in `trial.storage`), to report to."""
    import optuna

    storage = load_storage(trial.storage)
    study = optuna.load_study(study_name=trial.study, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(trial.study)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))


def record_run(trial: DictConfig, run_id: str) -> None:
    """The trial's MLflow parent run, as a user attribute the sweep's summary and the dashboard show."""
    open_trial(trial).set_user_attr(MLFLOW_RUN, run_id)


def record_objective(trial: DictConfig, name: str) -> None:
    """The metric the trial's value is, as its run resolved it: the study's metric is named after it."""
    open_trial(trial).set_user_attr(OBJECTIVE, name)


def pruning_callback(cfg: DictConfig, objective: str):
    """optuna-integration's Lightning callback reporting `objective` after each validation to this job's
    trial, judged by the sweep's pruner (hydra.sweeper.pruner); None outside a sweep or without a pruner."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    if cfg.trial.number is None or not HydraConfig.initialized():
        return None
    pruner = HydraConfig.get().sweeper.get("pruner")
    if pruner is None:
        return None
    from optuna_integration import PyTorchLightningPruningCallback

    return PyTorchLightningPruningCallback(open_trial(cfg.trial, instantiate(pruner)), monitor=objective)
