"""SEVIR data: catalog, download, synthetic twin, readers, Zarr archive, splits, loader."""
