"""The on-device fast data path: correctness and the same augmentation distribution as the
ordinary per-image torchvision path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from classicnets.data import ArrayData, BatchTransform, DeviceLoader, ImageDataModule
from classicnets.data.catalogue import DatasetError
from classicnets.data.transforms import Distortion, sample_transform

REPO = Path(__file__).resolve().parents[1]
SIZE, PAD = 32, 4


def _position_image() -> torch.Tensor:
    """3×32×32 uint8: channel 0 holds row+1, channel 1 column+1 (0 is reserved for padding)."""
    r = torch.arange(SIZE).view(-1, 1).expand(SIZE, SIZE) + 1
    c = torch.arange(SIZE).view(1, -1).expand(SIZE, SIZE) + 1
    return torch.stack([r, c, torch.zeros_like(r)]).to(torch.uint8)


def _decode(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop offsets (0..2·PAD per axis) and flip flags of augmented position images."""
    out = out.round().long()  # values in pixel units
    flipped = (out[:, 1, PAD, PAD + 1] - out[:, 1, PAD, PAD]) < 0
    col = torch.where(flipped, torch.full_like(flipped, SIZE - 1 - PAD, dtype=torch.long),
                      torch.full_like(flipped, PAD, dtype=torch.long))
    idx = torch.arange(len(out))
    oy = out[idx, 0, PAD, col] - 1
    ox = out[idx, 1, PAD, col] - 1
    return oy, ox, flipped


def _chi2_uniform(values: torch.Tensor, bins: int) -> float:
    counts = torch.bincount(values, minlength=bins).double()
    expected = len(values) / bins
    return float(((counts - expected) ** 2 / expected).sum())


def _fast_samples(n: int) -> torch.Tensor:
    tf = BatchTransform("crop_flip", train=True, native_size=SIZE, image_size=SIZE,
                        mean=(0.0,) * 3, std=(1.0 / 255,) * 3)
    batch = _position_image().expand(n, -1, -1, -1).contiguous()
    return tf(batch, torch.Generator().manual_seed(0))


def test_batched_crop_and_flip_are_uniform() -> None:
    n = 9000
    oy, ox, flipped = _decode(_fast_samples(n))
    assert oy.min() >= 0 and oy.max() == 2 * PAD and ox.max() == 2 * PAD
    # chi-square with 8 degrees of freedom: 26.1 is the 0.1 % critical value
    assert _chi2_uniform(oy, 2 * PAD + 1) < 26.1
    assert _chi2_uniform(ox, 2 * PAD + 1) < 26.1
    assert abs(flipped.double().mean().item() - 0.5) < 0.02
    # offsets on the two axes are drawn independently
    joint = oy * (2 * PAD + 1) + ox
    assert _chi2_uniform(joint, (2 * PAD + 1) ** 2) < 124.8  # df = 80, 0.1 %


def test_batched_crop_matches_the_torchvision_path() -> None:
    """Both paths give the same crop/flip distribution (two-sample chi-square)."""
    tv = sample_transform("crop_flip", train=True, native_size=SIZE, image_size=SIZE,
                          mean=(0.0,) * 3, std=(1.0 / 255,) * 3)
    img = _position_image()
    torch.manual_seed(0)
    slow = torch.stack([tv(img) for _ in range(3000)])
    fast = _fast_samples(3000)
    for a, b in zip(_decode(slow), _decode(fast)):
        ca = torch.bincount(a.long(), minlength=2 * PAD + 1).double()
        cb = torch.bincount(b.long(), minlength=2 * PAD + 1).double()
        keep = (ca + cb) > 0
        chi2 = (((ca - cb) ** 2) / (ca + cb))[keep].sum().item()
        assert chi2 < 26.1, (ca, cb)


# --------------------------------------------------------------------------- distortions

DIST = Distortion(degrees=10, translate=0.1, scale=(0.9, 1.1), shear=10)
NATIVE, OUT = 16, 32  # distorted after the resize, as digits (8 → 32 px)


def _blob_probe() -> torch.Tensor:
    """3×16×16 uint8: one Gaussian blob per channel at three non-collinear points, so the
    three centroids after a distortion give its affine map (and its orientation)."""
    yy, xx = torch.meshgrid(torch.arange(NATIVE) + 0.5, torch.arange(NATIVE) + 0.5,
                            indexing="ij")
    centres = [(8.0 - 2.5, 8.0 - 2.0), (8.0 - 2.0, 8.0 + 2.5), (8.0 + 2.5, 8.0)]
    blobs = [torch.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 0.8**2)) for y, x in centres]
    return torch.stack(blobs).mul(255).round().to(torch.uint8)


def _centroids(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 2)`` (x, y) centroid of each channel, in pixels from the image centre."""
    size = x.shape[-1]
    coord = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    w = x.double().clamp_min(0)
    mass = w.sum((-1, -2))
    cx = (w.sum(-2) * coord).sum(-1) / mass
    cy = (w.sum(-1) * coord).sum(-1) / mass
    return torch.stack([cx, cy], -1)


def _affine_params(out: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rotation, scale, shear (degrees), shift and determinant of the map taking the
    undistorted centroids ``ref`` to those of each distorted image (torchvision's
    parametrisation: M = scale · R(angle) · [[1, -tan shear], [0, 1]], then the shift)."""
    q = _centroids(out)  # (B, 3, 2)
    p = _centroids(ref)[0]  # (3, 2)
    dp, dq = (p[1:] - p[0]).T, (q[:, 1:] - q[:, :1]).transpose(1, 2)  # columns: edge vectors
    m = dq @ torch.linalg.inv(dp)  # (B, 2, 2)
    t = q[:, 0] - (m @ p[0].view(2, 1)).squeeze(-1)
    det = torch.linalg.det(m)
    scale = det.abs().sqrt()
    angle = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # R(angle)^-1 · second column / scale = (-tan shear, 1)
    tan_shear = -(cos * m[:, 0, 1] + sin * m[:, 1, 1]) / scale
    return {"angle": torch.rad2deg(angle), "scale": scale,
            "shear": torch.rad2deg(torch.atan(tan_shear)), "tx": t[:, 0], "ty": t[:, 1],
            "det": det}


def _distorted(n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The distortion parameters seen in ``n`` probes through each path (fast, torchvision)."""
    common = {"native_size": NATIVE, "image_size": OUT, "mean": (0.0,) * 3, "std": (1.0,) * 3}
    probe = _blob_probe()
    ref = BatchTransform("none", train=False, **common)(probe[None])
    fast = BatchTransform("distort", train=True, distortion=DIST, **common)(
        probe.expand(n, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))
    tv = sample_transform("distort", train=True, distortion=DIST, **common)
    torch.manual_seed(0)
    slow = torch.stack([tv(probe) for _ in range(n)])
    return _affine_params(fast, ref), _affine_params(slow, ref)


@pytest.fixture(scope="module")
def distorted() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return _distorted(2000)


def test_distortions_stay_in_their_ranges_and_never_flip(distorted) -> None:
    for params in distorted:
        assert (params["det"] > 0).all()  # a reflection would reverse the blobs' orientation
        # centroids of resampled blobs are exact to a few hundredths of a pixel
        assert params["angle"].abs().max() < DIST.degrees + 0.5
        assert params["shear"].abs().max() < DIST.shear + 0.5
        assert params["scale"].min() > 0.9 - 0.01 and params["scale"].max() < 1.1 + 0.01
        for axis in ("tx", "ty"):  # whole-pixel shifts up to round(0.1 · 32) = 3
            shift = params[axis]
            assert (shift - shift.round()).abs().max() < 0.1
            assert set(shift.round().long().tolist()) == set(range(-3, 4))
        # each range is used: a uniform draw fills it (2000 draws: ends within 2 %)
        for key, high in (("angle", DIST.degrees), ("shear", DIST.shear)):
            assert params[key].max() > 0.95 * high and params[key].min() < -0.95 * high


def test_batched_distortion_matches_the_torchvision_path(distorted) -> None:
    """Both paths draw the same distortions: two-sample Kolmogorov–Smirnov per parameter,
    two-sample chi-square on the whole-pixel shifts."""
    from scipy.stats import ks_2samp

    fast, slow = distorted
    for key in ("angle", "scale", "shear"):
        assert ks_2samp(fast[key].numpy(), slow[key].numpy()).pvalue > 1e-3, key
    for axis in ("tx", "ty"):
        ca = torch.bincount(fast[axis].round().long() + 3, minlength=7).double()
        cb = torch.bincount(slow[axis].round().long() + 3, minlength=7).double()
        keep = (ca + cb) > 0
        assert (((ca - cb) ** 2) / (ca + cb))[keep].sum().item() < 22.5, (ca, cb)  # df 6, 0.1 %
    # a uniform angle: chi-square against 10 equal bins of [-10°, 10°]
    bins = ((fast["angle"] + DIST.degrees) / (2 * DIST.degrees) * 10).floor().long().clamp(0, 9)
    assert _chi2_uniform(bins, 10) < 27.9  # df 9, 0.1 %


def test_distortion_is_reproducible_and_resumable() -> None:
    """Same seed, same distortions; skipping a batch draws what transforming it would."""
    tf = BatchTransform("distort", train=True, native_size=8, image_size=32, mean=(0.0,),
                        std=(1.0,), distortion=DIST)
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    tf(x, g1)
    tf.skip(len(x), g2)
    second = tf(x, g1)
    assert torch.equal(second, tf(x, g2))
    assert not torch.equal(second, tf(x, torch.Generator().manual_seed(3)))


def test_digits_default_distorts_on_both_paths() -> None:
    dm = {kind: ImageDataModule("digits", image_size=32, batch_size=32, loader=kind,
                                augment="distort", distortion={"degrees": 5}, num_workers=0)
          for kind in ("fast", "torch")}
    for d in dm.values():
        d.setup("fit")
    fast = dm["fast"].train_dataloader().transform
    assert fast.distortion == Distortion(degrees=5)  # the other ranges keep their defaults
    slow = dm["torch"].train_dataloader().dataset.transform
    (affine,) = [t for t in slow.transforms if isinstance(t, v2.RandomAffine)]
    assert affine.degrees == [-5.0, 5.0] and affine.scale == (0.9, 1.1)
    assert dm["fast"].val_dataloader().transform.distortion is None  # evaluation: none
    with pytest.raises(DatasetError, match="distort"):
        ImageDataModule("digits", augment="flip")
    with pytest.raises(DatasetError, match="unknown data.distortion keys"):
        ImageDataModule("digits", augment="distort", distortion={"rotate": 5})


def _id_data(n: int = 100) -> ArrayData:
    """Each image is filled with its label so misaligned pairs are detectable."""
    labels = torch.arange(n) % 251
    images = labels.view(-1, 1, 1, 1).expand(n, 1, 8, 8).to(torch.uint8).contiguous()
    return ArrayData(images, labels, [str(i) for i in range(251)])


def _plain_transform() -> BatchTransform:
    return BatchTransform("none", train=False, native_size=8, image_size=8, mean=(0.0,),
                          std=(1.0 / 255,))


def test_labels_stay_aligned_after_shuffling() -> None:
    loader = DeviceLoader(_id_data(), batch_size=16, transform=_plain_transform(), shuffle=True)
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
        assert torch.equal(x[:, 0, 4, 4].round().long(), y)
        seen += y.tolist()
    assert sorted(seen) == list(range(100)) and seen != list(range(100))


def test_shuffles_every_epoch_and_is_reproducible() -> None:
    def order(epoch: int, seed: int = 0) -> list[int]:
        loader = DeviceLoader(_id_data(), batch_size=10, transform=_plain_transform(),
                              shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return torch.cat([y for _, y in loader]).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0, seed=1) != order(0, seed=0)


def test_rank_shards_are_disjoint_and_cover_the_data() -> None:
    shards = []
    for rank in range(3):
        loader = DeviceLoader(_id_data(99), batch_size=5, transform=_plain_transform(),
                              shuffle=True, rank=rank, world_size=3)
        shards.append(torch.cat([y for _, y in loader]).tolist())
        assert len(loader) == 7  # ceil(33 / 5): every rank runs the same number of steps
    assert all(len(s) == 33 for s in shards)
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
    assert set().union(*shards) == set(range(99))


def test_drop_last_and_partial_batches() -> None:
    loader = DeviceLoader(_id_data(50), batch_size=16, transform=_plain_transform(),
                          drop_last=True)
    assert len(loader) == 3 and all(len(y) == 16 for _, y in loader)
    loader.drop_last = False
    assert [len(y) for _, y in loader] == [16, 16, 16, 2]


def test_fast_and_torch_paths_agree_without_augmentation() -> None:
    batches = {}
    for kind in ("fast", "torch"):
        dm = ImageDataModule("digits", image_size=32, batch_size=64, loader=kind, num_workers=0)
        dm.setup("test")
        batches[kind] = next(iter(dm.test_dataloader()))
    (xf, yf), (xt, yt) = batches["fast"], batches["torch"]
    assert torch.equal(yf, yt)
    assert torch.allclose(xf, xt, atol=2e-2)  # same resize, up to interpolation rounding


@pytest.mark.slow
def test_ddp_sim_ranks_see_disjoint_shards(tmp_path: Path) -> None:
    script = REPO / "tests" / "scripts" / "ddp_shards.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in (0, 1):
        r0 = json.loads((tmp_path / f"rank0_epoch{epoch}.json").read_text())
        r1 = json.loads((tmp_path / f"rank1_epoch{epoch}.json").read_text())
        assert len(r0) == len(r1) == 32
        assert not set(r0) & set(r1) and set(r0) | set(r1) == set(range(64))
    first = json.loads((tmp_path / "rank0_epoch0.json").read_text())
    assert first != json.loads((tmp_path / "rank0_epoch1.json").read_text())  # reshuffled


@pytest.mark.slow
def test_fast_and_torch_paths_reach_the_same_accuracy_on_digits(make_cfg) -> None:
    from classicnets.runs.pipeline import train

    accs = {}
    for kind in ("fast", "torch"):
        cfg = make_cfg(f"data.loader={kind}", "data.num_workers=0", "trainer.max_epochs=8",
                       "extras.print_config=false", "~callbacks.rich_progress_bar",
                       "trainer.enable_progress_bar=false", out=kind)
        accs[kind] = train(cfg)[1]["test/acc"]
    assert min(accs.values()) > 0.9, accs
    assert abs(accs["fast"] - accs["torch"]) < 0.04, accs


def test_pair_to_device_moves_pairs_and_leaves_the_rest_to_lightning() -> None:
    from classicnets.data import pair_to_device

    x, y = torch.zeros(2, 3), torch.ones(2, dtype=torch.long)
    moved = pair_to_device((x, y), torch.device("cpu"))
    assert type(moved) is tuple and moved[0] is x and moved[1] is y  # already there: no copy
    assert type(pair_to_device([x, y], torch.device("cpu"))) is list
    assert pair_to_device({"x": x}, torch.device("cpu")) is None
    assert pair_to_device((x, 3), torch.device("cpu")) is None


def test_docs_state_the_digits_baselines() -> None:
    """scikit-learn's ``SVC()`` and 3-NN on the main job's split (fitted on its train+val
    images as [0, 1] pixels, scored on its test images): the figures the docs' main job
    (docs/getting-started.md) sets the distortion-trained LeNet-5 against."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    from classicnets.data.catalogue import read_digits

    train, test = read_digits(REPO, "train"), read_digits(REPO, "test")
    x, xt = (d.images.flatten(1).double().div(255).numpy() for d in (train, test))
    y, yt = train.labels.numpy(), test.labels.numpy()
    svc = (SVC().fit(x, y).predict(xt) == yt).mean()
    knn = (KNeighborsClassifier(3).fit(x, y).predict(xt) == yt).mean()
    page = (REPO / "docs" / "getting-started.md").read_text()
    assert f"`SVC()` {100 * svc:.1f} %" in page, svc
    assert f"3-NN {100 * knn:.1f} %" in page, knn
