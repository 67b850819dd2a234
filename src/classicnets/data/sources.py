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
    from omegaconf import OmegaConf

    target = str(data_cfg.get("_target_", ""))
    what = "dataset" if target.endswith("TorchvisionDataModule") else "name"
    # keys(), not `in`: a mandatory value (???) is not "in" a config
    if what in data_cfg.keys() and OmegaConf.is_missing(data_cfg, what):  # noqa: SIM118
        example = "KMNIST" if what == "dataset" else "uoft-cs/cifar10"
        raise DatasetError(f"data.{what} is not set: name the dataset whose {key} this is, "
                           f"e.g. data.{what}={example}")
    if target.endswith("TorchvisionDataModule"):
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
