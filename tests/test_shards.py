"""Sharded streaming (``python src/shard.py``, ``data=shards``) and GPU JPEG decoding
(``data.decoder=gpu``): shards written from the digits and an image folder hold exactly the
samples of the splits training uses; a shard directory that is incomplete, of another data
version or behind an object-store URL without credentials is refused before training; under DDP
(2 CPU processes) every training sample is seen once per epoch across both ranks; a run stopped
by SIGTERM mid-epoch resumes with the remaining samples only; digits from shards train as well
as in memory. GPU decoding: the logic runs here on the CPU (decode_jpeg's CPU device), the
GPU itself in ``@pytest.mark.gpu`` tests."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classicnets.data import DatasetError, ImageDataModule
from classicnets.data.gpu_decode import (
    GpuBatchDecoder,
    check_decoder,
    collate_encoded,
    read_encoded,
)
from classicnets.data.shards import (
    MANIFEST,
    ShardDataModule,
    check_credentials,
    config_version,
    read_manifest,
    write_shards,
)
from formats import write_image_folder

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "src" / "train.py")
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _digits_shards(out: Path) -> tuple[ImageDataModule, Path]:
    dm = ImageDataModule("digits", image_size=32, batch_size=64, augment="distort")
    cfg = {"name": "digits", "image_size": 32, "val_fraction": 0.1, "seed": 42}
    write_shards(dm, out, data_config=cfg)
    return dm, out


def _folder_shards(base: Path, out: Path) -> tuple[ImageDataModule, Path]:
    write_image_folder(base, splits=("train", "val"), per_class=6)
    dm = ImageDataModule("imagefolder", path=base, num_classes=3, image_size=32,
                         batch_size=4, num_workers=0)
    write_shards(dm, out, data_config={"name": "imagefolder", "path": str(base)})
    return dm, out


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageDataModule, Path]:
    return _digits_shards(tmp_path_factory.mktemp("digits") / "shards")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageDataModule, Path]:
    tmp = tmp_path_factory.mktemp("folder")
    return _folder_shards(tmp / "images", tmp / "shards")


def _raw(split_dir: Path) -> list[dict]:
    from litdata import StreamingDataset

    ds = StreamingDataset(str(split_dir))
    return sorted((ds[i] for i in range(len(ds))), key=lambda s: s["index"])


# --------------------------------------------------------------------------- writing


def test_digits_shards_hold_the_in_memory_splits_exactly(digits) -> None:
    dm, out = digits
    m = read_manifest(out)
    assert (m.source, m.kind, m.in_channels, m.native_size, m.recipe) == (
        "digits", "array", 1, 8, "distort")
    assert m.classes == [str(i) for i in range(10)]
    assert {s: v["num_samples"] for s, v in m.splits.items()} == {
        "train": len(dm.train_set), "val": len(dm.val_set), "test": len(dm.test_set)}
    for split, data in (("train", dm.train_set), ("test", dm.test_set)):
        samples = _raw(out / split)
        assert [s["index"] for s in samples] == list(range(len(data)))
        decoded = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(
            bytes(s["image"]))))) for s in samples])
        assert torch.equal(decoded, data.images[:, 0])  # PNG: lossless, pixel for pixel
        assert [s["label"] for s in samples] == data.labels.tolist()


def test_folder_shards_hold_the_files_bytes_and_load_like_the_folder(folder) -> None:
    dm, out = folder
    m = read_manifest(out)
    assert (m.kind, m.classes, m.recipe) == ("folder", ["cat", "dog", "fox"], "imagenet")
    samples = _raw(out / "val")
    files = dm.val_set.samples
    assert len(samples) == len(files) == 18
    for s, (path, label) in zip(samples, files):
        assert bytes(s["image"]) == Path(path).read_bytes() and s["label"] == label
        assert s["name"] == f"{path} (val sample #{s['index']})"
    shards = ShardDataModule(out, batch_size=4, num_workers=0, image_size=32)
    assert (shards.num_classes, shards.in_channels, shards.classes) == (3, 3, m.classes)
    shards.setup("fit")
    x, y = next(iter(shards.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    # evaluation: the very pixels of the folder's torchvision path (same decode, same ops)
    dm.setup("fit")
    ref = [dm.val_set[i] for i in range(len(dm.val_set))]
    got = [(xb, yb) for xb, yb in shards.val_dataloader()]
    xs, ys = torch.cat([g[0] for g in got]), torch.cat([g[1] for g in got])
    order = {s["index"]: i for i, s in enumerate(samples)}  # unshuffled: the split's order
    assert sorted(order) == list(range(len(ref)))
    assert ys.tolist() == [r[1] for r in ref]
    norm = (torch.stack([r[0] for r in ref]).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)
            ) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(xs, norm, atol=1e-5)
    state = shards.state_dict()
    assert state["shards"]["version"] == m.version and state["classes"] == m.classes
    assert state["eval_transform"]["resize_uint8"] is True


def test_shards_take_the_recipes_data_ingredients(digits, folder) -> None:
    """data=shards with a policy, random erasing and a FixRes training size (what
    conf/recipe/ sets): the training batches are augmented at the training size, evaluation is
    untouched; repeated augmentation, which a stream cannot give, is refused naming the fix."""
    from classicnets.data.policies import RandAugmentWithNoise

    opts = dict(policy="randaugment", policy_options={"magnitude": 20}, random_erasing=1.0,
                train_crop_size=24)
    for _, out in (digits, folder):
        plain = ShardDataModule(out, batch_size=8, num_workers=0, image_size=32, shuffle=False)
        recipe = ShardDataModule(out, batch_size=8, num_workers=0, image_size=32,
                                 shuffle=False, **opts)
        for dm in (plain, recipe):
            dm.setup("fit")
        x, _ = next(iter(recipe.train_dataloader()))
        assert x.shape[-2:] == (24, 24)  # FixRes: the training crop
        assert next(iter(plain.train_dataloader()))[0].shape[-2:] == (32, 32)
        ev_plain = next(iter(plain.val_dataloader()))[0]
        ev_recipe = next(iter(recipe.val_dataloader()))[0]
        assert torch.equal(ev_plain, ev_recipe)  # evaluation has no ingredient
    # the per-image policy of the in-memory shards is torchvision's (noise subclass)
    tf = ShardDataModule(digits[1], image_size=32, **opts)._sample(True).tf
    assert any(isinstance(t, RandAugmentWithNoise) for t in tf.transforms)
    with pytest.raises(DatasetError, match=r"data.repeated_augmentation=3.*set "
                                           r"data.repeated_augmentation=1"):
        ShardDataModule(digits[1], repeated_augmentation=3)
    with pytest.raises(DatasetError, match="data.policy='fancy' is not one of"):
        ShardDataModule(digits[1], policy="fancy")


def test_the_shard_command_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "src" / "shard.py"), "data=synthetic",
           "data.num_samples=40", f"out={tmp_path / 's'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_manifest(tmp_path / "s")
    assert m.source == "synthetic" and m.splits["train"]["num_samples"] == 36
    assert "python src/train.py data=shards data.path=" in proc.stderr + proc.stdout
    dm = ImageDataModule("synthetic", num_samples=40, num_classes=10)
    with pytest.raises(DatasetError, match=r"exists and is not empty.*overwrite=true"):
        write_shards(dm, tmp_path / "s", data_config={"name": "synthetic"})


def test_version_ignores_loading_options_only() -> None:
    base = {"name": "cifar10", "val_fraction": 0.1, "seed": 42, "batch_size": 128}
    assert config_version(base) == config_version({**base, "batch_size": 7, "num_workers": 3})
    assert config_version(base) != config_version({**base, "seed": 43})
    assert config_version(base) != config_version({**base, "val_fraction": 0.2})


# --------------------------------------------------------------------------- bad input


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_incomplete_shard_directories_are_refused_naming_what_is_missing(
        digits, tmp_path: Path) -> None:
    _, out = digits
    no_chunk = _copy(out, tmp_path / "a")
    chunk = next((no_chunk / "val").glob("chunk-*.bin"))
    chunk.unlink()
    with pytest.raises(DatasetError, match=rf"incomplete shard directory: chunk .*{chunk.name}"
                                           r" is missing"):
        ShardDataModule(no_chunk)
    no_index = _copy(out, tmp_path / "b")
    (no_index / "test" / "index.json").unlink()
    with pytest.raises(DatasetError, match=r"test/index.json is missing"):
        read_manifest(no_index)
    truncated = _copy(out, tmp_path / "c")
    chunk = next((truncated / "train").glob("chunk-*.bin"))
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"truncated \(100 of"):
        read_manifest(truncated)
    unfinished = _copy(out, tmp_path / "d")
    (unfinished / MANIFEST).unlink()
    with pytest.raises(DatasetError, match=r"no manifest.json.*conversion did not finish.*"
                                           r"src/shard.py"):
        ShardDataModule(unfinished)
    with pytest.raises(DatasetError, match="does not exist"):
        ShardDataModule(tmp_path / "nowhere")


def test_shards_of_another_data_version_are_refused(digits, folder, tmp_path: Path) -> None:
    _, out = digits
    m = read_manifest(out)
    with pytest.raises(DatasetError, match=rf"version {m.version}, but data.version=abc"):
        ShardDataModule(out, version="abc")
    assert ShardDataModule(out, version=m.version).manifest.version == m.version
    # a split of another conversion put beside this manifest
    mixed = _copy(out, tmp_path / "mixed")
    shutil.rmtree(mixed / "val")
    shutil.copytree(folder[1] / "val", mixed / "val")
    with pytest.raises(DatasetError, match=r"val/index.json is not the one written with this "
                                           r"manifest"):
        ShardDataModule(mixed)
    # a checkpoint trained on other shards
    dm = ShardDataModule(out)
    with pytest.raises(DatasetError, match=r"checkpoint was trained on imagefolder shards of "
                                           r"version 0123.*resume with the shards"):
        dm.load_state_dict({"shards": {"source": "imagefolder", "version": "0123"}})
    dm.load_state_dict(dm.state_dict())  # its own: accepted
    with pytest.raises(DatasetError, match="num_classes=5 but the shards"):
        ShardDataModule(out, num_classes=5)


@pytest.mark.parametrize(("url", "names"), [
    ("s3://bucket/imagenet", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")),
    ("gs://bucket/imagenet", ("GOOGLE_APPLICATION_CREDENTIALS", "application-default login")),
    ("azure://container/imagenet", ("AZURE_STORAGE_CONNECTION_STRING",)),
])
def test_object_store_urls_without_credentials_name_the_variables(
        tmp_path: Path, url: str, names: tuple[str, ...],
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError) as err:
        check_credentials(url, env={}, home=tmp_path)
    for name in names:
        assert name in str(err.value)
    # through the DataModule, before anything touches the network
    for key in [k for k in os.environ if k.startswith(("AWS_", "GOOGLE_", "AZURE_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match=names[0]):
        ShardDataModule(url)
    # credentials present (or given as storage options): the check lets it through
    env = {"s3": {"AWS_PROFILE": "research"},
           "gs": {"GOOGLE_APPLICATION_CREDENTIALS": "/k.json"},
           "azure": {"AZURE_STORAGE_CONNECTION_STRING": "x"}}[url.split(":")[0]]
    check_credentials(url, env=env, home=tmp_path)
    check_credentials(url, {"endpoint_url": "https://minio.local"}, env={}, home=tmp_path)


def test_unknown_url_schemes_are_refused() -> None:
    with pytest.raises(DatasetError, match=r"unsupported URL scheme ftp://.*s3://, gs://"):
        check_credentials("ftp://host/shards", env={})


def test_gpu_decoder_without_cuda_is_refused_naming_the_cpu_decoder(
        digits, folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DatasetError, match=r"needs a CUDA device.*data.decoder=torchvision"):
        ImageDataModule("imagefolder", path=tmp_path, num_classes=2, decoder="gpu")
    with pytest.raises(DatasetError, match=r"needs a CUDA device.*data.decoder=torchvision"):
        ShardDataModule(folder[1], decoder="gpu")
    with pytest.raises(DatasetError, match=r"decodes JPEG image files; the shards .* in-memory"):
        ShardDataModule(digits[1], decoder="gpu")
    with pytest.raises(DatasetError, match="is not one of auto, torchvision, gpu"):
        check_decoder("nvjpeg", folder=True)


# --------------------------------------------------------------------------- GPU decoding logic


def _jpeg(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
    Image.fromarray(arr).save(path, quality=92)
    return path


def test_gpu_batches_decode_in_one_call_and_bad_files_fall_back_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import classicnets.data.gpu_decode as gd

    good = [_jpeg(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    png = tmp_path / "p.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(png)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good[0].read_bytes()[:200])  # a JPEG's header, its data cut off
    calls: list[int] = []
    real = gd.decode_jpeg

    def counting(data, **kw):
        calls.append(len(data) if isinstance(data, list) else 1)
        return real(data, **kw)

    monkeypatch.setattr(gd, "decode_jpeg", counting)
    dec = GpuBatchDecoder(train=True, image_size=24, in_channels=3, resize_size=28,
                          mean=MEAN, std=STD, device="cpu")
    samples = [(read_encoded(str(p)), i) for i, p in enumerate(good)]
    payloads, _, names = collate_encoded(samples)
    assert [p.dim() for p in payloads] == [1, 1, 1]  # bytes, not decoded in the worker
    batch, kept = dec(payloads, names)
    assert calls == [3] and kept == [0, 1, 2]  # the whole batch in one decode_jpeg call
    assert batch.shape == (3, 3, 24, 24) and torch.isfinite(batch).all()

    caplog.set_level(logging.WARNING, logger="classicnets.data.gpu_decode")
    calls.clear()
    mixed = [*good, png, broken]
    payloads, _, names = collate_encoded([(read_encoded(str(p)), i)
                                          for i, p in enumerate(mixed)])
    assert payloads[3].dim() == 3  # the PNG was decoded on the CPU in the worker
    batch, kept = dec(payloads, names)
    assert calls[0] == 4 and sum(calls[1:]) == 4  # the batch failed: each JPEG retried alone
    text = caplog.text
    assert f"{png} is not a JPEG file" in text
    assert f"{broken} could not be decoded by nvJPEG" in text
    # the cut-off JPEG: either PIL still reads what is there, or it is left out, by name
    assert kept in ([0, 1, 2, 3, 4], [0, 1, 2, 3])
    if kept == [0, 1, 2, 3]:
        assert f"{broken} is unreadable" in text
    assert batch.shape == (len(kept), 3, 24, 24)


def test_gpu_eval_transform_matches_the_cpu_decoder(tmp_path: Path) -> None:
    from classicnets.data.decode import read_rgb, uint8_folder_transform

    paths = [_jpeg(tmp_path / f"{i}.jpg", 50 + 7 * i, 70, seed=i) for i in range(3)]
    dec = GpuBatchDecoder(train=False, image_size=32, in_channels=3, resize_size=36,
                          mean=MEAN, std=STD, device="cpu")
    payloads, _, names = collate_encoded([(read_encoded(str(p)), 0) for p in paths])
    got, _ = dec(payloads, names)
    tf = uint8_folder_transform(train=False, image_size=32, in_channels=3, resize_size=36)
    ref = torch.stack([tf(read_rgb(str(p))) for p in paths]).float() / 255
    ref = (ref - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    # float resize vs the uint8 kernel: within a level or two of 255 (÷ std ≈ 0.2)
    assert (got - ref).abs().max() < 3 / 255 / 0.22


def test_gpu_decoder_applies_the_recipe_ingredients(tmp_path: Path) -> None:
    """data.decoder=gpu with a policy and random erasing: the policy's batched kernel runs on the
    cropped uint8 batch (the same draws as a BatchPolicy on that batch) and erasing after the
    normalisation, both from the decoder's own seeded generator."""
    from classicnets.data.policies import AugmentPolicy, BatchPolicy

    paths = [_jpeg(tmp_path / f"{i}.jpg", 40 + 5 * i, 48, seed=i) for i in range(4)]
    payloads, _, names = collate_encoded([(read_encoded(str(p)), 0) for p in paths])
    policy = AugmentPolicy.from_config("randaugment", {"magnitude": 20})

    def run(**kw: object) -> torch.Tensor:
        torch.manual_seed(0)  # the crops and flips
        dec = GpuBatchDecoder(train=True, image_size=24, in_channels=3, resize_size=28,
                              mean=MEAN, std=STD, device="cpu", seed=5, **kw)
        return dec(payloads, names)[0]

    plain, augmented = run(), run(policy=policy)
    # the same crops, then the policy from a generator seeded as the decoder's own
    u8 = (plain * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255
    u8 = u8.round().clamp(0, 255).to(torch.uint8)
    want = BatchPolicy(policy, height=24, width=24)(u8, torch.Generator().manual_seed(5))
    want = (want.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1)
    # rebuilding the uint8 batch from the float one can round a pixel at .5 the other way
    diff = (augmented - want).abs()
    assert diff.max() < 1.01 / 255 / min(STD) and (diff < 1e-4).float().mean() > 0.99
    assert not torch.equal(augmented, plain)
    erased = run(random_erasing=1.0)
    changed = (erased != plain).any(1)  # (B, H, W): a rectangle of each image
    assert changed.flatten(1).any(1).all()
    assert run(policy=AugmentPolicy.from_config("none", {})).equal(plain)


def test_folder_datamodule_with_the_gpu_decoder_wiring(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """data.decoder=gpu end to end through ImageDataModule, the device being the CPU here
    (CUDA is pretended: nvJPEG itself is tested by the gpu-marked test below)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    write_image_folder(tmp_path, per_class=4)  # JPEG and PNG mixed
    dm = ImageDataModule("imagefolder", path=tmp_path, num_classes=3, image_size=32,
                         batch_size=6, num_workers=0, decoder="gpu", pin_memory=False,
                         val_fraction=0.25)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        seen = 0
        for x, y in loader:
            assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
            assert len(x) == len(y) and torch.isfinite(x).all()
            seen += len(y)
        assert seen in (len(loader.dataset), len(loader.dataset) - len(loader.dataset) % 6)


@pytest.mark.gpu
def test_gpu_decoder_on_cuda_decodes_folders_and_shards(folder) -> None:
    dm, out = folder
    base = Path(dm.hparams.path)
    cpu = ImageDataModule("imagefolder", path=base, num_classes=3, image_size=32,
                          batch_size=4, num_workers=0)
    gpu = ImageDataModule("imagefolder", path=base, num_classes=3, image_size=32,
                          batch_size=4, num_workers=0, decoder="gpu")
    for d in (cpu, gpu):
        d.setup("fit")
    gpu._device = lambda: torch.device("cuda")  # type: ignore[method-assign]
    (xc, yc), (xg, yg) = next(iter(cpu.val_dataloader())), next(iter(gpu.val_dataloader()))
    assert xg.is_cuda and torch.equal(yc, yg.cpu())
    # nvJPEG vs libjpeg-turbo (chroma upsampling may differ), float vs uint8 resize: close on
    # average (0.1 ≈ 6 of 255 levels after normalisation)
    assert (xg.cpu() - xc).abs().mean() < 0.1
    shards = ShardDataModule(out, batch_size=4, num_workers=0, image_size=32, decoder="gpu")
    shards.setup("fit")
    shards._device = lambda: torch.device("cuda")  # type: ignore[method-assign]
    x, _ = next(iter(shards.train_dataloader()))
    assert x.is_cuda and x.shape == (4, 3, 32, 32)


# --------------------------------------------------------------------------- resuming, DDP


def _with_index(dataset) -> None:
    """Training samples that also carry their position in the split (litdata keeps the
    transform in a list)."""
    tf = dataset.transform
    (tf[0] if isinstance(tf, list) else tf).with_index = True


def _ids(loader) -> list[int]:
    return [i for batch in loader for i in batch[2].tolist()]


def test_a_restored_loader_serves_the_rest_of_its_epoch(digits) -> None:
    _, out = digits

    def loader():
        dm = ShardDataModule(out, batch_size=32, num_workers=0, seed=5)
        dm.setup("fit")
        _with_index(dm.train_set)
        return dm.train_dataloader()

    first = loader()
    epoch0 = _ids(first)
    assert sorted(epoch0) == sorted(set(epoch0)) and len(epoch0) == 1294 // 32 * 32
    epoch1 = _ids(first)
    assert epoch1 != epoch0  # reshuffled every epoch
    part = loader()
    it = iter(part)
    head = [i for _ in range(7) for i in next(it)[2].tolist()]
    state = part.state_dict()
    json.dumps(state)  # plain values: a weights-only checkpoint holds them
    assert head == epoch0[: len(head)]
    again = loader()
    again.load_state_dict(state)
    rest = _ids(again)
    assert rest == epoch0[len(head):]  # the remaining samples, in the epoch's order
    assert _ids(again) == epoch1  # then the next epoch as an uninterrupted run has it


SHARD_IDS = REPO / "tests" / "scripts" / "ddp_shard_ids.py"


def _check_once_per_epoch(tmp_path: Path) -> None:
    n = json.loads((tmp_path / "n_train.json").read_text())
    orders = []
    for epoch in (0, 1):
        r0 = json.loads((tmp_path / f"rank0_epoch{epoch}.json").read_text())
        r1 = json.loads((tmp_path / f"rank1_epoch{epoch}.json").read_text())
        assert len(r0) == len(r1) == n // 2  # n divides into whole batches on both ranks
        assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(n))
        orders.append(r0)
    assert orders[0] != orders[1]  # reshuffled


@pytest.mark.slow
def test_ddp_sim_sees_every_sample_once_per_epoch_across_ranks(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SHARD_IDS), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_once_per_epoch(tmp_path)


@pytest.mark.slow
def test_two_nodes_see_every_sample_once_per_epoch(tmp_path: Path) -> None:
    """2 "nodes" of 1 process each, started by torchrun on the loopback address."""
    import socket

    src = ImageDataModule("synthetic", num_classes=4, num_samples=80, seed=3)
    write_shards(src, tmp_path / "shards", data_config={"name": "synthetic"})
    (tmp_path / "n_train.json").write_text(json.dumps(len(src.train_set)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    procs, logs = [], []
    try:
        for node in (0, 1):
            logs.append(tmp_path / f"node{node}.log")
            with open(logs[-1], "w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                     f"--node_rank={node}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                     f"--master_port={port}", str(SHARD_IDS), str(tmp_path), "nodes"],
                    cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    _check_once_per_epoch(tmp_path)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "tests"),
                                                     os.environ.get("PYTHONPATH")) if p)}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "CLASSICNETS_RUN_NAME"):
        env.pop(key, None)
    return env


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_sees_the_remaining_samples_only(tmp_path: Path) -> None:
    from classicnets.data import ImageDataModule as IDM

    # synthetic noise images: each one's pixel sum identifies it (augmentation off)
    dm = IDM("synthetic", num_samples=80, batch_size=8, num_classes=4, seed=1)
    shards = tmp_path / "shards"
    write_shards(dm, shards, data_config={"name": "synthetic", "num_samples": 80, "seed": 1})
    n = len(dm.train_set)  # 72: 9 steps an epoch
    run, marker, seen = tmp_path / "run", tmp_path / "marker", tmp_path / "seen.jsonl"
    args = [TRAIN, "data=shards", f"data.path={shards}", "data.batch_size=8",
            "data.augment=false", "data.num_workers=1", "model=lenet5", "trainer.max_epochs=2",
            "test=false", f"hydra.run.dir={run}", *QUIET,
            "+callbacks.seen._target_=shard_probes.SampleLog", f"+callbacks.seen.out={seen}"]
    probe = ["+callbacks.probe._target_=fault_probes.PauseAtStep",
             f"+callbacks.probe.marker={marker}", "+callbacks.probe.step=12"]
    log = tmp_path / "first.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, *args, *probe], cwd=tmp_path,
                                env=_env(tmp_path), stdout=fh, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 240
        while not marker.is_file() and time.monotonic() < end:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, log.read_text()[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # plain values
    (state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert 0 < state["num_samples_yielded"] < n
    before = [json.loads(line) for line in seen.read_text().splitlines()]
    again = subprocess.run([sys.executable, TRAIN, f"resume={run}"], cwd=tmp_path,
                           env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    after = [json.loads(line) for line in seen.read_text().splitlines()][len(before):]
    # the epoch it stopped in: what ran before the signal and after the resume, each sample
    # exactly once; the next epoch: every sample once
    stopped = [k for b in before if b["epoch"] == 1 for k in b["keys"]]
    resumed = [k for b in after if b["epoch"] == 1 for k in b["keys"]]
    assert stopped and resumed
    assert len(stopped) + len(resumed) == n and len(set(stopped + resumed)) == n
    epoch0 = [k for b in before if b["epoch"] == 0 for k in b["keys"]]
    assert sorted(epoch0) == sorted(stopped + resumed)
    assert ckpt["global_step"] == 13 == before[-1]["step"]
    assert len(stopped) == state["num_samples_yielded"] == 32  # 4 batches of epoch 1 trained
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 18


@pytest.mark.slow
def test_digits_from_shards_train_as_well_as_in_memory(digits, make_cfg) -> None:
    from classicnets.runs.pipeline import train

    common = ("trainer.max_epochs=6", "data.batch_size=64", *QUIET)
    mem = train(make_cfg("data=digits", *common, out="mem"))[1]["test/acc"]
    shard = train(make_cfg("data=shards", f"data.path={digits[1]}", "data.num_workers=0",
                           *common, out="shards"))[1]["test/acc"]
    assert min(mem, shard) > 0.85, (mem, shard)
    assert abs(mem - shard) < 0.05, (mem, shard)  # same split, model and seed; other draws


def test_benchmark_section_compares_shards_with_the_folder(make_cfg, tmp_path: Path) -> None:
    """`python src/benchmark.py sections=[shards]` at toy size: folder and shards rows, the
    ratio, the GPU rows skipped with the reason on a CPU, the temporary files gone."""
    import math
    import tempfile

    from classicnets.benchmark import run_benchmark

    before = set(Path(tempfile.gettempdir()).glob("classicnets-shards-*"))
    cfg = make_cfg("device=cpu", "sections=[shards]", "rounds=2", "warmup_steps=1",
                   "window_steps=1", "min_window_s=0", "shards.num_images=12",
                   "shards.width=64", "shards.height=48", "shards.image_size=32",
                   "shards.batch_size=4", "shards.num_workers=0", config_name="benchmark",
                   out="bench")
    rows = run_benchmark(cfg)
    assert [(r.section, r.variant) for r in rows] == [("shards", "folder"), ("shards", "shards")]
    folder_row, shard_row = rows
    assert folder_row.ratio == 1.0 and math.isfinite(shard_row.ratio) and shard_row.ratio > 0
    md = (tmp_path / "bench" / "benchmark.md").read_text()
    assert "shards / folder =" in md and "GPU decode rows skipped: no CUDA device" in md
    assert set(Path(tempfile.gettempdir()).glob("classicnets-shards-*")) == before


def test_prediction_reads_the_classes_of_a_checkpoint_trained_on_shards(
        digits, tmp_path: Path) -> None:
    from classicnets.inference.predict import _saved_data

    dm = ShardDataModule(digits[1])
    path = tmp_path / "x.ckpt"
    torch.save({"ShardDataModule": dm.state_dict(), "datamodule_hyper_parameters":
                dict(dm.hparams)}, path)
    state, hparams = _saved_data(path, trust=False)
    assert state["classes"] == [str(i) for i in range(10)]
    assert state["eval_transform"]["image_size"] == 32 and hparams["path"] == str(digits[1])
    assert "storage_options" not in hparams  # may hold secrets: never in a checkpoint


def test_tower_parallelism_is_refused(digits) -> None:
    """trainer=towers: two processes, one data replica (both towers need the same batch), but
    litdata gives every process its own samples."""
    from types import SimpleNamespace

    dm = ShardDataModule(digits[1], batch_size=8)
    towers = SimpleNamespace(world_size=2, strategy=SimpleNamespace(
        distributed_sampler_kwargs={"num_replicas": 1, "rank": 0}))
    ddp = SimpleNamespace(world_size=2, strategy=SimpleNamespace(
        distributed_sampler_kwargs={"num_replicas": 2, "rank": 1}))
    object.__setattr__(dm, "trainer", towers)
    with pytest.raises(DatasetError, match="trainer=towers need the same batch: use trainer=ddp"):
        dm.setup("fit")
    object.__setattr__(dm, "trainer", ddp)
    assert dm.per_device_batch_size == 4
