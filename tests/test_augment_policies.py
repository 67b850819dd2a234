"""Augmentation policies, random erasing, repeated augmentation and FixRes (data.policy,
data.random_erasing, data.repeated_augmentation, data.train_crop_size): each batched kernel of
the fast path against torchvision's per-image reference, the two paths drawing the same
distribution, an exact mid-epoch resume with a policy, the sampler's sharding, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import chi2_contingency, ks_2samp
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from classicnets.data import ArrayData, BatchTransform, DatasetError, DeviceLoader, ImageDataModule
from classicnets.data.policies import (
    AugmentPolicy,
    BatchPolicy,
    BatchRandomErasing,
    RandAugmentWithNoise,
    _space,
    apply_op,
)
from classicnets.data.repeated import RepeatedAugmentationSampler, repeated_order
from formats import write_image_folder

REPO = Path(__file__).resolve().parents[1]
FILL = {torch.Tensor: None, tv_tensors.Image: None}


def _images(n: int, c: int = 3, h: int = 12, w: int = 14, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


# ------------------------------------------------------------------ batched ops = torchvision
def _cases() -> list[tuple[str, str, float]]:
    """(policy, op, magnitude) over every operation of every policy, at three magnitudes
    (the ends of the range and a negated middle one for signed ops)."""
    out = []
    for policy in ("trivialaugment", "randaugment", "autoaugment", "augmix"):
        for op, (fn, signed) in _space(policy).items():
            mags = fn(10, 12, 14)
            if mags is None:
                out.append((policy, op, 0.0))
                continue
            out += [(policy, op, float(mags[1])), (policy, op, float(mags[-1]))]
            if signed:
                out.append((policy, op, -float(mags[5])))
    return out


@pytest.mark.parametrize("channels", [3, 1])
def test_every_batched_operation_equals_torchvision_per_image(channels: int) -> None:
    """Each operation of the batched kernel, image i at magnitude m[i], gives exactly what
    torchvision's per-image kernel gives (the one its policies call) for that image and
    magnitude: nearest for the policies, bilinear for AugMix, colour and grey images."""
    x = _images(4, c=channels)
    reference = v2.RandAugment()  # any policy: the kernel (_apply_image_or_video_transform)
    for policy, op, m in _cases():
        mode = "bilinear" if policy == "augmix" else "nearest"
        mags = torch.tensor([m, m, m / 2, m])  # different magnitudes in one batch too
        got = apply_op(op, x, mags, interpolation=mode)
        want = torch.stack([reference._apply_image_or_video_transform(
            xi, op, float(mi), interpolation=TF.InterpolationMode(mode), fill=FILL)
            for xi, mi in zip(x, mags)])
        assert torch.equal(got, want), (policy, op, m)


def test_randaugment_without_noise_is_torchvisions_draw_for_draw() -> None:
    x = _images(1)[0]
    ours = AugmentPolicy(name="randaugment", num_ops=3, magnitude=12).per_image()
    theirs = v2.RandAugment(num_ops=3, magnitude=12)
    for seed in range(20):
        torch.manual_seed(seed)
        a = ours(x)
        torch.manual_seed(seed)
        assert torch.equal(a, theirs(x))


def test_randaugment_noise_draws_normal_bins_per_image() -> None:
    """m9-mstd0.5: each image's magnitude bin is N(9, 0.5) rounded, clipped to the bins; std
    3 at m=1 clips at 0."""
    t = RandAugmentWithNoise(num_ops=1, magnitude=9, magnitude_std=0.5)
    seen: list[int] = []
    original = v2.RandAugment.forward

    def spy(self: v2.RandAugment, *inputs: object) -> object:
        seen.append(self.magnitude)
        return original(self, *inputs)

    x = _images(1, h=6, w=6)[0]
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(v2.RandAugment, "forward", spy)
        for _ in range(2000):
            t(x)
    counts = torch.bincount(torch.tensor(seen), minlength=31)
    # N(9, 0.5) rounded: P(8) = P(10) = 0.159, P(9) = 0.683, beyond: 0.0003
    assert abs(counts[9] / 2000 - 0.683) < 0.04 and abs(counts[8] / 2000 - 0.159) < 0.03
    assert counts[[i for i in range(31) if i not in (7, 8, 9, 10, 11)]].sum() == 0
    assert t.magnitude == 9  # restored after each call
    wide = AugmentPolicy(name="randaugment", magnitude=1, magnitude_std=3.0)
    draws = BatchPolicy(wide, height=8, width=8)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(5000, generator=g)
    expected = (1 + 3.0 * noise).round().clamp(0, 30)
    assert expected.min() == 0 and (expected == 0).float().mean() > 0.3  # the clip is used
    # the batched path draws its bins the same way (first numbers of its generator)
    steps = draws._draw(5000, torch.device("cpu"), torch.Generator().manual_seed(0))
    (op, m), _ = steps
    table = draws.ops.table[op, expected.long()]
    assert torch.equal(m.abs(), table)


# ------------------------------------------------------------------ the two paths' distributions
def _record_per_image(policy: AugmentPolicy, x: torch.Tensor, n: int
                      ) -> tuple[list[tuple[str, float]], torch.Tensor]:
    """Operations and magnitudes torchvision's per-image policy applies to ``n`` copies of
    ``x``, and the outputs."""
    t = policy.per_image()
    calls: list[tuple[str, float]] = []
    kernel = t._apply_image_or_video_transform

    def spy(image, op, magnitude, **kw):  # type: ignore[no-untyped-def]
        calls.append((op, magnitude))
        return kernel(image, op, magnitude, **kw)

    t._apply_image_or_video_transform = spy
    torch.manual_seed(1)
    out = torch.stack([t(x) for _ in range(n)])
    return calls, out


def _record_batched(policy: AugmentPolicy, x: torch.Tensor, n: int
                    ) -> tuple[list[tuple[str, float]], torch.Tensor]:
    bp = BatchPolicy(policy, height=x.shape[-2], width=x.shape[-1])
    g = torch.Generator().manual_seed(2)
    steps = bp._draw(n, x.device, g)
    calls = []
    for op, m in steps:
        calls += [(bp.ops.names[o], float(v)) for o, v in zip(op.tolist(), m.tolist())
                  if bp.ops.names[o] != "Identity" or policy.name != "autoaugment"]
    out = bp(x.expand(n, -1, -1, -1).contiguous(), torch.Generator().manual_seed(2))
    return calls, out


@pytest.mark.parametrize("policy", [
    AugmentPolicy(name="trivialaugment"),
    AugmentPolicy(name="randaugment", num_ops=2, magnitude=9, magnitude_std=0.5),
    AugmentPolicy(name="autoaugment", autoaugment_policy="imagenet"),
    AugmentPolicy(name="autoaugment", autoaugment_policy="svhn"),
], ids=lambda p: f"{p.name}-{p.autoaugment_policy}")
def test_batched_policy_draws_what_torchvision_draws(policy: AugmentPolicy) -> None:
    """Per-operation frequencies (chi-square of the two samples), each operation's magnitudes
    (two-sample KS) and the output pixels' mean and spread agree between the paths."""
    n = 1500
    x = _images(1, h=10, w=10, seed=5)[0]
    calls_a, out_a = _record_per_image(policy, x, n)
    calls_b, out_b = _record_batched(policy, x, n)
    names = sorted({c[0] for c in calls_a + calls_b})
    counts = torch.tensor([[sum(c[0] == k for c in calls) for k in names]
                           for calls in (calls_a, calls_b)])
    assert len(calls_a) > 0.9 * n
    assert chi2_contingency(counts.numpy()).pvalue > 1e-3, (names, counts)
    for k in names:
        ma = [m for o, m in calls_a if o == k]
        mb = [m for o, m in calls_b if o == k]
        if len(ma) > 30 and len(set(ma + mb)) > 1:
            assert ks_2samp(ma, mb).pvalue > 1e-3, k
    fa, fb = out_a.float(), out_b.float()
    assert abs(fa.mean() - fb.mean()) < 3.0 and abs(fa.std() - fb.std()) < 3.0
    # per-pixel means: the spatial pattern of the geometric ops (zero fill where shifted) too
    assert (fa.mean(0) - fb.mean(0)).abs().mean() < 6.0


def test_batched_augmix_matches_torchvision_in_distribution() -> None:
    """AugMix: the output mixes match per pixel in mean and spread over many draws, and each
    output stays a convex mix (within the range of the augmented images)."""
    n = 600
    x = _images(1, h=10, w=10, seed=7)[0]
    policy = AugmentPolicy(name="augmix")
    torch.manual_seed(0)
    t = policy.per_image()
    a = torch.stack([t(x) for _ in range(n)]).float()
    b = BatchPolicy(policy, height=10, width=10)(
        x.expand(n, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0)).float()
    assert abs(a.mean() - b.mean()) < 3.0 and abs(a.std() - b.std()) < 3.0
    assert (a.mean(0) - b.mean(0)).abs().mean() < 6.0
    assert (a.std(0) - b.std(0)).abs().mean() < 6.0
    assert not torch.equal(b[0], b[1])  # each image its own chains


@pytest.mark.parametrize("name", ["randaugment", "autoaugment", "augmix"])
def test_grouped_and_whole_batch_application_give_the_same_images(name: str) -> None:
    """The CPU's grouping by operation and the GPU's sync-free whole-batch form (forced here on
    the CPU) are the same images; erasing boxes are the same too (noise is drawn per form)."""
    x = _images(40, h=10, w=10, seed=3)
    policy = AugmentPolicy(name=name, magnitude_std=0.5)
    a, b = (BatchPolicy(policy, height=10, width=10, grouped=grouped)(
        x, torch.Generator().manual_seed(9)) for grouped in (True, False))
    assert torch.equal(a, b)
    flat = torch.full((200, 3, 8, 8), 100.0)
    erased = [BatchRandomErasing(0.5, grouped=grouped)(flat.clone(),
                                                       torch.Generator().manual_seed(1)) != 100.0
              for grouped in (True, False)]
    assert torch.equal(*erased) and erased[0].any()


def test_batched_random_erasing_draws_what_torchvision_draws() -> None:
    """Probability, erased area and box shape of the batched erasing match torchvision's
    ``RandomErasing(value="random")``, and the fill is standard normal noise."""
    n, p = 3000, 0.6
    x = torch.full((n, 3, 16, 16), 100.0)  # far outside N(0, 1): erased pixels are visible
    out = BatchRandomErasing(p)(x.clone(), torch.Generator().manual_seed(0))
    t = v2.RandomErasing(p=p, value="random")
    torch.manual_seed(0)
    ref = torch.stack([t(x[0]) for _ in range(n)])

    def stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        erased = y[:, 0] != 100.0
        area = erased.flatten(1).sum(1).float()
        rows = erased.any(2).sum(1).float()
        return area, rows, y[y != 100.0]

    area_a, rows_a, fill_a = stats(out)
    area_b, rows_b, fill_b = stats(ref)
    assert abs((area_a > 0).float().mean() - (area_b > 0).float().mean()) < 0.04
    assert abs((area_a > 0).float().mean() - p) < 0.04
    assert ks_2samp(area_a[area_a > 0], area_b[area_b > 0]).pvalue > 1e-3
    assert ks_2samp(rows_a[rows_a > 0], rows_b[rows_b > 0]).pvalue > 1e-3
    assert abs(fill_a.mean()) < 0.02 and abs(fill_a.std() - 1) < 0.02
    assert abs(fill_b.std() - fill_a.std()) < 0.03


def test_folder_batches_are_erased_after_normalisation_from_a_seeded_generator() -> None:
    """The torchvision-decoder path erases in BatchNormalize: each batch new boxes, the same
    seed the same boxes, another seed (another DDP rank) other ones."""
    from classicnets.data.decode import BatchNormalize

    x = torch.full((64, 3, 8, 8), 128, dtype=torch.uint8)
    plain = BatchNormalize((0.5,) * 3, (0.5,) * 3)(x)

    def erased(seed: int) -> list[torch.Tensor]:
        finish = BatchNormalize((0.5,) * 3, (0.5,) * 3, random_erasing=0.5, seed=seed)
        return [finish(x) != plain for _ in range(2)]

    a, b = erased(1), erased(1)
    assert 0.2 < a[0].flatten(1).any(1).float().mean() < 0.8  # about half the images erased
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], erased(2)[0])


# ------------------------------------------------------------------ fast path: exact resume
def _policy_loader(device: str = "cpu") -> DeviceLoader:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 12, 12), dtype=torch.uint8, generator=g)
    data = ArrayData(images, torch.arange(60) % 10, [str(i) for i in range(10)])
    tf = BatchTransform("crop_flip", train=True, native_size=12, image_size=12,
                        mean=(0.5,) * 3, std=(0.25,) * 3,
                        policy=AugmentPolicy(name="randaugment", magnitude_std=0.5),
                        random_erasing=0.5)
    return DeviceLoader(data, batch_size=8, transform=tf, shuffle=True, seed=4, repeats=2,
                        device=device)


def test_fast_path_with_a_policy_resumes_mid_epoch_exactly() -> None:
    """A loader restored after ``served`` batches serves exactly the rest of the epoch an
    uninterrupted one serves: the skipped batches' policy and erasing draws are consumed."""
    full = _policy_loader()
    full.set_epoch(2)
    batches = list(full)
    for served in (1, 4):
        part = _policy_loader()
        part.load_state_dict({"epoch": 2, "batches": served})
        part.set_epoch(2)
        rest = list(part)
        assert len(rest) == len(batches) - served
        for (x, y), (x2, y2) in zip(batches[served:], rest):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    again = _policy_loader()
    again.set_epoch(3)
    assert not torch.equal(next(iter(again))[0], batches[0][0])  # a new epoch, new draws


# ------------------------------------------------------------------ repeated augmentation
def test_repeated_sampler_shards_repeats_and_keeps_the_epoch_length() -> None:
    n, k = 50, 3
    for world in (1, 2, 4):
        per_rank = [list(RepeatedAugmentationSampler(range(n), repeats=k, num_replicas=world,
                                                     rank=r, seed=1)) for r in range(world)]
        assert all(len(s) == math.ceil(n / world) for s in per_rank)  # epoch length kept
        everything = torch.tensor([i for s in per_rank for i in s])
        counts = torch.bincount(everything, minlength=n)
        assert counts.max() <= k  # each image at most k times over all ranks together
        # about n / k distinct images an epoch, nearly all k times
        assert abs(int((counts > 0).sum()) - math.ceil(n / k)) <= 1
        if world >= k:  # the copies of an image go to different ranks
            assert all(len(set(s)) == len(s) for s in per_rank)
    one = RepeatedAugmentationSampler(range(n), repeats=k, seed=1)
    first = list(one)
    assert first[:k] == [first[0]] * k  # consecutive copies on one rank
    one.set_epoch(1)
    assert list(one) != first
    with pytest.raises(ValueError, match="repeats"):
        repeated_order(10, repeats=0, num_replicas=1, rank=0, seed=0, epoch=0)


def test_both_paths_repeat_the_same_order() -> None:
    """The fast loader and the DataLoader sampler serve the same label order with repeats."""
    labels = {}
    for loader in ("fast", "torch"):
        dm = ImageDataModule("digits", batch_size=30, loader=loader, num_workers=0,
                             augment=False, repeated_augmentation=3)
        dm.setup("fit")
        train = dm.train_dataloader()
        if loader == "torch":
            assert isinstance(train.sampler, RepeatedAugmentationSampler)
        train.sampler.set_epoch(1)
        labels[loader] = torch.cat([y for _, y in train])
    assert torch.equal(labels["fast"], labels["torch"])
    assert len(labels["fast"]) == len(dm.train_set) - len(dm.train_set) % 30  # drop_last


@pytest.mark.slow
def test_ddp_ranks_keep_the_repeated_sampler(tmp_path: Path) -> None:
    """Under Lightning DDP (2 CPU processes) the DataLoader path keeps our sampler (Lightning
    wraps no second distributed sampler around it): with k = 2 = the world size, both ranks see
    the same 32 distinct images of the 64, each once, the epoch length kept."""
    script = REPO / "tests" / "scripts" / "ddp_shards.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "torch", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0_epoch0.json").read_text())
    r1 = json.loads((tmp_path / "rank1_epoch0.json").read_text())
    assert len(r0) == len(r1) == 32 and len(set(r0)) == 32
    assert set(r0) == set(r1)


# ------------------------------------------------------------------ FixRes and the datamodule
def test_fixres_trains_at_the_crop_and_evaluates_at_image_size(tmp_path: Path) -> None:
    for loader in ("fast", "torch"):
        dm = ImageDataModule("digits", image_size=32, train_crop_size=24, batch_size=16,
                             loader=loader, num_workers=0, policy="trivialaugment",
                             random_erasing=0.5)
        dm.setup("fit")
        assert next(iter(dm.train_dataloader()))[0].shape[-2:] == (24, 24)
        assert next(iter(dm.val_dataloader()))[0].shape[-2:] == (32, 32)
        assert dm.eval_transform.image_size == 32
    write_image_folder(tmp_path, splits=("train", "val"), size=40)
    for decoder in ("torchvision", "pil"):
        dm = ImageDataModule("imagefolder", path=tmp_path, num_classes=3, image_size=32,
                             resize_size=36, train_crop_size=28, batch_size=6, num_workers=0,
                             decoder=decoder, policy="autoaugment", random_erasing=1.0)
        dm.setup("fit")
        x, _ = next(iter(dm.train_dataloader()))
        assert x.shape[-2:] == (28, 28)
        assert next(iter(dm.val_dataloader()))[0].shape[-2:] == (32, 32)
        assert dm.eval_transform.resize_size == 36


def test_policy_and_erasing_reach_both_in_memory_paths() -> None:
    dm = {kind: ImageDataModule("digits", batch_size=16, loader=kind, num_workers=0,
                                policy="autoaugment",
                                policy_options={"autoaugment_policy": "cifar10"},
                                random_erasing=0.25)
          for kind in ("fast", "torch")}
    for d in dm.values():
        d.setup("fit")
    fast = dm["fast"].train_dataloader().transform
    assert fast.policy.policy.autoaugment_policy == "cifar10" and fast.erasing.p == 0.25
    assert dm["fast"].val_dataloader().transform.policy is None  # evaluation: none
    ops = dm["torch"].train_dataloader().dataset.transform.transforms
    assert any(isinstance(t, v2.AutoAugment) and t.policy == v2.AutoAugmentPolicy.CIFAR10
               for t in ops)
    assert isinstance(ops[-1], v2.RandomErasing) and ops[-1].value is None  # random fill
    evals = dm["torch"].val_dataloader().dataset.transform.transforms
    assert not any(isinstance(t, (v2.AutoAugment, v2.RandomErasing)) for t in evals)


def test_every_dataset_config_has_the_options_switched_off() -> None:
    """The keys the recipes set exist in every conf/data/*.yaml, at values that change
    nothing (recipe=paper and the main job are as before)."""
    files = sorted((REPO / "conf" / "data").glob("*.yaml"))
    assert len(files) >= 9
    for path in files:
        cfg = OmegaConf.load(path)
        assert cfg.policy == "none" and cfg.random_erasing == 0.0, path.name
        assert cfg.repeated_augmentation == 1 and cfg.train_crop_size is None, path.name
        defaults = {k: v for k, v in AugmentPolicy().to_dict().items() if k != "name"}
        assert dict(cfg.policy_options) == defaults, path.name
    for name in ("imagenet", "imagefolder"):
        assert "resize_size" in OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"policy": "autoaug"}, "data.policy='autoaug' is not one of none, trivialaugment"),
    ({"policy": "randaugment", "policy_options": {"magnitude": 31}},
     r"magnitude=31 is out of range: 0 \.\. 30"),
    ({"policy": "randaugment", "policy_options": {"num_ops": 0}}, "num_ops=0 must be at least 1"),
    ({"policy_options": {"magnitude_std": -1}}, "magnitude_std=-1.0 must be >= 0"),
    ({"policy_options": {"autoaugment_policy": "mnist"}},
     "autoaugment_policy='mnist' is not one of imagenet, cifar10, svhn"),
    ({"policy_options": {"num_op": 2}}, "unknown data.policy_options keys"),
    ({"policy_options": {"num_ops": 1.5}}, "num_ops=1.5 must be an integer"),
    ({"policy_options": {"magnitude_std": "high"}}, "magnitude_std='high' must be a number"),
    ({"random_erasing": 1.5}, r"data.random_erasing=1.5 is a probability: a number in \[0, 1\]"),
    ({"repeated_augmentation": 0}, "data.repeated_augmentation=0 must be an integer >= 1"),
    ({"repeated_augmentation": 4, "batch_size": 3}, "needs a batch of at least 4"),
    ({"train_crop_size": 40}, "train_crop_size=40 is larger than digits can give"),
    ({"train_crop_size": 0}, "train_crop_size=0 must be a positive side"),
])
def test_bad_options_fail_naming_the_option(kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        ImageDataModule("digits", image_size=32, **kwargs)


def test_repeats_larger_than_the_per_process_batch_fail_at_setup() -> None:
    dm = ImageDataModule("digits", batch_size=4, repeated_augmentation=4, num_workers=0)

    from types import SimpleNamespace

    # what _replica reads from a DDP trainer: 2 replicas
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(  # type: ignore[assignment]
        distributed_sampler_kwargs={"num_replicas": 2, "rank": 0}))
    with pytest.raises(DatasetError, match="gives 2: raise data.batch_size to at least 8"):
        dm.setup("fit")


def test_a_bad_policy_stops_the_run_before_training(make_cfg) -> None:  # type: ignore[no-untyped-def]
    from classicnets.runs.pipeline import train

    cfg = make_cfg("data.policy=randaugment", "data.policy_options.magnitude=40",
                   "extras.print_config=false")
    with pytest.raises(DatasetError, match="data.policy_options.magnitude=40"):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))


# ------------------------------------------------------------------ on the GPU (skipped without)
@pytest.mark.gpu
def test_batched_operations_on_the_gpu_match_the_cpu() -> None:
    """The kernel on CUDA gives the CPU's output for the same images and magnitudes (up to a
    level of rounding in a few pixels), and a policy loader on CUDA resumes exactly."""
    x = _images(8)
    for policy, op, m in _cases():
        mode = "bilinear" if policy == "augmix" else "nearest"
        mags = torch.full((8,), m)
        cpu = apply_op(op, x, mags, interpolation=mode)
        gpu = apply_op(op, x.cuda(), mags.cuda(), interpolation=mode).cpu()
        diff = (cpu.int() - gpu.int()).abs()
        assert diff.float().mean() < 0.05 and (diff > 1).float().mean() < 0.01, (op, m)
    batches = list(_policy_loader("cuda"))
    part = _policy_loader("cuda")
    part.load_state_dict({"epoch": 0, "batches": 3})
    rest = list(part)
    assert batches[0][0].is_cuda and len(rest) == len(batches) - 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[3:], rest))


def test_fixres_with_a_network_that_takes_one_size_fails_before_training(make_cfg) -> None:  # type: ignore[no-untyped-def]
    """LeNet-5 is built for 32 px; training it at 28 (FixRes) is refused at build time, naming
    the option; a network with global pooling passes the same probe, its mode kept."""
    from types import SimpleNamespace

    from torch import nn

    from classicnets.runs.config_check import ConfigError
    from classicnets.runs.pipeline import train
    from classicnets.runs.preflight import check_train_crop_fits

    cfg = make_cfg("data.train_crop_size=28", "extras.print_config=false")
    with pytest.raises(ConfigError, match="data.train_crop_size=28: lenet5 .* does not take 28-px"):
        train(cfg)
    pooled = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(4, 10))
    data = SimpleNamespace(train_crop_size=20, image_size=32, in_channels=1)
    module = SimpleNamespace(net=pooled, hparams={"model": {"name": "pooled"}})
    check_train_crop_fits(module, data)  # type: ignore[arg-type]
    assert pooled.training and int(pooled[1].num_batches_tracked) == 0
