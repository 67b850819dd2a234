"""What `src/visualize.py` does: one visualisation of a checkpoint, as PNGs (and to loggers).

Images are read and prepared exactly as `src/predict.py` prepares them (the checkpoint's own
evaluation transform, through :mod:`classicnets.inference.predict`); every figure shows the
image as the network saw it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig
from torch import Tensor

from classicnets.analysis import attribution, deconvnet, features, render
from classicnets.analysis.layers import find_layer, first_conv
from classicnets.inference.predict import (
    ImageFiles,
    Trained,
    find_images,
    inference_device,
    load_trained,
)
from classicnets.runs.loggers import check_logger_config

__all__ = ["METHODS", "draw", "resolve_target", "visualize"]

log = logging.getLogger(__name__)

METHODS = ("deconvnet", "guided_backprop", "occlusion", "gradcam", "filters", "feature_maps")


def resolve_target(classes: Sequence[str], target: Any, logits: Tensor) -> int:
    """The class a map explains: ``target`` as a class name or index; None: the predicted one."""
    if target is None:
        return int(logits.argmax())
    if str(target) in classes:
        return list(classes).index(str(target))
    if isinstance(target, int) and 0 <= target < len(classes):
        return target
    shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
    raise ValueError(f"target={target!r} is not one of the checkpoint's classes ({shown}) nor "
                     f"an index 0..{len(classes) - 1}; leave it out for the predicted class")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not a visualisation; choose one of "
                         f"{', '.join(METHODS)}")


def draw(trained: Trained, method: str, x: Tensor, name: str, cfg: DictConfig
         ) -> tuple[Figure, str]:
    """The figure of ``method`` for one image ``x`` (``(1, C, H, W)`` in [0, 1], on the
    model's device) and its caption. ``cfg`` gives layer, target and the method's options."""
    _check_method(method)
    model = trained.model
    net_input = (x - model.mean) / model.std
    layer = cfg.get("layer")
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    top = int(probs.argmax())
    seen = f"{name}: predicted {trained.classes[top]} ({float(probs[top]):.2f})"
    if method == "feature_maps":
        layer = layer or first_conv(model.net, net_input).name
        maps = features.feature_maps(model.net, net_input, layer)[: int(cfg.max_maps)]
        # one scale for all maps, so a weak map looks weak
        low, high = float(maps.min()), float(maps.max())
        tiles = ((maps - low) / max(high - low, 1e-12)).unsqueeze(1)
        caption = f"{seen}; {layer}: {len(maps)} feature maps"
        return render.grid_figure(tiles, 8, caption), caption
    if method == "deconvnet":
        opts = cfg.deconvnet
        proj = deconvnet.project(model.net, net_input, layer, top_k=int(opts.top_k),
                                 keep=str(opts.keep))
        tiles = [x[0], *(render.signed_to_unit(p) for p in proj.images)]
        captions = ["input"] + [f"map {c}: {v:.2g} at {r},{col}" for c, v, (r, col)
                                in zip(proj.channels, proj.values, proj.positions)]
        caption = (f"{seen}; deconvnet from {proj.layer}, strongest "
                   f"{'activation' if opts.keep == 'activation' else 'map'} of "
                   f"{len(proj.channels)} maps")
        return render.tiles_figure(tiles, captions, caption, per_row=5), caption
    target = resolve_target(trained.classes, cfg.get("target"), probs)
    about = f"{seen}; class {trained.classes[target]}"
    if method == "occlusion":
        opts = cfg.occlusion
        baseline = opts.baseline
        grey = list(trained.transform.mean) if baseline == "mean" else baseline
        drop = attribution.occlusion(model, x, target, window=opts.get("window"),
                                     stride=opts.get("stride"), baseline=grey)
        caption = (f"{about}: drop of its probability under a square of value "
                   f"{baseline}" + (f" {[round(g, 2) for g in grey]}" if baseline == "mean"
                                    else ""))
        return render.heat_figure(x[0], drop, caption, "probability drop",
                                  signed=True), caption
    if method == "gradcam":
        cam, used = attribution.gradcam(model, x, target, layer)
        caption = f"{about}: Grad-CAM at {used}"
        return render.heat_figure(x[0], cam, caption, "Grad-CAM"), caption
    grads = attribution.guided_backprop(model, x, target)
    caption = f"{about}: guided backpropagation"
    return render.tiles_figure([x[0], render.signed_to_unit(grads)], ["input", "guided backprop"],
                               caption, per_row=2), caption


def _filters(trained: Trained, cfg: DictConfig) -> tuple[Figure, str, str]:
    net = trained.model.net
    layer = cfg.get("layer")
    if layer is None:
        probe = torch.zeros(1, *trained.input_shape, device=trained.model.mean.device)
        layer = first_conv(net, probe).name
    tiles, per_row = features.filter_tiles(find_layer(net, layer), layer, int(cfg.max_maps))
    caption = f"{trained.model_name}: filters of {layer}"
    return render.grid_figure(tiles, per_row, caption), caption, layer


def _log_images(cfg: DictConfig, method: str, images: list[tuple[Path, str]]) -> None:
    """Send the PNGs to the configured loggers (W&B, TensorBoard); others keep the files."""
    import numpy as np
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
    from PIL import Image

    loggers = [instantiate(sub) for sub in (cfg.get("logger") or {}).values()
               if isinstance(sub, DictConfig) and "_target_" in sub]
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_image(key=f"visualize/{method}", images=[str(p) for p, _ in images],
                         caption=[c for _, c in images])
        elif isinstance(lg, TensorBoardLogger):
            for i, (path, caption) in enumerate(images):
                with Image.open(path) as png:
                    pixels = np.asarray(png.convert("RGB"))
                lg.experiment.add_image(f"visualize/{path.stem}", pixels, i,
                                        dataformats="HWC")
                lg.experiment.add_text(f"visualize/{path.stem}", caption, i)
            lg.experiment.flush()
        else:
            log.info("logger %s takes no images: the PNGs are in the run directory",
                     type(lg).__name__)
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def visualize(cfg: DictConfig) -> list[Path]:
    """Draw ``cfg.method`` for the checkpoint ``cfg.ckpt_path`` (and each image of
    ``cfg.input``) into ``cfg.output``; the PNGs written."""
    method = str(cfg.method)
    _check_method(method)
    check_logger_config(cfg)  # a W&B key, before any work
    if method != "filters" and not cfg.get("input"):
        raise ValueError(f"method={method} needs input=<an image, a folder or a quoted glob>")
    trained = load_trained(cfg.ckpt_path, cfg.get("data"))
    device = inference_device(str(cfg.device))
    trained.model.to(device)
    out = Path(cfg.output)
    images: list[tuple[Path, str]] = []
    if method == "filters":
        fig, caption, layer = _filters(trained, cfg)
        images.append((render.save(fig, out / f"filters_{layer}.png"), caption))
    else:
        files = find_images(cfg.input)
        limit = int(cfg.max_images)
        if len(files) > limit:
            log.warning("input=%s holds %d files: drawing the first %d (max_images=%d)",
                        cfg.input, len(files), limit, limit)
            files = files[:limit]
        pixels = ImageFiles(files, trained.transform)
        for i, file in enumerate(files):
            x, error = pixels[i]
            if error:
                log.warning("%s: not drawn (%s)", file, error)
                continue
            fig, caption = draw(trained, method, x.unsqueeze(0).to(device), file.name, cfg)
            # the file's folder in the name too: photos/a/1.png and photos/b/1.png differ
            stem = "_".join([*file.parent.parts[-1:], file.stem]) if len(files) > 1 else (
                file.stem)
            images.append((render.save(fig, out / f"{stem}_{method}.png"), caption))
        if not images:
            raise ValueError(f"input={cfg.input}: no file could be read as an image")
    for path, caption in images:
        log.info("%s -> %s", caption, path)
    print(f"{method}: {len(images)} image(s) in {out}")
    _log_images(cfg, method, images)
    return [p for p, _ in images]
