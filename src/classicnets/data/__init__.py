"""Datasets, transforms and the DataModule (ordinary and on-device fast loaders)."""

from classicnets.data.catalogue import CATALOGUE, ArrayData, DatasetError, DatasetSpec, get_spec
from classicnets.data.datamodule import ArrayDataset, ImageDataModule
from classicnets.data.fast import DeviceLoader, pair_to_device
from classicnets.data.huggingface import HuggingFaceDataModule
from classicnets.data.torchvision_sets import TorchvisionDataModule
from classicnets.data.transforms import BatchTransform

__all__ = [
    "CATALOGUE",
    "ArrayData",
    "ArrayDataset",
    "BatchTransform",
    "DatasetError",
    "DatasetSpec",
    "DeviceLoader",
    "HuggingFaceDataModule",
    "ImageDataModule",
    "TorchvisionDataModule",
    "get_spec",
    "pair_to_device",
]
