"""A diverging run stops before a NaN state is saved, naming the step and the last good
checkpoint; ``module.nan_policy=skip`` skips batches with a non-finite loss and counts them."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from classicnets.callbacks.guard import TrainingDiverged
from classicnets.runs.pipeline import train

QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")
MakeCfg = Callable[..., DictConfig]
# digits in batches of 128: 10 steps an epoch
RUN = ("data.batch_size=128", "test=false", *QUIET)


def test_a_learning_rate_that_diverges_stops_with_the_step_and_the_last_good_checkpoint(
        make_cfg: MakeCfg) -> None:
    # a sane first epoch, then the step schedule multiplies the learning rate by 1e6
    cfg = make_cfg(*RUN, "trainer.max_epochs=3", "scheduler=step", "scheduler.step_size=1",
                   "scheduler.gamma=1e6", "optimizer.lr=0.05")
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingDiverged, match=(
            r"training loss became NaN or infinite in epoch 1, at global step 1\d\. Training "
            rf"stopped\. The last good checkpoint is {last} .*optimizer\.lr=.*"
            r"module\.nan_policy=skip")):
        train(cfg)
    good = torch.load(last, weights_only=True)
    assert good["epoch"] == 0 and good["global_step"] == 10  # not overwritten by a NaN state
    assert all(torch.isfinite(w).all() for w in good["state_dict"].values())


def test_divergence_in_the_first_epoch_says_there_is_no_checkpoint(make_cfg: MakeCfg) -> None:
    cfg = make_cfg(*RUN, "trainer.max_epochs=2", "optimizer.lr=1e6")
    with pytest.raises(TrainingDiverged, match="in epoch 0.*No checkpoint was written before"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").exists()


def test_nan_policy_skip_skips_and_counts_the_batches(make_cfg: MakeCfg) -> None:
    cfg = make_cfg(*RUN, "trainer.max_epochs=2", "module.nan_policy=skip",
                   "+callbacks.nan._target_=fault_probes.NaNBatches",
                   "+callbacks.nan.steps=[2,5,13]")
    _, metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    with open(run / "csv" / "metrics.csv") as fh:
        skipped = [float(r["train/skipped_batches"]) for r in csv.DictReader(fh)
                   if r.get("train/skipped_batches")]
    assert skipped == [2.0, 1.0]  # per epoch: steps 2 and 5, then step 13
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 20  # every batch stepped (a skipped one with no gradient)
    assert all(torch.isfinite(w).all() for w in last["state_dict"].values())
    assert metrics["val/acc"] > 0.2  # and learned (chance: 0.1)


def test_unknown_nan_policy_is_refused(make_cfg: MakeCfg) -> None:
    cfg = make_cfg(*RUN, "module.nan_policy=ignore")
    with pytest.raises(ValueError, match="module.nan_policy='ignore' is not one of stop, skip"):
        train(cfg)
