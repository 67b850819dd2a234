"""module.compile=step: the compiled training step trains as the eager one and its checkpoints
resume eagerly."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from classicnets.training.compiled_step import check_trainer, compile_target, resolve_mode
from classicnets.training.module import ImageClassifier

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.2, "momentum": 0.9,
       "weight_decay": 5e-4}


def test_compile_choices_are_checked() -> None:
    assert [compile_target(v) for v in (False, None, True, "network", "step")] == [
        None, None, "network", "network", "step"]
    net = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"module.compile='graph' is not one of .*step"):
        ImageClassifier(net, num_classes=2, compile="graph")
    with pytest.raises(ValueError, match="module.compile_mode='fast' is not one of"):
        ImageClassifier(net, num_classes=2, compile="step", compile_mode="fast")
    assert resolve_mode(None, "step", "cuda") == "reduce-overhead"
    assert resolve_mode(None, "step", "cpu") is None
    assert resolve_mode("max-autotune", "network", "cuda") == "max-autotune"


def test_accumulation_is_refused_only_with_cuda_graphs() -> None:
    trainer = SimpleNamespace(accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="accumulate_grad_batches=2 cannot be used with CUDA "
                                         "graphs.*compile_mode=max-autotune-no-cudagraphs"):
        check_trainer(trainer, "reduce-overhead", "cuda")
    check_trainer(trainer, "max-autotune-no-cudagraphs", "cuda")
    check_trainer(trainer, None, "cpu")


class _Batches:
    """A plain iterable of batches (a list would be read as several dataloaders)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def _fit(net: torch.nn.Module, batches: list, root: Path, max_steps: int, *,
         ckpt_path: Path | None = None, **module_kwargs: object
         ) -> tuple[ImageClassifier, L.Trainer]:
    module = ImageClassifier(net, num_classes=4, optimizer=SGD, nan_policy="skip",
                             scheduler={"name": "cosine", "warmup_epochs": 1, "min_lr": 0.02},
                             **module_kwargs)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root,
                        gradient_clip_val=0.5)
    trainer.fit(module, train_dataloaders=_Batches(batches), ckpt_path=ckpt_path)
    return module, trainer


@pytest.mark.slow
def test_compiled_step_trains_as_eager_and_resumes_eager(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 4))
    batches = [(torch.randn(8, 3, 4, 4), torch.randint(0, 4, (8,))) for _ in range(4)]
    batches[2][0][0, 0, 0, 0] = float("nan")  # nan_policy=skip: this batch changes nothing
    steps = 7  # 4 batches an epoch: the warm-up and cosine change the rate at every step
    eager, eager_trainer = _fit(copy.deepcopy(net), batches, tmp_path / "eager", steps)
    compiled, trainer = _fit(copy.deepcopy(net), batches, tmp_path / "step", steps,
                             compile="step")
    assert compiled._compiled_loss is not None and eager._compiled_loss is None
    # held in a tensor that the scheduler fills in place: a new float would recompile
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    assert math.isclose(float(lr), eager_trainer.optimizers[0].param_groups[0]["lr"],
                        rel_tol=1e-12)
    # Inductor fuses and reorders float32 arithmetic (matmul + bias, the log-softmax and the
    # batch reductions of the backward), so each op may differ from eager in its last bits
    # (~1e-7 relative); seven SGD steps with momentum and clipping amplify that only a little,
    # so 1e-5 is a hundred times the rounding and far below one step's change (~1e-2).
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
    moved = max((a - b).abs().max().item()
                for a, b in zip(net.state_dict().values(), compiled.net.state_dict().values()))
    assert moved > 1e-3  # the comparison above is not between untrained networks
    for t in (eager_trainer, trainer):  # the last epoch's NaN batch (third of 4) was skipped
        assert t.callback_metrics["train/skipped_batches"].item() == 1.0

    # the checkpoint is an eager run's: unprefixed keys, float hyperparameters; it resumes
    # in an eager run at the step it was saved at
    path = tmp_path / "step.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    assert not any("_orig_mod" in k for k in state["state_dict"])
    assert all(type(g["lr"]) is float for g in state["optimizer_states"][0]["param_groups"])
    # the file holds the weights and momentum buffers as they were
    loaded = ImageClassifier(copy.deepcopy(net), num_classes=4, optimizer=SGD)
    loaded.load_state_dict(state["state_dict"])
    torch.testing.assert_close(loaded.net[1].weight, compiled.net[1].weight, rtol=0, atol=0)
    buffers = [s["momentum_buffer"] for s in state["optimizer_states"][0]["state"].values()]
    live = trainer.optimizers[0].state
    assert all(torch.equal(b, live[p]["momentum_buffer"])
               for b, p in zip(buffers, compiled.net.parameters()))
    resumed, resumed_trainer = _fit(copy.deepcopy(net), batches, tmp_path / "resume", steps + 1,
                                    ckpt_path=path)
    assert resumed_trainer.global_step == steps + 1
    assert type(resumed_trainer.optimizers[0].param_groups[0]["lr"]) is float
    assert not torch.equal(resumed.net[1].weight, compiled.net[1].weight)  # it trained on
