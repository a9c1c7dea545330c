"""StormFusion-SEVIR: multimodal severe-weather nowcasting on SEVIR.

Subpackages, one per pipeline stage:

- :mod:`stormfusion.data`: catalog, S3 download, synthetic twin, HDF5 readers, Zarr
  conversion, splits and the PyTorch loader.
- :mod:`stormfusion.models`: the forecast contract, the Storm-Graph Transformer and the
  baselines, behind one registry (:func:`stormfusion.models.get_model`).
- :mod:`stormfusion.training`: the trainer, checkpoints and ``predict``.
- :mod:`stormfusion.verification`: contingency scores, LPIPS, bootstrap intervals.
- :mod:`stormfusion.report`: paper tables and figures.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stormfusion")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
