"""classicnets: the classic image-classification networks, trained by Lightning + Hydra."""

__version__ = "0.1.0"
