"""What the networks see: the papers' visualisations of a trained network.

* :mod:`~classicnets.analysis.deconvnet`: Zeiler & Fergus's switch-based projection of a
  layer's strongest activations back to pixels (own code: captum's ``Deconvolution`` is the
  gradient form, not the paper's projection of one chosen activation);
* :mod:`~classicnets.analysis.attribution`: occlusion sensitivity, Grad-CAM and guided
  backpropagation, through captum;
* :mod:`~classicnets.analysis.features`: filters and feature maps;
* :mod:`~classicnets.analysis.visualize`: `src/visualize.py` (PNGs, and images to the loggers).
"""

from classicnets.analysis.deconvnet import Projection, project, unpool
from classicnets.analysis.layers import LayerError, find_layer

__all__ = ["LayerError", "Projection", "find_layer", "project", "unpool"]
