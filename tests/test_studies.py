"""classicnets' Optuna sweeper on current Optuna: the search space, objectives, pruner and
storage checked before the first trial (in process); then, as a user runs them: pruning,
several workers on one study (a PostgreSQL server, a journal file), a worker killed mid-trial,
trials pulled as slots free up with the parallel launcher, and optuna-dashboard reading a study.

PostgreSQL: ``tests/scripts/postgres_cluster.sh`` starts a throwaway server (``.ci/run`` does);
without one (``CLASSICNETS_TEST_POSTGRES_URL`` unset and no ``/tmp/classicnets-postgres/url``)
those tests skip with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from omegaconf import DictConfig, open_dict, read_write

from classicnets.runs.search import sampler_seed
from classicnets.runs.study import check_objectives, distributions, open_study
from classicnets.runs.sweep import PARETO_PLOT, PLOT_NAME, summarise_study
from classicnets.studies import (
    EPOCHS_ATTR,
    MAX_EPOCHS_ATTR,
    StorageError,
    SweepConfigError,
    make_pruner,
    open_storage,
    redact_url,
)

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "src" / "train.py")
DOCS = REPO / "docs" / "training" / "sweeps.md"
MakeCfg = Callable[..., DictConfig]
# one train/val/test batch per trial
TINY = ("debug=fdr", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
# a few real epochs (pruning needs validations), nothing slow: no progress bar, no summary
SHORT = ("trainer.max_epochs=3", "+trainer.limit_train_batches=10", "+trainer.limit_val_batches=4",
         "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
         "extras.print_config=false", "logger=csv", "data.num_workers=0")
PNG = b"\x89PNG\r\n\x1a\n"
F, Int, C = (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution,
             optuna.distributions.CategoricalDistribution)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _postgres_url() -> str | None:
    url = os.environ.get("CLASSICNETS_TEST_POSTGRES_URL")
    saved = Path("/tmp/classicnets-postgres/url")
    if not url and saved.is_file():
        url = saved.read_text().strip()
    return url or None


def _postgres_problem() -> str | None:
    url = _postgres_url()
    if url is None:
        return ("no PostgreSQL server: start one with tests/scripts/postgres_cluster.sh (or set "
                "CLASSICNETS_TEST_POSTGRES_URL)")
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install 'classicnets[postgres]'"
    try:
        psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"),
                        connect_timeout=5).close()
    except Exception as err:
        return f"the PostgreSQL server at {redact_url(url)} does not answer: {err}"
    return None


POSTGRES_PROBLEM = _postgres_problem()
needs_postgres = pytest.mark.skipif(POSTGRES_PROBLEM is not None, reason=str(POSTGRES_PROBLEM))


# ------------------------------------------------------------------ before the first trial


def test_search_space_grammar_becomes_optuna_distributions() -> None:
    space, fixed = distributions(
        {"optimizer.lr": "tag(log, interval(1e-4, 1.0))", "module.label_smoothing":
         "interval(0.0, 0.2)", "data.batch_size": "choice(32, 64)", "trainer.max_epochs":
         "range(2, 8, 2)", "model.depth": "interval(2, 6)", "model": "choice(lenet5, resnet20)"},
        ["seed=3", "module.label_smoothing=0.1"])
    assert space == {"optimizer.lr": F(1e-4, 1.0, log=True), "data.batch_size": C([32, 64]),
                     "trainer.max_epochs": Int(2, 8, step=2), "model.depth": F(2.0, 6.0),
                     "model": C(["lenet5", "resnet20"])}
    assert fixed == ["seed=3", "module.label_smoothing=0.1"]  # a fixed value wins over the space
    with pytest.raises(SweepConfigError, match=r"optimizer.lr=tag\(log, interval\(0.0, 1.0\)\)"):
        distributions({"optimizer.lr": "tag(log, interval(0.0, 1.0))"})  # log from 0


def test_objectives_and_pruner_must_fit(make_cfg: MakeCfg) -> None:
    cfg = make_cfg("hparams_search=zoo_digits")
    assert check_objectives(cfg) == (["val/acc_best", "model/macs"], ["maximize", "minimize"])
    with pytest.raises(SweepConfigError, match=r"names 2 metric\(s\).*has 1 \(maximize\)"):
        check_objectives(make_cfg("hparams_search=zoo_digits", "hydra.sweeper.direction=maximize"))
    with pytest.raises(SweepConfigError, match="single-objective studies only"):
        check_objectives(make_cfg("hparams_search=zoo_digits", "hydra.sweeper.pruner=median"))
    with pytest.raises(SweepConfigError, match="one of none, median, successive_halving"):
        make_pruner("medain", {})
    with pytest.raises(SweepConfigError, match=r"pruner_args.n_warmup: MedianPruner.*n_warmup_"):
        make_pruner("median", {"n_warmup": 2})
    assert isinstance(make_pruner("hyperband", {"min_resource": 1}),
                      optuna.pruners.HyperbandPruner)


def test_a_relaunch_with_another_search_space_says_what_differs(make_cfg: MakeCfg,
                                                                  tmp_path: Path) -> None:
    def launch(**params: str) -> DictConfig:
        cfg = make_cfg("hparams_search=digits_sgd")
        with read_write(cfg.hydra), open_dict(cfg):
            cfg.hydra.sweep.dir = str(tmp_path / "study")
            for key, value in params.items():
                cfg.hydra.sweeper.params[key] = value
        return cfg

    assert open_study(launch()) == 0
    with pytest.raises(SweepConfigError) as err:
        open_study(launch(**{"optimizer.lr": "tag(log, interval(1e-2, 1.0))",
                             "optimizer.momentum": "interval(0.8, 0.99)"}))
    text = str(err.value)
    assert "optimizer.momentum is new" in text and "optimizer.lr: FloatDistribution(high=1.0, " \
        "log=True, low=0.001, step=None) -> FloatDistribution(high=1.0, log=True, low=0.01" in text
    assert "hydra.sweeper.study_name=<new name>" in text


def test_unreachable_storage_or_missing_driver_names_the_url_without_its_password() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://alice:s3cret@127.0.0.1:{port}/studies"
    with pytest.raises(StorageError) as err:
        open_storage(url)
    assert f"postgresql+psycopg://alice:***@127.0.0.1:{port}/studies" in str(err.value)
    assert "s3cret" not in str(err.value) and "server runs" in str(err.value)
    with pytest.raises(StorageError, match=r"mysql\+pymysql://bob:\*\*\*@db/x needs the Python "
                                           r"package 'pymysql'.*pip install pymysql") as err:
        open_storage("mysql+pymysql://bob:hunter2@db/x")
    assert "hunter2" not in str(err.value)


def test_relaunches_and_workers_draw_new_seeds() -> None:
    assert sampler_seed(12345, 0, 0) == 12345  # a new study: the seed as given
    assert sampler_seed(12345, 20, 0) == 12365  # a relaunch: past the trials drawn
    assert sampler_seed(12345, 0, 2) == 14345  # worker 2 of several
    assert sampler_seed(None, 20, 1) is None


# ------------------------------------------------------------------ summaries


def test_summary_shows_pruned_trials_the_epochs_saved_and_the_pareto_front(
        tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/one.db"
    study = optuna.create_study(study_name="p", storage=storage, direction="maximize")
    lr = {"optimizer.lr": F(1e-7, 1.0, log=True)}
    for value, epochs, pruned in ((0.9, 5, False), (0.1, 1, True), (0.95, 5, False)):
        trial = study.ask(lr)
        trial.set_user_attr(MAX_EPOCHS_ATTR, 5)
        trial.set_user_attr(EPOCHS_ATTR, epochs)
        trial.report(value, 1)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED if pruned else None,
                   values=None if pruned else value)
    rows = summarise_study(tmp_path, storage, "p", "val/acc_best")
    assert [(r["state"], r["epochs"], r["best"]) for r in rows] == [
        ("complete", 5, ""), ("pruned", 1, ""), ("complete", 5, "yes")]
    md = (tmp_path / "sweep_summary.md").read_text()
    assert "Pruned: 1 trial(s); epochs trained 11 of 15, 4 saved (27%)" in md
    assert (tmp_path / PLOT_NAME).read_bytes().startswith(PNG)

    many = tmp_path / "many"
    many.mkdir()
    storage = f"sqlite:///{many}/two.db"
    study = optuna.create_study(study_name="m", storage=storage,
                                directions=["maximize", "minimize"])
    for acc, macs in ((0.9, 400.0), (0.95, 4000.0), (0.8, 5000.0), (0.99, 9000.0)):
        trial = study.ask({"model": C(["a", "b"])})
        study.tell(trial, [acc, macs])
    rows = summarise_study(many, storage, "m", ["val/acc_best", "model/macs"])
    assert [r["pareto"] for r in rows] == ["yes", "yes", "", "yes"]  # 0.8 at 5000 is dominated
    with open(many / "sweep_summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert float(table[1]["model/macs"]) == 4000.0 and float(table[1]["val/acc_best"]) == 0.95
    md = (many / "sweep_summary.md").read_text()
    assert "maximize val/acc_best, minimize model/macs" in md
    assert "Pareto front (3 of 4 complete trials, column pareto): trials 0, 1, 3" in md
    assert (many / PARETO_PLOT).read_bytes().startswith(PNG)


# ------------------------------------------------------------------ searches, as a user runs them


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for key in ("CLASSICNETS_RUN_NAME", "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE",
                "SLURM_ARRAY_TASK_ID"):
        env.pop(key, None)
    return env


def _start(args: list[str], tmp_path: Path, log: str) -> subprocess.Popen[str]:
    out = open(tmp_path / log, "w")  # noqa: SIM115 (closed with the process, in _wait)
    return subprocess.Popen([sys.executable, TRAIN, "-m", *args], cwd=tmp_path, text=True,
                            stdout=out, stderr=subprocess.STDOUT, env=_env(tmp_path),
                            start_new_session=True)


def _wait(proc: subprocess.Popen[str], tmp_path: Path, log: str, timeout: float = 400) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = (tmp_path / log).read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def _run(args: list[str], tmp_path: Path, log: str = "search.log") -> str:
    return _wait(_start(args, tmp_path, log), tmp_path, log)


def _table(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_summary.csv") as fh:
        return list(csv.DictReader(fh))


def _lr_search(tmp_path: Path, name: str) -> list[str]:
    """A search config of a user's: the learning rate alone, one value that cannot learn."""
    conf = tmp_path / "myconf" / "hparams_search"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "lr.yaml").write_text(  # seed 42 draws 0.2, 1e-7, 1e-7, 0.2
        "# @package _global_\n"
        "defaults:\n  - override /optimizer: sgd\n  - override /hydra/sweeper: study\n"
        "optimized_metric: val/acc_best\n"
        "hydra:\n  sweep:\n"
        "    dir: ${paths.log_dir}/${task_name}/search/${hydra.sweeper.study_name}\n"
        "  sweeper:\n    direction: maximize\n    sampler:\n      seed: 42\n"
        "    params:\n      optimizer.lr: choice(1.0e-7, 0.2)\n")
    return ["--config-dir", str(tmp_path / "myconf"), "hparams_search=lr",
            f"hydra.sweeper.study_name={name}", "hydra.sweeper.sampler.n_startup_trials=100"]


@pytest.mark.slow
def test_pruning_stops_the_hopeless_trials_and_keeps_the_best(tmp_path: Path) -> None:
    """lr=1e-7 cannot learn: after the first trial that learns, each such trial is pruned after
    its first validation (its checkpoint, test and metrics.json kept, exit 0); the best value
    is the unpruned search's, on the same seed."""
    base = [*SHORT, "hydra.sweeper.n_trials=4"]
    _run([*_lr_search(tmp_path, "full"), *base], tmp_path, "full.log")
    out = _run([*_lr_search(tmp_path, "pruned"), *base, "hydra.sweeper.pruner=median",
                "+hydra.sweeper.pruner_args.n_startup_trials=1"], tmp_path, "pruned.log")
    search = tmp_path / "logs" / "train" / "search"
    full, pruned = _table(search / "full"), _table(search / "pruned")
    assert [r["optimizer.lr"] for r in full] == [r["optimizer.lr"] for r in pruned]  # same draws
    assert {r["state"] for r in full} == {"complete"}
    first_good = min(int(r["trial"]) for r in pruned if float(r["optimizer.lr"]) == 0.2)
    hopeless = [r for r in pruned if float(r["optimizer.lr"]) < 1e-6
                and int(r["trial"]) > first_good]
    assert hopeless, "the seed drew no hopeless trial after a good one: pick another"
    assert all(r["state"] == "pruned" and r["epochs"] == "1" for r in hopeless)
    assert all(r["state"] == "complete" and r["epochs"] == "3" for r in pruned
               if float(r["optimizer.lr"]) == 0.2)
    best = lambda rows: max(float(r["value"]) for r in rows if r["state"] == "complete")  # noqa: E731
    assert best(pruned) == best(full)
    job = search / "pruned" / hopeless[0]["trial"]
    assert (job / "checkpoints" / "last.ckpt").is_file()  # stopped cleanly: all kept
    metrics = json.loads((job / "metrics.json").read_text())["metrics"]
    assert "test/acc" in metrics
    md = (search / "pruned" / "sweep_summary.md").read_text()
    saved = 2 * len(hopeless)
    assert f"epochs trained {12 - saved} of 12, {saved} saved" in md
    assert "pruned after epoch 1" in out
    assert (search / "pruned" / PLOT_NAME).read_bytes().startswith(PNG)


def _enqueue(storage: str, name: str, direction: str, *params: dict[str, object]) -> None:
    study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                load_if_exists=True)
    for p in params:
        study.enqueue_trial(p)


@pytest.mark.slow
def test_pruning_under_ddp_stops_every_rank_together(tmp_path: Path) -> None:
    folder = tmp_path / "logs" / "train" / "search" / "ddp"
    folder.mkdir(parents=True)
    _enqueue(f"sqlite:///{folder}/optuna.db", "ddp", "maximize", {"optimizer.lr": 0.2},
             {"optimizer.lr": 1e-7})
    out = _run([*_lr_search(tmp_path, "ddp"), *SHORT, "trainer=ddp_sim", "trainer.devices=2",
                "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=median",
                "+hydra.sweeper.pruner_args.n_startup_trials=1"], tmp_path)
    assert out.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # both trials ran two ranks
    rows = _table(folder)
    assert [(r["state"], r["epochs"]) for r in rows] == [("complete", "3"), ("pruned", "1")]


def _doc_worker_command(storage: str) -> list[str]:
    """The docs' command for one worker of a shared PostgreSQL study, its URL this server's."""
    text = DOCS.read_text()
    found = re.search(r"^(python src/train\.py -m hparams_search=digits_sgd "
                      r"hydra\.sweeper\.storage=postgresql\S+ .*)$", text, re.M)
    assert found, f"{DOCS} lost its PostgreSQL worker command"
    args = shlex.split(found.group(1))[3:]
    return [f"hydra.sweeper.storage={storage}" if a.startswith("hydra.sweeper.storage=") else a
            for a in args]


def _two_workers(tmp_path: Path, first: list[str], second: list[str]) -> None:
    procs = [(_start(a, tmp_path, f"worker{i}.log"), f"worker{i}.log")
             for i, a in enumerate((first, second))]
    for proc, log in procs:
        _wait(proc, tmp_path, log)


def _check_shared(study: optuna.Study, n: int) -> None:
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n, [(t.number, t.state) for t in trials]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n  # none drawn twice


@needs_postgres
@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(tmp_path: Path) -> None:
    url = _postgres_url()
    assert url is not None
    name = f"shared_{uuid.uuid4().hex[:8]}"
    worker = [*_doc_worker_command(url), f"hydra.sweeper.study_name={name}",
              "hydra.sweeper.max_trials=4", *TINY]
    _two_workers(tmp_path, worker, [*worker, "hydra.sweeper.worker=1"])
    _check_shared(optuna.load_study(study_name=name, storage=url), 4)


@pytest.fixture(scope="module")
def journal_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two workers that finished one study in a journal file, the zoo search with its two
    objectives: (storage URL, study name, sweep directory)."""
    tmp = tmp_path_factory.mktemp("journal")
    url = f"journal:///{tmp}/shared/journal.log"
    worker = ["hparams_search=zoo_digits", f"hydra.sweeper.storage={url}",
              "hydra.sweeper.study_name=shared", "hydra.sweeper.max_trials=4", *TINY]
    _two_workers(tmp, worker, [*worker, "hydra.sweeper.worker=1"])
    return url, "shared", tmp / "logs" / "debug" / "search" / "shared"


@pytest.mark.slow
def test_two_workers_share_one_journal_file(journal_study: tuple[str, str, Path]) -> None:
    url, name, sweep = journal_study
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    _check_shared(study, 4)
    # several objectives: accuracy and the network's MACs, the front marked and drawn
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    front = {t.number for t in study.best_trials}
    # a trial a worker asked just after the other took the last one is "surplus" (never run)
    rows = [r for r in _table(sweep) if r["state"] != "surplus"]
    assert {int(r["trial"]) for r in rows if r["pareto"] == "yes"} == front
    for r in rows:
        macs = json.loads((sweep / r["trial"] / "metrics.json").read_text())["metrics"]
        assert float(r["model/macs"]) == macs["model/macs"] > 0
    assert (sweep / PARETO_PLOT).read_bytes().startswith(PNG)


@pytest.mark.slow
def test_optuna_dashboard_reads_the_trials_back(journal_study: tuple[str, str, Path]) -> None:
    pytest.importorskip("optuna_dashboard", reason="pip install 'classicnets[dashboard]'")
    url, name, _ = journal_study
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the docs' command: the journal file's path is the storage
    path = url[len("journal://"):]
    # the script pip installed beside this Python (a venv's bin/ need not be on PATH)
    script = Path(sys.executable).with_name("optuna-dashboard")
    command = str(script) if script.is_file() else "optuna-dashboard"
    proc = subprocess.Popen([command, path, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        studies = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        assert studies is not None, "optuna-dashboard did not answer"
        (entry,) = [s for s in studies if s["study_name"] == name]
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}", timeout=10) as r:
            detail = json.load(r)
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        study = optuna.load_study(study_name=name, storage=open_storage(url))
        assert sorted(t["number"] for t in complete) == sorted(
            t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
        assert len(complete) == 4
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_killed_worker_s_trial_is_queued_again_and_the_study_completes(
        tmp_path: Path) -> None:
    folder = tmp_path / "logs" / "train" / "search" / "digits_sgd"
    storage = f"sqlite:///{folder}/optuna.db"
    beats = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3",
             "hydra.sweeper.max_trials=2"]
    # worker A: a long first trial, killed (SIGKILL: no clean-up) while it trains
    slow = _start(["hparams_search=digits_sgd", *beats, "trainer.max_epochs=100",
                   "callbacks.rich_progress_bar=null", "logger=csv", "data.num_workers=0"],
                  tmp_path, "killed.log")
    deadline = time.monotonic() + 120
    while (time.monotonic() < deadline and slow.poll() is None
           and not (folder / "0" / "train.log").is_file()):
        time.sleep(0.5)
    assert slow.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    time.sleep(2)
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait()
    study = optuna.load_study(study_name="digits_sgd", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]
    # worker B: finds the trial stale (no heartbeat for 3 s), fails it, runs its copy
    _run(["hparams_search=digits_sgd", *beats, "trainer.max_epochs=1",
          "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
          "+trainer.limit_test_batches=1", *SHORT[3:]], tmp_path, "survivor.log")
    trials = optuna.load_study(study_name="digits_sgd", storage=storage).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback
               .retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].params == trials[0].params
    assert retried[0].state == optuna.trial.TrialState.COMPLETE
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2
    states = [r["state"] for r in _table(folder)]
    assert states[0] == "fail" and "complete (retry of 0)" in states


@pytest.mark.slow
def test_parallel_launcher_starts_a_trial_as_soon_as_a_slot_frees(tmp_path: Path) -> None:
    """Two slots, three trials, the first long: trial 2 starts when trial 1 ends, before
    trial 0 does (synchronous batches would wait for trial 0)."""
    conf = tmp_path / "myconf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "epochs.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - digits_sgd\n"
        "hydra:\n  sweeper:\n    study_name: epochs\n    params:\n"
        "      trainer.max_epochs: choice(1, 8)\n")
    folder = tmp_path / "logs" / "train" / "search" / "epochs"
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder}/optuna.db"
    _enqueue(storage, "epochs", "maximize",
             *({"trainer.max_epochs": e, "optimizer.lr": 0.1, "optimizer.weight_decay": 1e-4,
                "data.batch_size": 32, "module.label_smoothing": 0.0} for e in (8, 1, 1)))
    _run(["--config-dir", str(tmp_path / "myconf"), "hparams_search=epochs",
          "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
          "hydra.sweeper.n_trials=3", *SHORT[1:]], tmp_path)
    trials = optuna.load_study(study_name="epochs", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert trials[2].datetime_start < trials[0].datetime_complete  # did not wait for trial 0
    assert trials[2].datetime_start >= trials[1].datetime_complete  # two at once, no more
