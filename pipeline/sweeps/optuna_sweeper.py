"""hydra/sweeper=optuna: a sweep that fills a persistent Optuna study. Each batch of trials is asked of the
study, launched as pipeline jobs through the configured Hydra launcher (basic, joblib, SLURM) and told its
result: the objective, PRUNED when its training was stopped, FAIL when its job failed. Running the same
command again continues the study until it holds `n_trials` finished trials; trials a stopped sweep left
running are marked failed and their parameters tried again first. Two sweeps may fill one study at once:
each counts the other's running trials (pipeline.sweeps.lease) and neither takes them over.

Optuna is imported when the sweep starts, not when the CLI loads this module.
"""

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError
from pipeline.recipe import resolved_objective
from pipeline.sweeps.lease import Lease, abandoned, held_by_others
from pipeline.sweeps.search_space import as_override, search_space
from pipeline.sweeps.study import MLFLOW_RUN, OBJECTIVE, Pruned, direction, load_storage, storage_url

log = logging.getLogger("pipeline.sweeps")


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        sampler: Any,  # an optuna sampler class with its settings but the seed (Hydra's _partial_)
        pruner: Any,  # an optuna pruner, instantiated by Hydra; None: no pruning
        params: DictConfig | None,
    ):
        self.study_name, self.storage, self.n_trials, self.n_jobs = study_name, storage, n_trials, n_jobs
        self.sampler, self.pruner = sampler, pruner
        self.params = {str(k): str(v) for k, v in (params or {}).items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        for name, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or value < 1:
                raise PipelineError(f"hydra.sweeper.{name} must be a whole number >= 1, got {value}")
        space, fixed = search_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        url = storage_url(self.storage, self.config.tracking.dir)
        objective = resolved_objective(self.config.objective, imbalanced=False)
        study = self.open_study(url, objective)
        objective = named_by_trials(study, objective)  # a study run before, on imbalanced classes
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(
            "Optuna study %s in %s: %d of %d trials finished",
            self.study_name,
            url,
            done(study),
            self.n_trials,
        )
        while (left := self.n_trials - done(study) - len(held_by_others(study))) > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            batch = [
                [*fixed, *params_of(t), *trial_overrides(t.number, self.study_name, url)] for t in trials
            ]
            try:
                self.validate_batch_is_legal(batch)
                with Lease(trials):
                    returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            except BaseException as err:
                stopped(study, trials, retry=isinstance(err, KeyboardInterrupt))
                raise
            failures = [
                err for trial, job in zip(trials, returns, strict=True) if (err := tell(study, trial, job))
            ]
            objective = named_by_trials(study, objective)
            if failures:  # every trial of the batch is told first: none is left running
                raise failures[0]
        if others := held_by_others(study):
            log.info("%d trials of study %s are still running in another sweep", len(others), self.study_name)
        write_results(study, sweep_dir, objective)
        self.score_the_best_on_test(study, fixed)

    def score_the_best_on_test(self, study, fixed: list[str]) -> None:
        """The test split, scored once for the sweep's best trial (its checkpoint, from its MLflow run) as
        one more job: trials are compared on val only, or picking by test would make it a second val."""
        import optuna

        stages = set(self.config.stages)
        complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
        if (
            not {"train", "validate"} <= stages
            or not complete
            or MLFLOW_RUN not in study.best_trial.user_attrs
        ):
            return
        best = study.best_trial
        log.info("scoring trial %d, the best, on the test split", best.number)
        kept = [o for o in fixed if o.split("=")[0].lstrip("+~") not in FINAL_JOB_SETS]
        final = [
            *kept, *params_of(best), "stages=[validate]", f"from_run={best.user_attrs[MLFLOW_RUN]}",
            f"tracking.run_name={self.study_name}-best-trial-{best.number}",
        ]  # fmt: skip
        (job,) = self.launcher.launch([final], initial_job_idx=len(study.trials))
        _ = job.return_value  # raises the job's own error when it failed

    def open_study(self, url: str, objective: str):
        import optuna

        study = optuna.create_study(
            study_name=self.study_name,
            storage=load_storage(url),
            pruner=self.pruner or optuna.pruners.NopPruner(),
            direction=direction(objective, self.config.objective_mode),
            load_if_exists=True,
        )
        name_metric(study, objective)
        # seeded anew for each run of the command: the same seed would repeat the first run's random trials
        study.sampler = self.sampler(seed=self.config.seed + len(study.trials))
        if left_running := abandoned(study):
            log.warning(
                "%d trials of a stopped sweep were left running: marked failed, retried first",
                len(left_running),
            )
            stopped(study, left_running, retry=True)
        return study


FINAL_JOB_SETS = {
    "stages",
    "from_run",
    "ckpt_path",
    "tracking.run_name",
}  # the best trial's test job sets these

# Hydra instantiates sweepers only from the hydra_plugins namespace, which it fills by a scan that misses
# editable installs: register() names this module as such a plugin module (conf/hydra/sweeper/optuna.yaml).
PLUGIN_MODULE = "hydra_plugins.pipeline_optuna_sweeper"
OptunaSweeper.__module__ = PLUGIN_MODULE


def register() -> None:
    sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])
    Plugins.instance().register(OptunaSweeper)


def done(study) -> int:
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=finished))


def params_of(trial) -> list[str]:
    return [as_override(key, value) for key, value in trial.params.items()]


def named_by_trials(study, objective: str) -> str:
    """The metric the trials' values are (objective=auto is val/bal_acc on imbalanced classes, which only a
    trial's data stage knows), made the study's metric name when it differs from `objective`."""
    named = {t.user_attrs[OBJECTIVE] for t in study.get_trials(deepcopy=False) if OBJECTIVE in t.user_attrs}
    if len(named) != 1 or objective in named:
        return objective
    (name,) = named
    log.info("the trials optimize %s: the study's metric is named after it", name)
    name_metric(study, name)
    return name


def name_metric(study, name: str) -> None:
    """The study's metric name, the dashboard's axis (experimental in Optuna 5, there since 3.2)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([name])


def trial_overrides(number: int, study_name: str, url: str) -> list[str]:
    """What tells a job it is a trial, and of which study (pipeline.sweeps.study.open_trial)."""
    quoted = url.replace("\\", "\\\\").replace("'", "\\'")
    return [f"trial.number={number}", f"trial.study='{study_name}'", f"trial.storage='{quoted}'"]


def tell(study, trial, job) -> BaseException | None:
    """The job's result to the study: its objective, PRUNED, or FAIL (returning the job's error, which stops
    the sweep)."""
    import optuna

    try:
        value = job.return_value  # raises the job's own error when it failed
    except BaseException as err:
        told(study, trial.number, state=optuna.trial.TrialState.FAIL)
        return err
    if isinstance(value, Pruned):
        told(study, trial.number, state=optuna.trial.TrialState.PRUNED)
        log.info("trial %d pruned after epoch %d", trial.number, value.epoch)
    elif value is None:
        told(study, trial.number, state=optuna.trial.TrialState.FAIL)
        return PipelineError(f"trial {trial.number} returned no objective: does a stage produce it?")
    else:
        told(study, trial.number, float(value))
    return None


def told(study, number: int, value: float | None = None, state=None) -> bool:
    """study.tell; False, with a warning, when another sweep finished the trial first: it judged the trial
    abandoned (its lease had lapsed, say while this machine slept) and asked its parameters again."""
    if study.get_trials(deepcopy=False)[number].state.is_finished():
        log.warning("trial %d was finished by another sweep: its result here is not recorded", number)
        return False
    study.tell(number, value, state=state, skip_if_finished=True)  # skip: finished since the line above
    return True


def stopped(study, trials: list, retry: bool) -> None:
    """Trials whose jobs did not finish: failed; with `retry`, their parameters asked again next."""
    import optuna

    for trial in trials:
        if told(study, trial.number, state=optuna.trial.TrialState.FAIL) and retry:
            study.enqueue_trial(trial.params, skip_if_exists=False)


def write_results(study, sweep_dir: Path, objective: str) -> None:
    """optimization_results.yaml in the sweep folder, and the one-line summary."""
    import optuna

    if not study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        log.warning(
            "no trial of study %s completed (%d trials): no best", study.study_name, len(study.trials)
        )
        return
    best = study.best_trial
    results: dict[str, Any] = {"name": "optuna", "best_params": best.params, "best_value": best.value}
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    log.info(
        "best %s %.6g: trial %d of study %s (%d trials), MLflow run %s, %s",
        objective, best.value, best.number, study.study_name, len(study.trials),
        best.user_attrs.get(MLFLOW_RUN, "unknown"), " ".join(params_of(best)),
    )  # fmt: skip
