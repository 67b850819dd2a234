"""The torchvision-decoder path of folder datasets: the same images and the same augmentation
distribution as the ordinary PIL path, every file format still loading, the DataModule wiring.

JPEG decoders may differ by a few 8-bit levels between builds (IDCT and upsampling variants);
the PIL and torchvision builds here both use libjpeg-turbo, but the comparisons below allow
``JPEG_TOL`` = 3 levels per pixel (and a mean difference under half a level) so they hold for
other builds too. PNG decoding is lossless, so PNG images must agree exactly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from classicnets.data import DatasetError, ImageDataModule
from classicnets.data.decode import (
    BatchNormalize,
    FinishingLoader,
    RandomResizedCropFlip,
    batch_buffer,
    read_rgb,
    stack_uint8,
    uint8_folder_transform,
)
from classicnets.data.transforms import folder_transform
from formats import write_image_folder

JPEG_TOL = 3 / 255  # per pixel, in [0, 1] units
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photo(h: int = 90, w: int = 120, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image with some texture (JPEG-friendly, like a photograph)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    arr = np.asarray(small.resize((w, h), Image.BICUBIC)).astype(np.int16)
    arr = arr + rng.integers(-12, 13, arr.shape)
    return arr.clip(0, 255).astype(np.uint8)


def _save(img: Image.Image, path: Path, fmt: str) -> Path:
    img.save(path, fmt)
    return path


def _pil_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        return TF.pil_to_tensor(img.convert("RGB"))


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize(("name", "make", "fmt", "exact"), [
    ("rgb.jpg", lambda a: Image.fromarray(a), "JPEG", False),
    ("grey.jpg", lambda a: Image.fromarray(a).convert("L"), "JPEG", False),
    ("cmyk.jpg", lambda a: Image.fromarray(a).convert("CMYK"), "JPEG", False),
    ("rgba.png", lambda a: Image.fromarray(np.dstack([a, a[..., :1]])), "PNG", True),
    ("palette.png", lambda a: Image.fromarray(a).convert("P"), "PNG", True),
    ("grey_alpha.png", lambda a: Image.fromarray(a).convert("LA"), "PNG", True),
    # torchvision.io decodes to uint16 / cannot read these: PIL reads them, as before
    ("deep.png", lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257), "PNG", True),
    ("rgb.bmp", lambda a: Image.fromarray(a), "BMP", True),
    ("rgb.tif", lambda a: Image.fromarray(a), "TIFF", True),
])
def test_every_mode_decodes_to_the_rgb_of_pil(tmp_path: Path, name: str, make, fmt: str,
                                              exact: bool) -> None:
    path = _save(make(_photo()), tmp_path / name, fmt)
    ours, ref = read_rgb(str(path)), _pil_rgb(path)
    assert ours.dtype == torch.uint8 and ours.shape == ref.shape == (3, 90, 120)
    diff = (ours.float() - ref.float()).abs() / 255
    if exact:
        assert diff.max() == 0
    else:
        assert diff.max() <= JPEG_TOL and diff.mean() < 0.5 / 255, (diff.max(), diff.mean())


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_an_unreadable_file_raises_pils_error(tmp_path: Path, damage: str) -> None:
    path = _save(Image.fromarray(_photo()), tmp_path / "x.jpg", "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not an image")
    with pytest.raises(OSError, match="truncated|cannot identify"):
        read_rgb(str(path))


# ----------------------------------------------------------------------------- augmentation
def _position_image(h: int, w: int) -> torch.Tensor:
    """Float (2, h, w): channel 0 = row, channel 1 = column (resizing keeps them linear)."""
    rows = torch.arange(h, dtype=torch.float32).view(-1, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, -1).expand(h, w)
    return torch.stack([rows, cols])


def _crop_features(out: torch.Tensor) -> torch.Tensor:
    """Per sample (crop height, crop width, centre row, centre column, flipped) read off the
    resized position images, in source pixels (up to a factor both paths share)."""
    rows, cols = out[:, 0], out[:, 1]
    height = rows[:, -1, :].mean(-1) - rows[:, 0, :].mean(-1)
    span = cols[:, :, -1].mean(-1) - cols[:, :, 0].mean(-1)  # negative when flipped
    centre_r, centre_c = rows.mean((-2, -1)), cols.mean((-2, -1))
    return torch.stack([height, span.abs(), centre_r, centre_c, (span < 0).float()], 1)


def test_random_resized_crop_flip_has_torchvisions_distribution() -> None:
    """Two-sample Kolmogorov–Smirnov per feature (crop size, aspect, position, flip)."""
    n, size = 2500, 16
    img = _position_image(90, 120)
    ref_tf = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    ours_tf = RandomResizedCropFlip(size)
    torch.manual_seed(0)
    ref = _crop_features(torch.stack([ref_tf(img) for _ in range(n)]))
    torch.manual_seed(1)  # independent draws: a distribution test, not a replay
    ours = _crop_features(torch.stack([ours_tf(img) for _ in range(n)]))
    area = lambda f: f[:, 0] * f[:, 1]  # noqa: E731
    aspect = lambda f: torch.log(f[:, 1] / f[:, 0])  # noqa: E731
    samples = [(ref[:, i], ours[:, i]) for i in range(4)]
    samples += [(area(ref), area(ours)), (aspect(ref), aspect(ours))]
    for a, b in samples:
        # p < 0.001 would be a real difference (n = 2500 each: D > 0.055)
        assert ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3
    assert abs(ref[:, 4].mean() - ours[:, 4].mean()) < 4 * math.sqrt(0.5 / n)  # flips: 1/2


def test_random_resized_crop_falls_back_to_the_centre_like_torchvision() -> None:
    """A 10×200 strip fits no crop of aspect ≤ 4/3 and area ≥ 8 %: both take the centre."""
    img = _position_image(10, 200)
    ours = RandomResizedCropFlip(8)
    ref = v2.RandomResizedCrop(8, antialias=True)
    for seed in range(8):
        torch.manual_seed(seed)
        a, b = ours(img), ref(img)
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))


def test_the_resize_is_torchvisions_resized_crop_exactly(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    img = read_like_a_jpeg = torch.from_numpy(_photo()).permute(2, 0, 1)  # channels-last strides
    assert read_like_a_jpeg.stride()[0] == 1
    tf = RandomResizedCropFlip(32)
    monkeypatch.setattr(tf, "params", lambda h, w: (7, 11, 60, 83))
    ref = TF.resized_crop(img.contiguous(), 7, 11, 60, 83, [32, 32], antialias=True)
    outs = [tf(img) for _ in range(8)]
    assert all(torch.equal(o, ref) or torch.equal(o, ref.flip(-1)) for o in outs)
    assert any(torch.equal(o, ref) for o in outs) and any(torch.equal(o, ref.flip(-1))
                                                            for o in outs)


def test_batch_normalize_is_the_per_image_float_conversion() -> None:
    x = torch.randint(0, 256, (4, 3, 9, 9), dtype=torch.uint8)
    ref = v2.Normalize(list(MEAN), list(STD))(v2.ToDtype(torch.float32, scale=True)(x))
    ours = BatchNormalize(MEAN, STD)(x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    cl = BatchNormalize(MEAN, STD, channels_last=True)(x)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.allclose(cl, ours)
    with pytest.raises(TypeError, match="uint8"):
        BatchNormalize(MEAN, STD)(x.float())


def _both_paths(path: Path, train: bool, n: int, size: int = 24) -> tuple[torch.Tensor, ...]:
    """n outputs of the PIL path and of the torchvision path on one file (normalised)."""
    kw = dict(train=train, image_size=size, in_channels=3, resize_size=None)
    pil_tf = folder_transform(**kw, mean=MEAN, std=STD)
    ours_tf, finish = uint8_folder_transform(**kw), BatchNormalize(MEAN, STD)
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    torch.manual_seed(0)
    pil = torch.stack([pil_tf(rgb) for _ in range(n)])
    torch.manual_seed(1)
    decoded = read_rgb(str(path))
    ours = finish(torch.stack([ours_tf(decoded) for _ in range(n)]))
    return pil, ours


def test_training_augmentation_statistics_agree_with_the_pil_path(tmp_path: Path) -> None:
    """Per-pixel means (and variances, averaged) of many augmented copies of one JPEG agree
    within sampling error; so do the distributions of each copy's mean per channel."""
    path = _save(Image.fromarray(_photo(75, 100, seed=3)), tmp_path / "p.jpg", "JPEG")
    n = 1500
    pil, ours = _both_paths(path, train=True, n=n)
    se = torch.sqrt((pil.var(0) + ours.var(0)) / n)
    assert ((pil.mean(0) - ours.mean(0)).abs() < 5 * se).all()  # 5 σ over 1728 pixels
    # mean variance over pixels: the same within 5 %
    ratio = ours.var(0).mean() / pil.var(0).mean()
    assert 0.95 < ratio < 1.05, ratio
    for c in range(3):
        assert ks_2samp(pil[:, c].mean((-2, -1)).numpy(),
                        ours[:, c].mean((-2, -1)).numpy()).pvalue > 1e-3


@pytest.mark.parametrize(("fmt", "ext", "exact"), [("JPEG", "jpg", False), ("PNG", "png", True)])
def test_evaluation_outputs_match_the_pil_path(tmp_path: Path, fmt: str, ext: str,
                                               exact: bool) -> None:
    path = _save(Image.fromarray(_photo(75, 100, seed=4)), tmp_path / f"e.{ext}", fmt)
    pil, ours = _both_paths(path, train=False, n=1, size=48)
    # back to [0, 1] pixels: the tolerance is in 8-bit levels
    std = torch.tensor(STD).view(1, 3, 1, 1)
    diff = ((pil - ours) * std).abs()
    if exact:
        assert diff.max() < 1e-5
    else:
        assert diff.max() <= JPEG_TOL + 1e-6 and diff.mean() < 0.5 / 255


# ----------------------------------------------------------------------------- DataModule
def _odd_modes_folder(base: Path) -> None:
    """An image folder of JPEG and PNG files plus grey and CMYK JPEGs and an RGBA PNG."""
    write_image_folder(base, splits=("train", "val"), per_class=4)
    a = _photo(40, 48, seed=7)
    for split in ("train", "val"):
        d = base / split / "cat"
        Image.fromarray(a).convert("L").save(d / "grey.jpg")
        Image.fromarray(a).convert("CMYK").save(d / "cmyk.jpg")
        Image.fromarray(np.dstack([a, a[..., :1]])).save(d / "rgba.png")


@pytest.mark.parametrize("channels", [3, 1])
def test_folder_data_defaults_to_the_torchvision_decoder(tmp_path: Path, channels: int) -> None:
    _odd_modes_folder(tmp_path / "pets")
    kw = dict(path=tmp_path / "pets", num_classes=3, batch_size=5, image_size=24,
              in_channels=channels, num_workers=0)
    dm = ImageDataModule("imagefolder", **kw)
    pil = ImageDataModule("imagefolder", decoder="pil", **kw)
    assert (dm.decoder, pil.decoder) == ("torchvision", "pil")
    dm.setup("fit")
    pil.setup("fit")
    loader = dm.train_dataloader()
    # on the CPU too: uint8 batches from the workers, normalised as they are handed out
    assert isinstance(loader, FinishingLoader) and loader.collate_fn is stack_uint8
    for x, y in loader:  # every file, odd modes included, reaches the network's shape
        assert x.dtype == torch.float32 and x.shape[1:] == (channels, 24, 24)
        assert torch.isfinite(x).all() and y.dtype == torch.int64
    # evaluation batches (no randomness, same order) agree with the PIL path's
    std = torch.tensor(dm.std).view(1, -1, 1, 1)
    for (a, ya), (b, yb) in zip(dm.val_dataloader(), pil.val_dataloader()):
        assert torch.equal(ya, yb)
        assert ((a - b) * std).abs().max() <= JPEG_TOL + 1e-6


def test_corrupt_files_are_skipped_with_a_warning_on_the_torchvision_path(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_image_folder(tmp_path / "pets", per_class=6, splits=("train", "val"))
    truncated = tmp_path / "pets" / "train" / "dog" / "2.jpg"
    truncated.write_bytes(truncated.read_bytes()[:120])
    garbage = tmp_path / "pets" / "train" / "fox" / "4.jpg"
    garbage.write_bytes(b"\xff\xd8\xff but no JPEG after the marker")
    dm = ImageDataModule("imagefolder", path=tmp_path / "pets", num_classes=3, batch_size=6,
                         image_size=24, num_workers=0, decoder="torchvision")
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="classicnets.data.datamodule"):
        sizes = [len(y) for _, y in dm.train_dataloader()]
    assert sum(sizes) == 6 * len(sizes)
    skipped = " ".join(r.getMessage() for r in caplog.records)
    for path in (truncated, garbage):
        assert f"skipped unreadable image {path}" in skipped


@pytest.mark.parametrize(("name", "kwargs", "pattern"), [
    ("imagefolder", {"decoder": "opencv"}, r"data.decoder='opencv' is not one of auto, "
                                           r"torchvision, pil"),
    ("digits", {"decoder": "pil"}, r"data.decoder=pil applies to image folders; digits is held "
                                   r"in memory: remove the override"),
])
def test_bad_decoder_options_are_named(tmp_path: Path, name: str, kwargs: dict,
                                       pattern: str) -> None:
    extra = {"path": tmp_path, "num_classes": 2} if name == "imagefolder" else {}
    with pytest.raises(DatasetError, match=pattern):
        ImageDataModule(name, **extra, **kwargs)


def test_workers_for_folders_use_every_core_but_one(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    folder = ImageDataModule("imagefolder", path=tmp_path, num_classes=2)
    assert folder._num_workers() == 31  # decoding: all but the main process's core
    assert ImageDataModule("digits")._num_workers() == 8  # in memory: 8 suffice
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 processes share the 32 cores
    assert folder._num_workers() == 7


def test_lightning_can_rebuild_the_loader_with_a_distributed_sampler(tmp_path: Path) -> None:
    """Under DDP Lightning re-creates each DataLoader with its own sampler; the finishing
    step must survive that."""
    from lightning.pytorch.utilities.data import _update_dataloader

    write_image_folder(tmp_path / "pets", per_class=4)
    dm = ImageDataModule("imagefolder", path=tmp_path / "pets", num_classes=3, batch_size=4,
                         image_size=16, num_workers=0, val_fraction=0.25)
    dm.setup("fit")
    dm._device = lambda: torch.device("meta")  # an accelerator: batches finish on it
    loader = dm.val_dataloader()
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=False)
    rebuilt = _update_dataloader(loader, sampler)
    assert isinstance(rebuilt, FinishingLoader) and rebuilt.sampler is sampler
    x, _ = next(iter(rebuilt))
    assert x.device.type == "meta" and x.dtype == torch.float32
    assert len(x) == 2  # half of the 3 (+1 padded) samples


def test_finishing_loader_moves_and_normalises_each_batch() -> None:
    data = [(torch.full((3, 2, 2), v, dtype=torch.uint8), v % 2) for v in (0, 51, 255)]
    loader = FinishingLoader(data, batch_size=3, finish=BatchNormalize((0.5,) * 3, (0.5,) * 3))
    (x, y), = list(loader)
    assert isinstance(loader, DataLoader)
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([-1.0, -0.6, 1.0]))
    assert y.tolist() == [0, 1, 1]


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_are_normalised_on_the_device_they_are_handed_out_on(tmp_path: Path,
                                                                     workers: int) -> None:
    """Workers ship uint8 batches; the FinishingLoader converts them on the training device,
    the CPU or an accelerator, into the PIL path's normalised floats."""
    write_image_folder(tmp_path / "pets", per_class=4, splits=("train", "val"))
    kw = dict(path=tmp_path / "pets", num_classes=3, batch_size=4, image_size=16,
              num_workers=workers, persistent_workers=False)
    dm, pil = ImageDataModule("imagefolder", **kw), ImageDataModule("imagefolder",
                                                                     decoder="pil", **kw)
    dm.setup("fit")
    pil.setup("fit")
    assert isinstance(dm.val_dataloader(), FinishingLoader)
    (a, _), (b, _) = next(iter(dm.val_dataloader())), next(iter(pil.val_dataloader()))
    assert a.dtype == torch.float32 and torch.allclose(a, b, atol=JPEG_TOL / min(STD) + 1e-5)
    assert a.is_contiguous()
    dm._device = lambda: torch.device("meta")
    loader = dm.val_dataloader()
    assert isinstance(loader, FinishingLoader) and loader.collate_fn is stack_uint8
    x, _ = next(iter(loader))
    assert (x.device.type, x.dtype, x.shape[1:]) == ("meta", torch.float32, (3, 16, 16))


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_batches_have_the_networks_layout(tmp_path: Path, channels_last: bool) -> None:
    """The resize leaves channels-last images; the batch the network gets is in the layout
    data.channels_last asks for, with the values of a contiguous conversion."""
    write_image_folder(tmp_path / "pets", per_class=4)
    dm = ImageDataModule("imagefolder", path=tmp_path / "pets", num_classes=3, batch_size=4,
                         image_size=16, num_workers=0, channels_last=channels_last)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert x.is_contiguous(memory_format=layout)


def test_stack_uint8_keeps_the_layout_and_values_of_the_images() -> None:
    g = torch.Generator().manual_seed(0)
    hwc = [torch.randint(0, 256, (5, 6, 3), dtype=torch.uint8, generator=g) for _ in range(3)]
    cl = [t.permute(2, 0, 1) for t in hwc]  # (3, 5, 6) with channels-last strides
    x, y = stack_uint8([(im, i) for i, im in enumerate(cl)])
    assert torch.equal(x, torch.stack(cl)) and y.tolist() == [0, 1, 2]
    assert x.is_contiguous(memory_format=torch.channels_last)  # a plain copy, no transposition
    grey = [torch.randint(0, 256, (1, 5, 6), dtype=torch.uint8, generator=g) for _ in range(2)]
    x, _ = stack_uint8([(im, 0) for im in grey])
    assert x.is_contiguous() and torch.equal(x, torch.stack(grey))
    with pytest.raises(RuntimeError, match="equal size"):  # default_collate's own message
        stack_uint8([(cl[0], 0), (cl[0][:, :4], 1)])
    # the normalisation gives either layout from either layout, with the same values
    ref = BatchNormalize(MEAN, STD)(torch.stack(cl).contiguous())
    for want in (False, True):
        out = BatchNormalize(MEAN, STD, channels_last=want)(torch.stack(cl))
        layout = torch.channels_last if want else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout) and torch.equal(out, ref)


def _buffer_in_a_worker(_: int) -> tuple[bool, bool]:
    out = batch_buffer((2, 3, 4, 5), torch.uint8, channels_last=True)
    return out.is_shared(), out.is_contiguous(memory_format=torch.channels_last)


def test_batch_buffers_are_shared_memory_in_workers_only() -> None:
    """In a worker the batch is born in shared memory, so sending it copies nothing."""
    assert not batch_buffer((2, 3, 4, 5), torch.uint8, channels_last=False).is_shared()
    loader = DataLoader(range(1), batch_size=None, num_workers=1,
                        collate_fn=_buffer_in_a_worker)
    assert list(loader) == [(True, True)]


# ----------------------------------------------------------------------------- benchmark
def test_decode_benchmark_section_compares_both_decoders(make_cfg, tmp_path: Path) -> None:
    """`python src/benchmark.py sections=[decode]` at toy size: a row per decoder, the ratio
    against PIL, and the temporary JPEG folder gone afterwards."""
    import csv
    import tempfile

    from classicnets.benchmark import run_benchmark

    before = set(Path(tempfile.gettempdir()).glob("classicnets-decode-*"))
    cfg = make_cfg("device=cpu", "sections=[decode]", "rounds=2", "warmup_steps=1",
                   "window_steps=1", "min_window_s=0", "decode.num_images=12",
                   "decode.width=64", "decode.height=48", "decode.image_size=32",
                   "decode.batch_size=4", "decode.num_workers=1", config_name="benchmark",
                   out="bench")
    rows = run_benchmark(cfg)
    assert [(r.section, r.variant) for r in rows] == [("decode", "pil"),
                                                      ("decode", "torchvision")]
    pil, ours = rows
    assert pil.ratio == 1.0 and math.isfinite(ours.ratio) and ours.ratio > 0
    assert ours.images_per_s > 0 and ours.windows == 2
    with (tmp_path / "bench" / "benchmark.csv").open(newline="") as fh:
        assert [r["variant"] for r in csv.DictReader(fh)] == ["pil", "torchvision"]
    md = (tmp_path / "bench" / "benchmark.md").read_text()
    assert "Folder images: torchvision decoder vs PIL" in md and "torchvision / pil =" in md
    assert set(Path(tempfile.gettempdir()).glob("classicnets-decode-*")) == before
