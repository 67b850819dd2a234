"""Datasets, transforms and the DataModule (ordinary and on-device fast loaders)."""

from classicnets.data.catalogue import CATALOGUE, ArrayData, DatasetError, DatasetSpec, get_spec
from classicnets.data.datamodule import ArrayDataset, ImageDataModule
from classicnets.data.fast import DeviceLoader, pair_to_device
from classicnets.data.transforms import BatchTransform

__all__ = [
    "CATALOGUE",
    "ArrayData",
    "ArrayDataset",
    "BatchTransform",
    "DatasetError",
    "DatasetSpec",
    "DeviceLoader",
    "ImageDataModule",
    "get_spec",
    "pair_to_device",
]
