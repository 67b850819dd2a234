"""What is checked before a run trains, so that bad input fails at once with the fix named:
the run directory (writable, room for the checkpoints), the data against the network, and a
checkpoint against the network it is loaded into."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from classicnets.checkpoints import CheckpointError, load_file
from classicnets.runs.config_check import ConfigError
from classicnets.training.module import ImageClassifier

__all__ = ["RunDirectoryError", "check_checkpoint_fits", "check_data_fits_model",
           "check_free_space", "check_train_crop_fits", "check_writable"]


class RunDirectoryError(RuntimeError):
    """The run directory cannot take the run's files (not writable, too little free space)."""


def check_writable(out_dir: Path) -> None:
    """Create the run directory and write a file there (every rank, the same answer on a shared
    filesystem): an unwritable or full disk fails here, not after an epoch."""
    probe = out_dir / f".write_test_{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise RunDirectoryError(
            f"cannot write to the run directory {out_dir} ({err.strerror or err}): its "
            f"checkpoints and logs could not be saved. Point the logs at a writable place with "
            f"paths.log_dir=/path/to/logs (or hydra.run.dir=...), or free the disk") from None


def check_free_space(out_dir: Path, module: ImageClassifier, callbacks: list[Callback]
                     ) -> None:
    """Room for the checkpoints (best, last.ckpt and the copy written while one is replaced,
    each up to three times the weights: weights and two optimizer states) and the logs."""
    if not any(isinstance(cb, ModelCheckpoint) for cb in callbacks):
        return  # nothing large is written (debug=fdr, callbacks=null)
    weights = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    need = 9 * weights + 20 * 2**20
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise RunDirectoryError(
            f"the run directory {out_dir} has {free / 2**20:.0f} MiB free, but this run needs "
            f"about {need / 2**20:.0f} MiB (checkpoints of this network are up to "
            f"{3 * weights / 2**20:.0f} MiB each: best, last.ckpt and the copy written while one "
            f"is replaced, plus logs). Free space there or point the logs elsewhere with "
            f"paths.log_dir=/path/to/logs")


def check_data_fits_model(model_cfg: Any, datamodule: Any, fix: str) -> None:
    """The network's num_classes / in_channels / input_size against what the data gives."""
    model_cfg = model_cfg or {}
    for key, data_key in (("num_classes", "num_classes"), ("in_channels", "in_channels"),
                          ("input_size", "image_size")):
        want, have = model_cfg.get(key), getattr(datamodule, data_key)
        if want is not None and want != have:
            hint = fix.format(key=key, data_key=data_key, want=want)
            raise ConfigError(f"the network is built for {key}={want} but data gives "
                              f"{data_key}={have}; {hint}")


def check_train_crop_fits(module: ImageClassifier, datamodule: Any) -> None:
    """FixRes (``data.train_crop_size``) trains the network at another size than it is built
    for (``image_size``): only networks that take other input sizes (global pooling) can. One
    forward pass of a single image at the training size, in eval mode and without gradients
    (no running statistics change), says so before training; only when the sizes differ."""
    crop, size = getattr(datamodule, "train_crop_size", None), datamodule.image_size
    if crop is None or crop == size:
        return
    net = module.net
    was_training = net.training
    probe = torch.zeros(1, datamodule.in_channels, crop, crop)
    try:
        net.eval()
        with torch.no_grad():
            net(probe)
    except (RuntimeError, ValueError, AssertionError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"data.train_crop_size={crop}: {_describe_network(module.hparams.get('model'))} "
            f"does not take {crop}-px inputs ({type(err).__name__}: {first}). Training at "
            f"another size than data.image_size={size} (FixRes) needs a network that takes "
            f"other sizes, e.g. one with global pooling such as the ResNets; remove "
            f"data.train_crop_size or choose a size this network takes") from None
    finally:
        net.train(was_training)


def _describe_network(model_cfg: Any) -> str:
    model_cfg = model_cfg or {}
    shape = ", ".join(f"{k}={model_cfg[k]}" for k in ("num_classes", "in_channels", "input_size")
                      if k in model_cfg)
    return f"{model_cfg.get('name', model_cfg.get('_target_', 'a network'))} ({shape})"


def check_checkpoint_fits(path: str, module: ImageClassifier) -> None:
    """A checkpoint of another network fails with a list of every mismatched weight; say which
    network it holds instead, before training starts."""
    # weights-only (refused here, naming the type, unless trust_checkpoint=true)
    ckpt = load_file(path, mmap=True)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a classicnets training checkpoint (it has no "
                              f"state_dict)")
    own = module.state_dict()
    differ = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    differ += [k for k in state if k not in own]
    if differ:
        theirs = (ckpt.get("hyper_parameters") or {}).get("model")
        raise CheckpointError(
            f"{path} holds {_describe_network(theirs)}, but this run builds "
            f"{_describe_network(module.hparams.get('model'))}: {len(differ)} weights do not "
            f"match (e.g. {', '.join(differ[:3])}). Use the model= and data= options of the run "
            f"that wrote it (resume=<its run dir> does that for you), or a checkpoint of this "
            f"network")


def check_accelerator(trainer_cfg: Any) -> None:
    """A trainer that asks for a GPU (or Apple's MPS) on a machine without one is refused
    naming what was asked, what the machine has and the override to use; Lightning would
    fail later, inside the Trainer's construction, with "No supported gpu backend found!"."""
    asked = str((trainer_cfg or {}).get("accelerator", "auto")).lower()
    if asked in ("gpu", "cuda") and not torch.cuda.is_available():
        built = (f"torch {torch.__version__} is built with CUDA {torch.version.cuda} but "
                 "sees no device" if torch.version.cuda else
                 f"torch {torch.__version__} is a CPU-only build")
        raise ConfigError(
            f"trainer.accelerator={asked} asks for a CUDA GPU, but this machine has none "
            f"({built}). Use trainer=cpu, or trainer=default (auto: the GPU when there is one)")
    if asked == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps asks for Apple's Metal GPU, which this machine does not "
            "have. Use trainer=cpu, or trainer=default (auto: the best device there is)")
