"""classicnets: the classic image-classification networks, trained by Lightning + Hydra."""

from typing import Any

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """``${pretrained:<key>,<default>}``: the data settings that follow ``model.pretrained``
    (``conf/data/*.yaml``), ``${scale_size:...}`` (``conf/recipe/*.yaml``), ``${shards:<key>}``
    (``conf/data/shards.yaml``) and ``${data_info:<key>}``: what a dataset of another source says
    of itself; registered on import so every composed config resolves."""
    from omegaconf import OmegaConf

    def pretrained(key: str, default: Any = None, *, _root_: Any) -> Any:
        from classicnets.models.weights import data_setting

        return data_setting(key, default, _root_=_root_)

    def scale_size(size: int, numerator: int, denominator: int) -> int:
        """``${scale_size:${data.image_size},176,224}``: a size a recipe states at one input size
        (FixRes' 176 px training crop at 224), at the same ratio for this dataset's size."""
        return max(1, round(int(size) * int(numerator) / int(denominator)))

    def shards(key: str, *, _root_: Any) -> Any:
        from classicnets.data.shards import manifest_setting

        return manifest_setting(key, _root_)

    def data_info(key: str, *, _parent_: Any) -> Any:
        from classicnets.data.sources import data_info as info

        return info(key, _parent_)

    if not OmegaConf.has_resolver("pretrained"):
        OmegaConf.register_new_resolver("pretrained", pretrained)
    if not OmegaConf.has_resolver("scale_size"):
        OmegaConf.register_new_resolver("scale_size", scale_size)
    if not OmegaConf.has_resolver("shards"):  # ${shards:<key>}: conf/data/shards.yaml
        OmegaConf.register_new_resolver("shards", shards)
    # ${data_info:num_classes|in_channels|image_size}: read from the dataset a data config
    # names (data=torchvision, data=huggingface), which only the dataset itself knows
    if not OmegaConf.has_resolver("data_info"):
        OmegaConf.register_new_resolver("data_info", data_info)


_register_resolvers()
