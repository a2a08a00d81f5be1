"""What every keras-tuner sweep here shares: trials that know their folder and print
a line when they end, and a one-line error for a tuner state that cannot be read."""

import json
import math
import os
import sys
import time

from great_tf.errors import GreatError, TrainingDiverged


SWEEP_INTERRUPTED = ("run the same command again to continue the sweep: finished trials are kept and "
                     "the interrupted one continues from its last finished epoch")


def run_cli(main):
    """`great_tf.runs.run_cli` for a sweep, whose interrupt says how a sweep continues (it has no
    --resume: the same command resumes it)."""
    from trainers import flags

    return flags.run_cli(main, interrupted_hint=SWEEP_INTERRUPTED)


def add_sweep_flags(parser):
    """The flags every sweep takes after its own: where, which seed, tuner state, verbosity and
    the runtime (strategy) flags of the trainers."""
    from trainers import flags

    parser.add_argument("--data-dir")
    parser.add_argument("--logdir")
    parser.add_argument("--seed", type=flags.seed_type, default=0)
    parser.add_argument("--overwrite", action="store_true", help="discard saved tuner state")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    return flags.add_runtime_flags(parser)


def with_trial_dirs(tuner_class):
    """`tuner_class` whose trials hand their folder to `HyperModel.fit` (as `trial_dir`), where
    the trial keeps its per-epoch checkpoints, so an interrupted trial continues where it stood.
    Each trial prints one line when it ends (`trial_line`): a sweep of hours shows its progress
    even with keras-tuner's own output off."""

    class TrialDirTuner(tuner_class):
        def run_trial(self, trial, *args, **kwargs):
            try:
                return super().run_trial(trial, *args, trial_dir=self.get_trial_dir(trial.trial_id),
                                         **kwargs)
            except TrainingDiverged as err:
                # The trial fails (not retried) and the sweep goes on; its line gives the reason.
                import keras_tuner as kt

                self._trial_failure = str(err)
                raise kt.errors.FailedTrialError(str(err)) from None

        def _try_run_and_update_trial(self, trial, *args, **kwargs):
            # keras-tuner prints the traceback of every failed trial (its DEBUG, on by default);
            # `on_trial_end` prints it for the failures that are not a one-line divergence.
            from keras_tuner.src import config

            debug, config.DEBUG = config.DEBUG, False
            try:
                return super()._try_run_and_update_trial(trial, *args, **kwargs)
            finally:
                config.DEBUG = debug

        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            self._trial_started = time.time()
            self._trial_failure = None

        def on_trial_end(self, trial):
            super().on_trial_end(trial)  # records the trial's status and score in the oracle
            seconds = time.time() - getattr(self, "_trial_started", time.time())
            if trial.status != "COMPLETED" and trial.message and not getattr(self, "_trial_failure", None):
                print(trial.message, file=sys.stderr, flush=True)  # an unforeseen error: all of it
            print(trial_line(self.oracle, trial, seconds, getattr(self, "_trial_failure", None)),
                  flush=True)

        def reload(self):
            super().reload()
            rebuild_grid_order(self.oracle)

    TrialDirTuner.__name__ = tuner_class.__name__
    return TrialDirTuner


def planned_trials(oracle):
    """How many trials the sweep runs: the grid's size (capped by max_trials), or max_trials;
    None for a grid with a range that is not a list of values."""
    from keras_tuner.src.tuners.gridsearch import GridSearchOracle

    if not isinstance(oracle, GridSearchOracle):
        return oracle.max_trials
    sizes = [len(hp.values) if hasattr(hp, "values") else None for hp in oracle.hyperparameters.space]
    if None in sizes:
        return oracle.max_trials
    return min(math.prod(sizes), oracle.max_trials or math.inf)


def trial_line(oracle, trial, seconds, failure=None):
    """`trial 3 of 5: alpha 0.1: val_accuracy 66.40 (best so far 66.40); 12.9 min`: one finished
    trial, its number of the planned total, its settings, its score and the sweep's best. The time
    is this process's: a trial resumed after an interruption reports only its rest. A failed trial
    gives its `failure` (e.g. the step where its loss became nan)."""
    total = planned_trials(oracle)
    number = f"trial {int(trial.trial_id) + 1}" + (f" of {total}" if total else "")
    settings = ", ".join(f"{name} {value:g}" if isinstance(value, (int, float)) else f"{name} {value}"
                         for name, value in trial.hyperparameters.values.items())
    name = oracle.objective.name
    if trial.status != "COMPLETED" or not trial.metrics.exists(name):
        reason = f" ({failure})" if failure else ""
        return f"{number}: {settings}: {str(trial.status).lower()}{reason}; {seconds / 60:.1f} min"
    best = oracle.get_best_trials(1)[0].metrics.get_last_value(name)
    return (f"{number}: {settings}: {name} {trial.metrics.get_last_value(name):.2f} "
            f"(best so far {best:.2f}); {seconds / 60:.1f} min")


def rebuild_grid_order(oracle):
    """keras-tuner (1.4.8) does not save a grid search's order of tried combinations, so a grid
    sweep resumed in a new process fails with a KeyError once its first trial there ends
    (keras-team/keras-tuner#1055). The order is rebuilt from the reloaded trials: all of them in
    grid order, each one's successor looked for again (one already tried is skipped)."""
    import functools

    from keras_tuner.src.tuners.gridsearch import GridSearchOracle, LinkedList

    if not isinstance(oracle, GridSearchOracle):
        return
    trials = sorted(oracle.trials.values(), key=functools.cmp_to_key(
        lambda a, b: oracle._compare(a.hyperparameters.values, b.hyperparameters.values)))
    oracle._ordered_ids = LinkedList()
    for trial in trials:
        oracle._ordered_ids.insert(trial.trial_id)
    oracle._populate_next = [trial.trial_id for trial in trials]


def make_tuner(hypermodel, objective, tuner, max_trials, logdir, project, overwrite, seed):
    """A grid or Bayesian keras-tuner over `hypermodel` with its state in `<logdir>/tuner/<project>`;
    a one-line error if that state is unreadable."""
    import keras_tuner as kt

    # A diverged trial fails alone: keras-tuner's default would end the sweep after 3 failed trials
    # in a row (a grid corner of large weights). Other failures print their traceback, and a sweep
    # that finishes no trial ends in one line.
    common = {"objective": objective, "directory": os.path.join(logdir, "tuner"),
              "project_name": project, "overwrite": overwrite, "seed": seed,
              "max_consecutive_failed_trials": None}
    try:
        if tuner == "grid":
            return with_trial_dirs(kt.GridSearch)(hypermodel, max_trials=max_trials, **common)
        return with_trial_dirs(kt.BayesianOptimization)(hypermodel, max_trials=max_trials or 10, **common)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, RuntimeError) as err:
        folder = os.path.join(logdir, "tuner", project)
        raise GreatError(f"the tuner state in {folder} is unreadable ({type(err).__name__}; a sweep "
                         f"killed while saving it?): run with --overwrite to start this sweep over") from None


def completed_trials(tuner, metrics):
    """[(trial number from 1, hyperparameters, {metric: last value})] of the finished trials that
    recorded every one of `metrics`, in run order."""
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id)):
        if trial.status != "COMPLETED" or not all(trial.metrics.exists(m) for m in metrics):
            continue
        rows.append((int(trial.trial_id) + 1, dict(trial.hyperparameters.values),
                     {m: trial.metrics.get_last_value(m) for m in metrics}))
    return rows
