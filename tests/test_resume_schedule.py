"""Resuming over another horizon (issue 21, part 1): the per-step schedules (cosine with and
without warm-up, one-cycle) go on as ``module.resume_schedule`` says, checked step by step
against a schedule built fresh with torch; without a change of horizon, bit-exact."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from classicnets.runs.pipeline import train
from classicnets.training.optim import HorizonSchedule, _build, build_scheduler
from conftest import compose_config
from trained import QUIET

SCHEDULES = {
    "cosine_warmup": {"name": "cosine", "warmup_epochs": 1, "warmup_start_factor": 0.1,
                      "min_lr": 0.001},
    "cosine": {"name": "cosine", "warmup_epochs": 0, "min_lr": 0.0},
    "onecycle": {"name": "onecycle", "max_lr": 0.4, "pct_start": 0.3},
}
STEPS_PER_EPOCH, LR = 5, 0.2


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=LR, momentum=0.9)


def _schedule(cfg: dict, epochs: int, policy: str, opt: torch.optim.Optimizer
              ) -> HorizonSchedule:
    out = build_scheduler(opt, cfg, total_steps=epochs * STEPS_PER_EPOCH, max_epochs=epochs,
                          resume=policy)
    assert out is not None and out["interval"] == "step"
    return out["scheduler"]


def _run(opt: torch.optim.Optimizer, sched: HorizonSchedule, steps: int) -> list[float]:
    """The rate each optimizer step used, as Lightning steps a per-step schedule."""
    used = []
    for _ in range(steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return used


def _fresh(cfg: dict, total: int, position: float) -> float:
    """The rate a schedule built fresh by torch for ``total`` steps gives at ``position``."""
    opt = _optimizer()
    epochs = max(1, round(total / STEPS_PER_EPOCH))
    sched = _build(opt, cfg, total_steps=total, max_epochs=epochs)["scheduler"]
    sched.last_epoch = position
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # get_lr outside step(): what we want here
        return float(sched.get_lr()[0])


def _resumed(cfg: dict, first: int, stop: int, then: int, policy: str
             ) -> tuple[list[float], HorizonSchedule]:
    """Train ``stop`` steps of a ``first``-epoch run, save, resume as a ``then``-epoch run."""
    opt = _optimizer()
    sched = _schedule(cfg, first, policy, opt)
    before = _run(opt, sched, stop)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    opt2 = _optimizer()
    sched2 = _schedule(cfg, then, policy, opt2)
    opt2.load_state_dict(opt_state)  # Lightning's order: optimizers, then schedulers
    sched2.load_state_dict(sched_state)
    after = _run(opt2, sched2, then * STEPS_PER_EPOCH - stop)
    return before + after, sched2


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("stop_epoch", [1, 2], ids=["midway", "at_the_end"])
@pytest.mark.parametrize("policy", ["stretch", "keep", "restart", "auto"])
def test_each_choice_follows_a_freshly_built_schedule(name: str, stop_epoch: int, policy: str
                                                     ) -> None:
    cfg = SCHEDULES[name]
    old_total, new_total = 2 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH
    s = stop_epoch * STEPS_PER_EPOCH
    got, sched = _resumed(cfg, 2, s, 4, policy)
    ended = s >= old_total
    chosen = {"auto": "restart" if ended else "stretch"}.get(policy, policy)
    for t in range(new_total):  # optimizer step t + 1 runs at the rate after t steps
        if t < s:
            want = _fresh(cfg, old_total, t)
        elif chosen == "stretch" and not ended:
            want = _fresh(cfg, old_total, s + (t - s) * (old_total - s) / (new_total - s))
        elif chosen == "restart":
            want = _fresh(cfg, new_total - s, t - s)
        else:  # keep, or stretch of an ended schedule: its last rate held
            want = _fresh(cfg, old_total, min(t, old_total))
        assert got[t] == pytest.approx(want, rel=1e-9, abs=1e-12), (t, got[t], want)
    assert sched.note and f"-> {chosen}" in sched.note
    assert ("had ended" in sched.note) == ended
    if chosen == "stretch" and not ended:  # smooth: no jump at the resume step
        assert abs(got[s + 1] - got[s]) <= abs(got[s] - got[s - 1]) + 1e-12


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_the_same_horizon_resumes_bit_exact(name: str) -> None:
    cfg = SCHEDULES[name]
    opt = _optimizer()
    whole = _run(opt, _schedule(cfg, 3, "auto", opt), 3 * STEPS_PER_EPOCH)
    got, sched = _resumed(cfg, 3, 7, 3, "auto")
    assert got == whole and sched.note is None


def test_two_stretches_compose_and_resume_exactly() -> None:
    """A stretched run resumed again (same horizon) goes on exactly; stretched again, it
    still ends at the newest horizon."""
    cfg = SCHEDULES["cosine"]
    opt = _optimizer()
    sched = _schedule(cfg, 2, "stretch", opt)
    _run(opt, sched, 5)
    for epochs, stop in ((4, 12), (4, 15), (6, 20)):
        state, ostate = sched.state_dict(), opt.state_dict()
        opt = _optimizer()
        sched = _schedule(cfg, epochs, "stretch", opt)
        opt.load_state_dict(ostate)
        sched.load_state_dict(state)
        _run(opt, sched, stop - sched.t)
    rest = _run(opt, sched, 30 - sched.t)
    assert rest[-1] > 0.0 and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_checkpoint_from_before_is_read(tmp_path: Path) -> None:
    """A bare LambdaLR/OneCycleLR state (what checkpoints held before) is the old horizon."""
    for name in ("cosine", "onecycle"):
        cfg = SCHEDULES[name]
        opt = _optimizer()
        bare = _build(opt, cfg, total_steps=10, max_epochs=2)["scheduler"]
        for _ in range(10):
            opt.step()
            bare.step()
        opt2 = _optimizer()
        sched = _schedule(cfg, 4, "auto", opt2)
        opt2.load_state_dict(opt.state_dict())
        sched.load_state_dict(bare.state_dict())
        assert sched.note and "from 10 to 20" in sched.note and "-> restart" in sched.note


def test_a_wrong_choice_is_named() -> None:
    with pytest.raises(ValueError, match="module.resume_schedule='longer' is not one of auto"):
        _schedule(SCHEDULES["cosine"], 2, "longer", _optimizer())


def _lr_by_step(run: Path) -> dict[int, float]:
    with open(run / "csv" / "metrics.csv") as fh:
        return {int(row["step"]): float(row["lr-SGD"]) for row in csv.DictReader(fh)
                if row.get("lr-SGD")}


@pytest.mark.parametrize("policy", ["auto", "keep"])
def test_train_longer_from_the_command_line(policy: str, tmp_path: Path) -> None:
    """The README's case: 2 epochs of cosine to its end, then resume=<run>
    trainer.max_epochs=4: auto restarts (rates above 0), keep holds 0; the run's
    metrics.json records what was done."""
    run = tmp_path / "run"
    quiet = [q for q in QUIET if q != "logger=[]"]
    common = [*quiet, "logger=csv", "+trainer.limit_train_batches=4",
              "+trainer.limit_val_batches=2", "scheduler=cosine", "scheduler.warmup_epochs=0",
              "callbacks.lr_monitor.logging_interval=step", "trainer.log_every_n_steps=1"]
    try:
        train(compose_config([*common, "trainer.max_epochs=2"], run))
        train(compose_config([*common, "trainer.max_epochs=4", f"resume={run}",
                              f"module.resume_schedule={policy}"], run))
    finally:
        GlobalHydra.instance().clear()
    rates = _lr_by_step(run)  # 4 steps an epoch: 8 before the resume, 8 after
    assert sorted(rates) == list(range(16))
    first, later = [rates[t] for t in range(8)], [rates[t] for t in range(8, 16)]
    if policy == "auto":  # a warm restart: the same cosine again over the 8 new steps
        assert later == pytest.approx(first, rel=1e-12) and min(later) > 0.0
    else:
        assert max(later) == pytest.approx(0.0, abs=1e-12)
    note = json.loads((run / "metrics.json").read_text())["resume_schedule"]
    assert "from 8 to 16 steps" in note and "had ended" in note
    assert note.endswith(f"-> {'restart' if policy == 'auto' else 'keep'}")
