"""Checks that need a CUDA device (skipped elsewhere): the on-device data path, bf16 mixed
precision with channels-last, and compiled training whose checkpoint loads uncompiled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from classicnets.data import ArrayData, BatchTransform, DeviceLoader
from classicnets.runs.pipeline import train
from classicnets.training.module import ImageClassifier

pytestmark = pytest.mark.gpu
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")


def test_device_loader_batches_live_on_the_gpu() -> None:
    data = ArrayData(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8),
                     torch.arange(300) % 10, [str(i) for i in range(10)])
    tf = BatchTransform("crop_flip", train=True, native_size=32, image_size=32,
                        mean=(0.5,) * 3, std=(0.25,) * 3, channels_last=True)
    loader = DeviceLoader(data, batch_size=128, transform=tf, device="cuda", shuffle=True)
    batches = list(loader)
    assert len(batches) == 3
    x, y = batches[0]
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    again = [b[1] for b in loader]
    assert all(torch.equal(a[1], b) for a, b in zip(batches, again))  # reproducible order


@pytest.mark.parametrize("compile_net", [False, True])
def test_bf16_channels_last_training(compile_net: bool, make_cfg: Callable[..., DictConfig]
                                     ) -> None:
    cfg = make_cfg("trainer=gpu", "model=resnet18", "data=synthetic", "data.num_samples=2048",
                   "data.batch_size=256", "trainer.max_epochs=2", "module.channels_last=true",
                   f"module.compile={str(compile_net).lower()}", *QUIET)
    _, metrics = train(cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")["state_dict"]
    assert not any("_orig_mod" in k for k in state)
    loaded = ImageClassifier.load_from_checkpoint(last, weights_only=True, compile=False,
                                                  map_location="cpu")
    assert loaded.net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
