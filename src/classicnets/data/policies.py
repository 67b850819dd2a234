"""Augmentation policies (TrivialAugmentWide, RandAugment, AutoAugment, AugMix) and random
erasing, in the two forms of :mod:`classicnets.data.transforms`:

* per image: torchvision's ``transforms.v2`` classes themselves (:meth:`AugmentPolicy.per_image`),
  with one small subclass, :class:`RandAugmentWithNoise`, for timm's magnitude noise;
* per batch on the training device (:class:`BatchPolicy`, :class:`BatchRandomErasing`): each
  image its own operation and magnitude, every draw from the caller's generator.

Why an own batched kernel rather than kornia's ``augmentation.auto``: kornia (0.9) draws from
torch's global generator (its policy base "does not expose a per-instance generator"), so a
seeded per-epoch stream — which an exact mid-epoch resume needs — cannot be handed to it, and
its RandAugment picks the operations once per *batch*, not per image. The kernel here groups
the images of a batch by operation and applies each operation to its group at once, with a
per-image magnitude; the operations are torchvision's tensor kernels (or batched
equivalents where torchvision's take one scalar per call: the affine maps, blends, posterize and
solarize), and the magnitude tables and AutoAugment's sub-policies are read from torchvision's
own classes (their class attributes ``_AUGMENTATION_SPACE`` and ``AutoAugment._policies``), so
both paths share one definition of every policy; tests/test_augment_policies.py holds each
operation to torchvision's output and the draws to its distributions, so a torchvision release
that changed either would fail there rather than drift silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "POLICIES",
    "AugmentPolicy",
    "BatchPolicy",
    "BatchRandomErasing",
    "Ingredients",
    "RandAugmentWithNoise",
]

POLICIES = ("none", "trivialaugment", "randaugment", "autoaugment", "augmix")
AUTOAUGMENT_POLICIES = ("imagenet", "cifar10", "svhn")
_OPTION_KEYS = ("num_ops", "magnitude", "magnitude_std", "num_magnitude_bins",
                "autoaugment_policy", "augmix_severity", "augmix_width")


@dataclass(frozen=True)
class AugmentPolicy:
    """``data.policy`` and ``data.policy_options``: which policy, and its knobs.

    ``magnitude`` is a bin index of RandAugment (0 .. ``num_magnitude_bins`` - 1, torchvision's
    convention: m9 of 31 bins); ``magnitude_std`` > 0 draws each image's magnitude from a normal
    distribution about it (timm's ``mstd``), rounded and clipped to the bins.
    """

    name: str = "none"
    num_ops: int = 2
    magnitude: int = 9
    magnitude_std: float = 0.0
    num_magnitude_bins: int = 31
    autoaugment_policy: str = "imagenet"
    augmix_severity: int = 3
    augmix_width: int = 3

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"data.policy={self.name!r} is not one of {', '.join(POLICIES)}")
        if self.num_magnitude_bins < 2:
            raise ValueError(f"data.policy_options.num_magnitude_bins={self.num_magnitude_bins}"
                             " must be at least 2")
        if self.num_ops < 1:
            raise ValueError(f"data.policy_options.num_ops={self.num_ops} must be at least 1 "
                             "(operations per image)")
        if not 0 <= self.magnitude < self.num_magnitude_bins:
            raise ValueError(f"data.policy_options.magnitude={self.magnitude} is out of range: "
                             f"0 .. {self.num_magnitude_bins - 1} (num_magnitude_bins - 1)")
        if self.magnitude_std < 0:
            raise ValueError(f"data.policy_options.magnitude_std={self.magnitude_std} must be "
                             ">= 0 (0: no magnitude noise)")
        if self.autoaugment_policy not in AUTOAUGMENT_POLICIES:
            raise ValueError(f"data.policy_options.autoaugment_policy="
                             f"{self.autoaugment_policy!r} is not one of "
                             f"{', '.join(AUTOAUGMENT_POLICIES)}")
        if not 1 <= self.augmix_severity <= 10:
            raise ValueError(f"data.policy_options.augmix_severity={self.augmix_severity} must "
                             "be in 1 .. 10")
        if self.augmix_width < 1:
            raise ValueError(f"data.policy_options.augmix_width={self.augmix_width} must be at "
                             "least 1 (augmentation chains mixed)")

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any] | None) -> AugmentPolicy:
        """From ``data.policy`` and ``data.policy_options`` (missing keys: the defaults)."""
        options = dict(options or {})
        unknown = set(options) - set(_OPTION_KEYS)
        if unknown:
            raise ValueError(f"unknown data.policy_options keys {sorted(unknown)}; known: "
                             f"{', '.join(_OPTION_KEYS)}")
        kinds: dict[str, Callable[[Any], Any]] = {
            "magnitude_std": float, "autoaugment_policy": str}
        plain = {}
        for key, value in options.items():
            kind = kinds.get(key, int)
            if kind is str:
                plain[key] = str(value)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(value, bool) or math.isnan(number) or (
                    kind is int and not number.is_integer()):
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"data.policy_options.{key}={value!r} must be {what}")
            plain[key] = kind(number)
        return cls(name=str(name), **plain)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def per_image(self) -> torch.nn.Module | None:
        """The torchvision v2 transform of this policy for one uint8 ``(C, H, W)`` image."""
        if self.name == "trivialaugment":
            return v2.TrivialAugmentWide(num_magnitude_bins=self.num_magnitude_bins)
        if self.name == "randaugment":
            return RandAugmentWithNoise(num_ops=self.num_ops, magnitude=self.magnitude,
                                        num_magnitude_bins=self.num_magnitude_bins,
                                        magnitude_std=self.magnitude_std)
        if self.name == "autoaugment":
            return v2.AutoAugment(v2.AutoAugmentPolicy(self.autoaugment_policy))
        if self.name == "augmix":
            return v2.AugMix(severity=self.augmix_severity, mixture_width=self.augmix_width)
        return None


@dataclass(frozen=True)
class Ingredients:
    """The recipes' data-side options of every DataModule (``data.policy``,
    ``data.policy_options``, ``data.random_erasing``, ``data.repeated_augmentation``,
    ``data.train_crop_size``), checked once; a bad value raises ValueError naming the option."""

    policy: AugmentPolicy
    random_erasing: float
    repeats: int
    train_crop_size: int | None  # None: the DataModule's image_size

    @classmethod
    def from_config(cls, *, policy: str, policy_options: Mapping[str, Any] | None,
                    random_erasing: float, repeated_augmentation: int,
                    train_crop_size: int | None) -> Ingredients:
        if isinstance(random_erasing, bool) or not 0.0 <= float(random_erasing) <= 1.0:
            raise ValueError(f"data.random_erasing={random_erasing!r} is a probability: a "
                             "number in [0, 1] (0: off; DeiT and torchvision's recipe: 0.25)")
        k = repeated_augmentation
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"data.repeated_augmentation={k!r} must be an integer >= 1 "
                             "(1: off; DeiT: 3)")
        if train_crop_size is not None and (isinstance(train_crop_size, bool)
                                            or int(train_crop_size) < 1):
            raise ValueError(f"data.train_crop_size={train_crop_size!r} must be a positive "
                             "side in pixels, or null (= data.image_size)")
        return cls(AugmentPolicy.from_config(policy, policy_options), float(random_erasing),
                   int(k), None if train_crop_size is None else int(train_crop_size))


class RandAugmentWithNoise(v2.RandAugment):
    """torchvision's RandAugment with timm's magnitude noise (``m9-mstd0.5``).

    torchvision's class uses one fixed magnitude; timm's draws it from N(m, mstd). Rather than a
    second RandAugment, this subclass draws one magnitude per image from N(``magnitude``,
    ``magnitude_std``) (torch's global generator, which DataLoader workers seed), rounds it to
    the nearest bin and clips it to the bins, then runs torchvision's own ``forward`` with it.
    (timm draws a magnitude per operation; per image is what a bin-indexed RandAugment can take.)
    With ``magnitude_std=0`` it is torchvision's RandAugment exactly, draw for draw.
    """

    def __init__(self, *, magnitude_std: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.magnitude_std = float(magnitude_std)
        self.base_magnitude = self.magnitude

    def forward(self, *inputs: Any) -> Any:
        if self.magnitude_std > 0:
            m = self.base_magnitude + self.magnitude_std * float(torch.randn(()))
            self.magnitude = int(min(max(round(m), 0), self.num_magnitude_bins - 1))
        try:
            return super().forward(*inputs)
        finally:
            self.magnitude = self.base_magnitude


# ---------------------------------------------------------------------------- batched kernel
def _space(name: str) -> dict[str, tuple[Callable[..., Tensor | None], bool]]:
    """torchvision's table of operation → (magnitudes(num_bins, height, width), signed) for a
    policy: read from the class so the batched path cannot drift from the per-image one."""
    cls = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment,
           "autoaugment": v2.AutoAugment, "augmix": v2.AugMix}[name]
    return dict(cls._AUGMENTATION_SPACE)


def _affine(x: Tensor, theta: Tensor, mode: str) -> Tensor:
    """uint8 images through per-image inverse maps ``theta`` (n, 2, 3) in pixel units about the
    image centre — torchvision's tensor ``affine``/``rotate`` grid, zero fill, batched."""
    n, _, h, w = x.shape
    dev = x.device
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=dev)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=dev)
    base = torch.stack([xs.expand(h, w), ys.view(h, 1).expand(h, w),
                        torch.ones(h, w, device=dev)], -1).view(1, h * w, 3)
    rescaled = theta.transpose(1, 2).clone()  # (n, 3, 2): pixel units → [-1, 1]
    rescaled[..., 0] /= 0.5 * w
    rescaled[..., 1] /= 0.5 * h
    grid = base.expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def _theta(op: str, m: Tensor, h: int, w: int) -> Tensor:
    """Inverse affine maps of the geometric operations, as torchvision builds them for
    ``_apply_image_or_video_transform`` (shears about the top-left corner; rotation by ``m``
    degrees anticlockwise about the centre; whole-pixel shifts)."""
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    if op == "ShearX":
        rows = [[one, m, m * (h / 2)], [zero, one, zero]]
    elif op == "ShearY":
        rows = [[one, zero, zero], [m, one, m * (w / 2)]]
    elif op == "TranslateX":
        rows = [[one, zero, -m.trunc()], [zero, one, zero]]
    elif op == "TranslateY":
        rows = [[one, zero, zero], [zero, one, -m.trunc()]]
    else:  # Rotate
        r = torch.deg2rad(m)
        rows = [[r.cos(), -r.sin(), zero], [r.sin(), r.cos(), zero]]
    return torch.stack([torch.stack(r, -1) for r in rows], -2).float()


def _blend(a: Tensor, b: Tensor, m: Tensor) -> Tensor:
    """torchvision's ``_blend`` with a per-image ratio ``r = 1 + m``: ``a·r + b·(1 − r)``,
    clamped, to uint8; ``r`` and ``1 - r`` in double, as torchvision's Python floats."""
    r = 1.0 + m.double().view(-1, 1, 1, 1)
    out = a.float().mul_(r.float()).addcmul_(b if torch.is_tensor(b) else torch.tensor(b),
                                             (1.0 - r).float())
    return out.clamp_(0, 255).to(torch.uint8)


def _grey(x: Tensor) -> Tensor:
    """Luminance as torchvision's colour kernels take it (floored, float, one channel)."""
    if x.shape[1] == 1:
        return x.float()
    r, g, b = x.unbind(1)  # uint8 operands, as torchvision's kernel multiplies them
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1).floor_()


def _sharpness(x: Tensor, m: Tensor) -> Tensor:
    """torchvision's sharpness kernel (3×3 smoothing, borders kept), factor ``1 + m``."""
    c = x.shape[1]
    k = torch.full((3, 3), 1.0 / 13.0, device=x.device)
    k[1, 1] = 5.0 / 13.0
    out = x.float()
    blurred = F.conv2d(out, k.expand(c, 1, 3, 3), groups=c).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.add_((blurred - inner) * (-m.double()).float().view(-1, 1, 1, 1))
    return out.clamp_(0, 255).to(torch.uint8)


def _autocontrast(x: Tensor) -> Tensor:
    """torchvision's ``autocontrast`` (each channel stretched to 0..255; a flat channel kept),
    with ``where`` for its boolean-mask assignment, which makes a GPU wait for its queue."""
    f = x.float()
    low = f.amin(dim=(-2, -1), keepdim=True)
    high = f.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inv_scale = torch.where(flat, 1.0, (high - low).mul_(1.0 / 255))
    low = torch.where(flat, 0.0, low)
    return f.sub_(low).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def apply_op(op: str, x: Tensor, m: Tensor, *, interpolation: str = "nearest") -> Tensor:
    """One operation on a uint8 batch ``x`` (n, C, H, W), image i with magnitude ``m[i]``."""
    h, w = x.shape[-2:]
    if op == "Identity":
        return x
    if op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        return _affine(x, _theta(op, m, h, w), interpolation)
    if op == "Brightness":
        return _blend(x, torch.zeros((), device=x.device), m)
    if op == "Color":
        return x if x.shape[1] == 1 else _blend(x, _grey(x), m)
    if op == "Contrast":
        return _blend(x, _grey(x).mean(dim=(-3, -2, -1), keepdim=True), m)
    if op == "Sharpness":
        return x if h <= 2 or w <= 2 else _sharpness(x, m)
    if op == "Posterize":
        bits = m.trunc().long().clamp(0, 8)
        mask = (((1 << bits) - 1) << (8 - bits)).to(torch.uint8).view(-1, 1, 1, 1)
        return x & mask
    if op == "Solarize":
        return torch.where(x >= (255.0 * m).view(-1, 1, 1, 1), 255 - x, x)
    if op == "AutoContrast":
        return _autocontrast(x)
    if op == "Equalize":
        return TF.equalize(x)
    if op == "Invert":
        return TF.invert(x)
    raise ValueError(f"no batched kernel for operation {op!r}")


class _Ops:
    """A policy's operation table on a device: names, magnitudes per bin, signs."""

    def __init__(self, space: Mapping[str, tuple[Callable[..., Tensor | None], bool]],
                 bins: int, height: int, width: int) -> None:
        self.names = list(space)
        table = torch.zeros(len(self.names), bins)
        signed = torch.zeros(len(self.names), dtype=torch.bool)
        for i, (fn, sign) in enumerate(space.values()):
            mags = fn(bins, height, width)
            if mags is not None:
                table[i] = mags.float()
                signed[i] = sign
        self.table, self.signed = table, signed
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The tables on ``device``, copied once (a copy per batch would make a GPU wait)."""
        if device not in self._on:
            self._on[device] = (self.table.to(device), self.signed.to(device))
        return self._on[device]

    def magnitude(self, op: Tensor, index: Tensor, flip: Tensor) -> Tensor:
        """Signed magnitudes of ops ``op`` at bin ``index``; ``flip``: negate (signed ops)."""
        table, signed = self.on(op.device)
        m = table[op, index]
        return torch.where(flip & signed[op], -m, m)

    def apply(self, x: Tensor, op: Tensor, m: Tensor, *, interpolation: str = "nearest",
              grouped: bool | None = None) -> Tensor:
        """Image i gets operation ``op[i]`` with magnitude ``m[i]`` (``op[i] < 0``: none).

        ``grouped`` (default: on the CPU): one call per operation on the images that drew it,
        the least arithmetic; otherwise every operation on the whole batch, each image keeping
        its own operation's result — more arithmetic but no data-dependent shapes, so a GPU
        never waits for its queue (finding the groups would copy their sizes to the host). Each
        operation acts on each image alone, so both give the same images.
        """
        if grouped is None:
            grouped = x.device.type == "cpu"
        out = x.clone()
        if grouped:
            for k in op.unique().tolist():
                if k < 0 or self.names[k] == "Identity":
                    continue
                sel = (op == k).nonzero().squeeze(1)
                out[sel] = apply_op(self.names[k], x[sel], m[sel], interpolation=interpolation)
            return out
        for k, name in enumerate(self.names):
            if name != "Identity":
                y = apply_op(name, x, m, interpolation=interpolation)
                out = torch.where((op == k).view(-1, 1, 1, 1), y, out)
        return out


class BatchPolicy:
    """:class:`AugmentPolicy` on a uint8 ``(B, C, H, W)`` batch, each image its own draw.

    The draws follow the per-image classes' distributions: TrivialAugmentWide one operation
    and a uniform bin per image; RandAugment ``num_ops`` uniform operations at the magnitude
    bin (or a noisy one, per image, as :class:`RandAugmentWithNoise`); AutoAugment a uniform
    sub-policy whose two steps run with their probabilities; AugMix ``augmix_width`` chains of
    1-3 operations mixed with Dirichlet(1, ..., 1) weights and a Beta(1, 1) skip, as
    torchvision's ``AugMix`` with its default ``alpha=1``. Signed magnitudes flip with
    probability 1/2. The number of random numbers drawn depends only on the batch size, so
    :meth:`skip` advances a generator exactly as a call does.
    """

    def __init__(self, policy: AugmentPolicy, *, height: int, width: int,
                 grouped: bool | None = None) -> None:
        if not policy.enabled:
            raise ValueError("BatchPolicy needs a policy other than none")
        self.policy, self.height, self.width = policy, height, width
        self.grouped = grouped  # None: by device (_Ops.apply)
        p = policy
        if p.name == "autoaugment":
            bins = 10
        elif p.name == "augmix":
            bins = 10  # torchvision's AugMix: _PARAMETER_MAX bins, severity picks the first ones
        else:
            bins = p.num_magnitude_bins
        self.ops = _Ops(_space(p.name), bins, height, width)
        if p.name == "autoaugment":
            subs = v2.AutoAugment(v2.AutoAugmentPolicy(p.autoaugment_policy))._policies
            index = {n: i for i, n in enumerate(self.ops.names)}
            self.sub_op = torch.tensor([[index[s[0]] for s in sub] for sub in subs])
            self.sub_prob = torch.tensor([[float(s[1]) for s in sub] for sub in subs])
            self.sub_bin = torch.tensor([[int(s[2] or 0) for s in sub] for sub in subs])
            if "Identity" not in index:  # a step that does not run: the identity
                self.ops.names.append("Identity")
                self.ops.table = torch.cat([self.ops.table, torch.zeros(1, bins)])
                self.ops.signed = torch.cat([self.ops.signed, torch.zeros(1, dtype=torch.bool)])
            self.identity = self.ops.names.index("Identity")
            self._subs: dict[torch.device, tuple[Tensor, ...]] = {}

    def _draw(self, b: int, device: torch.device, g: torch.Generator) -> Any:
        """A batch's draws: the steps to run in order, ``[(op, magnitude), ...]`` per image;
        for AugMix ``(chains, chain weights, weight of the original)``."""
        p, n_ops = self.policy, len(self.ops.names)

        def rint(high: int, *shape: int) -> Tensor:
            return torch.randint(0, high, (b, *shape), device=device, generator=g)

        def rand(*shape: int) -> Tensor:
            return torch.rand(b, *shape, device=device, generator=g)

        if p.name == "trivialaugment":
            op = rint(n_ops)
            return [(op, self.ops.magnitude(op, rint(p.num_magnitude_bins), rand() <= 0.5))]
        if p.name == "randaugment":
            noise = torch.randn(b, device=device, generator=g)
            index = torch.full((b,), p.magnitude, device=device)
            if p.magnitude_std > 0:
                index = (p.magnitude + p.magnitude_std * noise).round().clamp(
                    0, p.num_magnitude_bins - 1).long()
            op, flip = rint(n_ops, p.num_ops), rand(p.num_ops) <= 0.5
            return [(op[:, i], self.ops.magnitude(op[:, i], index, flip[:, i]))
                    for i in range(p.num_ops)]
        if p.name == "autoaugment":
            if device not in self._subs:  # copied once per device
                self._subs[device] = tuple(t.to(device) for t in (
                    self.sub_op, self.sub_prob, self.sub_bin))
            sub_op, sub_prob, sub_bin = self._subs[device]
            sub = rint(len(sub_op))
            run, flip = rand(2), rand(2) <= 0.5
            steps = []
            for i in range(2):
                op = torch.where(run[:, i] <= sub_prob[sub, i], sub_op[sub, i], self.identity)
                steps.append((op, self.ops.magnitude(op, sub_bin[sub, i], flip[:, i])))
            return steps
        # augmix: per chain a depth in 1..3 and three steps (the ones past the depth do not run)
        k = p.augmix_width
        depth = torch.randint(1, 4, (b, k), device=device, generator=g)
        op, index, flip = rint(n_ops, k, 3), rint(p.augmix_severity, k, 3), rand(k, 3) <= 0.5
        # Dirichlet(1, ..., 1) = normalised standard exponentials, -log(U); Beta(1, 1) = U
        e = -torch.log1p(-rand(k))
        weights = e / e.sum(1, keepdim=True)
        keep = rand()  # weight of the original image, m[:, 0] of torchvision's Beta draw
        chains = [[(op[:, c, s], self.ops.magnitude(op[:, c, s], index[:, c, s], flip[:, c, s]),
                    depth[:, c] > s) for s in range(3)] for c in range(k)]
        return chains, weights * (1 - keep).unsqueeze(1), keep

    def skip(self, batch_size: int, generator: torch.Generator) -> None:
        """Advance ``generator`` as a call on ``batch_size`` images would."""
        self._draw(batch_size, generator.device, generator)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        draws = self._draw(len(x), x.device, generator)
        if self.policy.name != "augmix":
            for op, m in draws:
                x = self.ops.apply(x, op, m, grouped=self.grouped)
            return x
        chains, weights, keep = draws
        mix = x.float() * keep.view(-1, 1, 1, 1)
        for c, chain in enumerate(chains):
            aug = x
            for op, m, active in chain:
                # a step past the chain's depth is the identity
                op = torch.where(active, op, -1)
                aug = self.ops.apply(aug, op, m, interpolation="bilinear", grouped=self.grouped)
            mix.add_(aug.float() * weights[:, c].view(-1, 1, 1, 1))
        return mix.to(torch.uint8)


@dataclass(frozen=True)
class BatchRandomErasing:
    """torchvision's ``RandomErasing(p, value="random")`` on a normalised float batch, each
    image its own draw: with probability ``p`` a rectangle of area fraction uniform in
    ``scale`` and log aspect ratio uniform in log ``ratio`` (the first of ten tries that fits)
    at a uniform position, filled with standard normal noise (timm's "pixel" mode).
    ``generator`` None draws from torch's default generator (the DataLoader paths).

    ``grouped`` (default: on the CPU) draws noise for the erased images only; otherwise for the
    whole batch, with no data-dependent shapes (a GPU then never waits for its queue). Either
    way :meth:`skip` draws what a call draws.
    """

    p: float
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    tries: int = 10
    grouped: bool | None = None

    def _draw(self, shape: tuple[int, ...], device: torch.device,
              g: torch.Generator | None) -> tuple[Tensor, Tensor | None, Tensor]:
        """(boxes (B, 1, H, W), indices of the erased images (grouped; else None), noise for
        them (grouped) or for the whole batch)."""
        b, c, h, w = shape
        apply = torch.rand(b, device=device, generator=g) < self.p
        u = torch.rand(b, self.tries, 4, device=device, generator=g, dtype=torch.float64)
        area = h * w * (self.scale[0] + u[..., 0] * (self.scale[1] - self.scale[0]))
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + u[..., 1] * (hi - lo))
        eh = torch.round(torch.sqrt(area * aspect))
        ew = torch.round(torch.sqrt(area / aspect))
        fits = (eh < h) & (ew < w)
        first = fits.int().argmax(1, keepdim=True)  # the first try that fits
        apply &= fits.any(1)
        eh, ew = eh.gather(1, first), ew.gather(1, first)
        top = (u[..., 2].gather(1, first) * (h - eh + 1)).floor()
        left = (u[..., 3].gather(1, first) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=device, dtype=torch.float64).view(1, h, 1)
        cols = torch.arange(w, device=device, dtype=torch.float64).view(1, 1, w)
        box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
               & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)))
        box = (box & apply.view(-1, 1, 1)).unsqueeze(1)
        grouped = self.grouped if self.grouped is not None else device.type == "cpu"
        if grouped:  # how many follows from the draws above: skip() draws the same
            chosen = apply.nonzero().squeeze(1)
            return box, chosen, torch.randn((len(chosen), c, h, w), device=device, generator=g)
        return box, None, torch.randn(shape, device=device, generator=g)

    def skip(self, shape: tuple[int, ...], generator: torch.Generator) -> None:
        self._draw(shape, generator.device, generator)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        box, chosen, noise = self._draw(tuple(x.shape), x.device, generator)
        if chosen is None:
            return x.copy_(torch.where(box, noise.to(x.dtype), x))
        if len(chosen):
            x[chosen] = torch.where(box[chosen], noise.to(x.dtype), x[chosen])
        return x
