"""``${data_info:<key>}``: the class count, channels and size a data config's dataset has,
for the data sources whose configs cannot state them (any torchvision dataset, any Hugging Face
dataset): the source that the config's ``_target_`` names describes its dataset."""

from __future__ import annotations

from typing import Any

from classicnets.data.catalogue import DatasetError

__all__ = ["data_info"]

KEYS = ("num_classes", "in_channels", "image_size")


def data_info(key: str, data_cfg: Any) -> Any:
    """``key`` of the dataset that ``data_cfg`` (a data config node) describes."""
    if key not in KEYS:
        raise DatasetError(f"${{data_info:{key}}}: known keys are {', '.join(KEYS)}")
    target = str(data_cfg.get("_target_", ""))
    if target.endswith("TorchvisionDataModule"):
        from omegaconf import OmegaConf

        from classicnets.data.torchvision_sets import describe

        options = data_cfg.get("options")
        options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
        info = describe(str(data_cfg.dataset), options,
                        str(data_cfg.get("root", "data")), bool(data_cfg.get("download", False)))
    elif target.endswith("HuggingFaceDataModule"):
        from classicnets.data.huggingface import describe as describe_hf

        info = describe_hf(data_cfg)
    else:
        raise DatasetError(f"${{data_info:{key}}} is for data=torchvision and data=huggingface "
                           f"configs, not {target or 'this one'}: give the value itself")
    return info[key]
