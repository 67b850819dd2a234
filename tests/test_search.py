"""Hyperparameter search: Hydra's Optuna sweeper through ``hparams_search=...``.

The search configs, the check before the first trial, the study summary and plot, in process;
then searches run as a user runs them (``python src/train.py -m hparams_search=...``), with
fast_dev_run-sized trials on the bundled digits.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from classicnets.runs.pipeline import train
from classicnets.runs.plots import SweepPoint, plot_sweep
from classicnets.runs.study import open_study, trial_overrides
from classicnets.runs.sweep import (
    INTERRUPTED_ATTR,
    PLOT_NAME,
    SweepConfigError,
    _grid_params,
    check_sweep,
    metric_direction,
    summarise_study,
    summarise_sweep,
)

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "src" / "train.py")
SEARCHES = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))
MakeCfg = Callable[..., DictConfig]
# one train/val/test batch per trial, nothing but the trial's metrics.json written
TINY = ("debug=fdr", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
PNG = b"\x89PNG\r\n\x1a\n"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _search(cfg: DictConfig, **params: str) -> DictConfig:
    """``cfg`` with its sweeper's search space extended (as a search config would)."""
    with read_write(cfg.hydra), open_dict(cfg):  # Hydra's node is read-only once composed
        for key, value in params.items():
            cfg.hydra.sweeper.params[key] = value
    return cfg


# ------------------------------------------------------------------ configs and checks


def test_metric_direction_from_the_name() -> None:
    assert metric_direction("val/acc_best") == "maximize"
    assert metric_direction("test/acc_top5") == "maximize"
    assert metric_direction("val/loss") == "minimize"
    assert metric_direction("val/error") == "minimize"
    assert metric_direction("time/epoch_s") is None


@pytest.mark.parametrize("name", SEARCHES)
def test_search_configs_name_real_keys_and_a_stable_study(name: str, make_cfg: MakeCfg) -> None:
    cfg = make_cfg(f"hparams_search={name}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("TrialDirOptunaSweeper")
    assert sweeper.study_name == name and sweeper.params
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == cfg.seed  # seeded
    if isinstance(cfg.optimized_metric, str):
        assert sweeper.direction == metric_direction(cfg.optimized_metric)
    else:  # several objectives: a direction each, the accuracy's to maximise
        assert len(sweeper.direction) == len(cfg.optimized_metric) >= 2
        assert [metric_direction(m) or d for m, d in zip(cfg.optimized_metric,
                                                         sweeper.direction)] == list(
            sweeper.direction)
    # a relaunch finds the same study: no launch time in the sweep dir, the database in it
    raw = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert raw["sweep"]["dir"] == "${paths.log_dir}/${task_name}/search/${hydra.sweeper.study_name}"
    assert raw["sweeper"]["storage"] == "sqlite:///${hydra.sweep.dir}/optuna.db"
    check_sweep(cfg)  # every searched key exists in the recipe it is composed with


def test_a_misspelt_key_is_refused_with_the_valid_ones(make_cfg: MakeCfg) -> None:
    cfg = _search(make_cfg("hparams_search=digits_sgd"),
                  **{"optimizer.learning_rate": "tag(log, interval(0.01, 0.1))"})
    with pytest.raises(SweepConfigError, match="optimizer.learning_rate") as err:
        check_sweep(cfg)
    assert "lr, momentum, nesterov, weight_decay" in str(err.value)


def test_a_missing_group_option_or_top_level_key_is_refused(make_cfg: MakeCfg) -> None:
    cfg = _search(make_cfg("hparams_search=digits_sgd"), model="choice(lenet5, lenet6)")
    with pytest.raises(SweepConfigError, match="no option lenet6; its options: .*lenet5"):
        check_sweep(cfg)
    cfg = _search(make_cfg("hparams_search=digits_sgd"), **{"optimiser.lr": "interval(0, 1)"})
    with pytest.raises(SweepConfigError, match="Valid keys of the root config: .*optimizer"):
        check_sweep(cfg)


def test_vit_search_refuses_a_recipe_without_its_keys(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("hparams_search=vit_adamw", "experiment=resnet20_cifar10")
    with read_write(cfg.hydra), open_dict(cfg):  # ResNet-20's multistep has no warm-up
        del cfg.hydra.sweeper.params["scheduler.warmup_epochs"]
    with pytest.raises(SweepConfigError, match=r"model.drop_path_rate.*Valid keys of model"):
        check_sweep(cfg)  # stochastic depth: a ViT's key


def test_a_direction_against_the_metric_is_refused(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("hparams_search=digits_sgd", "hydra.sweeper.direction=minimize")
    with pytest.raises(SweepConfigError, match="set hydra.sweeper.direction=maximize"):
        check_sweep(cfg)
    check_sweep(make_cfg("hparams_search=digits_sgd", "hydra.sweeper.direction=minimize",
                         "optimized_metric=val/loss"))


def test_a_relaunch_must_keep_direction_and_metric(make_cfg: MakeCfg, tmp_path: Path) -> None:
    def launch(*overrides: str) -> DictConfig:
        cfg = make_cfg("hparams_search=digits_sgd", *overrides)
        with read_write(cfg.hydra), open_dict(cfg):  # the sweep dir as the sweeper sees it
            cfg.hydra.sweep.dir = str(tmp_path / "study")
        return cfg

    open_study(launch())
    assert (tmp_path / "study" / "optuna.db").is_file()  # folder made for SQLite
    open_study(launch())  # the same search again: continues
    with pytest.raises(SweepConfigError, match="created to maximize"):
        open_study(launch("hydra.sweeper.direction=minimize", "optimized_metric=val/loss"))
    with pytest.raises(SweepConfigError, match="optimizes val/acc_best; this launch optimizes"):
        open_study(launch("optimized_metric=val/acc"))


def test_each_trial_s_values_become_its_overrides() -> None:
    # the sweeper adds hydra.sweep.subdir=<trial number> (test_search_finishes_... checks the
    # directories); here the values in Hydra's syntax, the command line's fixed ones after them
    params = {"optimizer.lr": 0.1, "model": "lenet5", "model.pretrained": None,
              "trainer.deterministic": True, "data.batch_size": 64}
    assert trial_overrides(params, ["seed=1"]) == [
        "optimizer.lr=0.1", "model=lenet5", "model.pretrained=null",
        "trainer.deterministic=true", "data.batch_size=64", "seed=1"]


def test_a_diverged_run_returns_no_value(make_cfg: MakeCfg) -> None:
    """Optuna refuses NaN as a trial's value (the plugin would then crash the whole search);
    None makes the trial fail and the search go on."""
    cfg = make_cfg(*TINY, "optimizer.lr=1e30", "optimized_metric=val/loss")
    value, metrics = train(cfg)
    assert value is None and metrics["val/loss"] != metrics["val/loss"]  # NaN


# ------------------------------------------------------------------ summaries and plots


def _job(sweep: Path, num: int, overrides: list[str], metrics: dict[str, float] | None,
         metric: str = "val/acc_best") -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(
            {"overrides": overrides, "optimized_metric": metric, "metrics": metrics}))


def test_study_summary_lists_every_trial_and_marks_the_best(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    log_lr = optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)
    batch = optuna.distributions.CategoricalDistribution([32, 64])
    for n, acc in enumerate([0.9, 0.95, None]):
        trial = study.ask({"optimizer.lr": log_lr, "data.batch_size": batch})
        assert trial.number == n
        _job(tmp_path, n, [f"optimizer.lr={trial.params['optimizer.lr']}",
                           f"data.batch_size={trial.params['data.batch_size']}", "seed=1"],
             None if acc is None else {"val/acc_best": acc, "test/acc": acc - 0.1})
        if acc is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, acc)
    stopped = study.ask({"optimizer.lr": log_lr, "data.batch_size": batch})
    stopped.set_user_attr(INTERRUPTED_ATTR, True)
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    study.ask({"optimizer.lr": log_lr, "data.batch_size": batch})  # running elsewhere

    rows = summarise_study(tmp_path, storage, "s", "val/acc_best")
    assert [r["trial"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["state"] for r in rows] == ["complete", "complete", "fail", "interrupted",
                                          "running"]
    assert [r["best"] for r in rows] == ["", "yes", "", "", ""]
    with open(tmp_path / "sweep_summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert float(table[1]["value"]) == 0.95 and float(table[1]["test/acc"]) == 0.85
    assert table[2]["value"] == "" and "data.batch_size" in table[0]
    md = (tmp_path / "sweep_summary.md").read_text()
    assert "Best: trial 1, val/acc_best = 0.95" in md and "Every trial: seed=1" in md
    assert "5 trials: 2 complete, 1 fail, 1 interrupted, 1 running" in md
    assert (tmp_path / PLOT_NAME).read_bytes().startswith(PNG)


def test_grid_summary_marks_the_best_job_and_plots_the_swept_values(tmp_path: Path) -> None:
    for num, lr, acc in [(0, "0.1", 0.9), (1, "0.01", 0.95), (2, "0.001", 0.8), (3, "1.0", None)]:
        _job(tmp_path, num, [f"optimizer.lr={lr}", "model=lenet5"],
             None if acc is None else {"val/acc_best": acc})
    params, scales = _grid_params([{"optimizer.lr": "0.1", "model": "lenet5"},
                                   {"optimizer.lr": "0.001", "model": "null"}])
    assert params[1] == {"optimizer.lr": 0.001, "model": "null"}  # numbers drawn as numbers
    assert scales == {"optimizer.lr": "log", "model": "categorical"}
    rows = summarise_sweep(tmp_path)  # the metric: each job's optimized_metric
    assert [r["best"] for r in rows] == ["", "yes", "", ""]
    assert "Best (maximize val/acc_best): job 1" in (tmp_path / "sweep_summary.md").read_text()
    assert (tmp_path / PLOT_NAME).read_bytes().startswith(PNG)


def test_sweep_plot_draws_one_panel_per_parameter(tmp_path: Path) -> None:
    points = [SweepPoint(i, 0.5 + i / 10, {"lr": 10.0 ** -i, "bs": [32, 64][i % 2], "opt": "a"})
              for i in range(4)]
    path = plot_sweep(tmp_path / "p.png", "val/acc", points,
                      {"lr": "log", "bs": "categorical", "opt": "categorical"}, best=3)
    assert path is not None and path.read_bytes().startswith(PNG)
    assert plot_sweep(tmp_path / "none.png", "val/acc", [], {"lr": "log"}) is None


# ------------------------------------------------------------------ searches, as a user runs them


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for key in ("CLASSICNETS_RUN_NAME", "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    return env


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, TRAIN, "-m", *args], cwd=tmp_path, text=True,
                          capture_output=True, timeout=400, env=_env(tmp_path))


def _table(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_summary.csv") as fh:
        return list(csv.DictReader(fh))


def _params(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[k] for k in ("optimizer.lr", "optimizer.weight_decay", "data.batch_size",
                                  "module.label_smoothing"))


@pytest.mark.slow
def test_search_finishes_then_a_relaunch_continues_the_study(tmp_path: Path) -> None:
    search = ["hparams_search=digits_sgd", *TINY, "hydra.sweeper.n_jobs=1"]
    first = _run([*search, "hydra.sweeper.n_trials=10",
                  "hydra.sweeper.sampler.n_startup_trials=5"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Best value:" in first.stdout + first.stderr
    sweep = tmp_path / "logs" / "debug" / "search" / "digits_sgd"
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    rows = _table(sweep)
    assert [int(r["trial"]) for r in rows] == list(range(10))
    assert {r["state"] for r in rows} == {"complete"}
    (top,) = [r for r in rows if r["best"] == "yes"]
    assert float(top["value"]) == best.best_value == max(float(r["value"]) for r in rows)
    assert (sweep / PLOT_NAME).read_bytes().startswith(PNG)
    first_job = (sweep / "0" / "metrics.json").read_text()

    # relaunched in its random phase: a replayed seed would draw trials 0 and 1 again
    again = _run([*search, "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.sampler.n_startup_trials=100"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = _table(sweep)
    assert [int(r["trial"]) for r in rows] == list(range(12))
    assert len({_params(r) for r in rows}) == 12  # no trial repeated
    assert sorted(int(p.name) for p in sweep.iterdir() if p.name.isdigit()) == list(range(12))
    assert (sweep / "0" / "metrics.json").read_text() == first_job  # earlier trials kept
    for n in (10, 11):  # each new trial's job wrote where its number says, with its values
        job = json.loads((sweep / str(n) / "metrics.json").read_text())
        assert f"optimizer.lr={rows[n]['optimizer.lr']}" in job["overrides"]


def test_a_misspelt_key_stops_the_search_before_the_first_trial(tmp_path: Path) -> None:
    conf = tmp_path / "myconf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - digits_sgd\n"
        "hydra:\n  sweeper:\n    study_name: typo\n    params:\n"
        "      optimizer.weight_decay: tag(log, interval(1e-5, 1e-3))\n"
        "      optimizer.mommentum: interval(0.8, 0.99)\n")
    proc = _run(["--config-dir", str(tmp_path / "myconf"), "hparams_search=typo", *TINY],
                tmp_path)
    assert proc.returncode != 0
    assert "optimizer.mommentum" in proc.stderr and "Valid keys of optimizer" in proc.stderr
    assert "lr, momentum, nesterov, weight_decay" in proc.stderr
    assert "Traceback" not in proc.stderr  # the message alone
    assert not (tmp_path / "logs").exists()  # no study, no trial


def _enqueue(tmp_path: Path, study_name: str, *precisions: str) -> None:
    """Queue the next trials of a study with these values (Optuna's ``enqueue_trial``)."""
    folder = tmp_path / "logs" / "debug" / "search" / study_name
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name=study_name, storage=f"sqlite:///{folder}/optuna.db",
                                direction="maximize")
    with warnings.catch_warnings():  # enqueue_trial: "experimental" in Optuna 2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for precision in precisions:
            study.enqueue_trial({"trainer.precision": precision})


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    conf = tmp_path / "myconf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "precision.yaml").write_text(  # a user's own search config, next to ours
        "# @package _global_\n"
        "defaults:\n  - override /hydra/sweeper: study\n"
        "hydra:\n  sweep:\n"
        "    dir: ${paths.log_dir}/${task_name}/search/${hydra.sweeper.study_name}\n"
        "  sweeper:\n    direction: maximize\n    n_trials: 2\n"
        "    params:\n      trainer.precision: choice(32-true, bogus, wrong)\n")
    search = ["--config-dir", str(tmp_path / "myconf"), "hparams_search=precision", *TINY]
    # Lightning refuses the precision 'bogus': that trial fails, the next one runs
    _enqueue(tmp_path, "failing", "bogus", "32-true")
    proc = _run([*search, "hydra.sweeper.study_name=failing"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _table(tmp_path / "logs" / "debug" / "search" / "failing")
    assert [(r["state"], r["best"]) for r in rows] == [("fail", ""), ("complete", "yes")]

    # every trial failed: an error that says so (not Optuna's "No trials are completed yet"),
    # and the summary all the same
    _enqueue(tmp_path, "all_fail", "bogus", "wrong")
    proc = _run([*search, "hydra.sweeper.study_name=all_fail"], tmp_path)
    assert proc.returncode != 0
    assert "no trial of study 'all_fail' completed" in proc.stderr
    rows = _table(tmp_path / "logs" / "debug" / "search" / "all_fail")
    assert [r["state"] for r in rows] == ["fail", "fail"]


@pytest.mark.slow
def test_search_trials_with_ddp_sim(tmp_path: Path) -> None:
    # trainer.devices=2 again: debug=fdr (in TINY) sets one device
    proc = _run(["hparams_search=digits_sgd", *TINY, "trainer=ddp_sim", "trainer.devices=2",
                 "hydra.sweeper.n_trials=2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # per trial
    logs = tmp_path / "logs"
    assert [p.name for p in logs.iterdir()] == ["debug"]
    sweep = logs / "debug" / "search" / "digits_sgd"
    assert [r["state"] for r in _table(sweep)] == ["complete", "complete"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert [p.name for p in (logs / "debug").iterdir()] == ["search"]  # no stray runs of ranks
