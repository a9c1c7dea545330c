"""Shared fixtures: a tiny synthetic SEVIR twin and its event index, built once per session.

``synthetic_archive``: the raw data root of a twin with 6 storm + 2 random events at image
size 32 (VIL 32 x 32, IR 16 x 16, lightning 4 x 4), year 2019, seed 0. Its catalog carries
the planted defects: storm event 4 has a duplicated vil row and storm event 5 a corner of
missing VIL, so the default selection keeps 4 storm events, spread over July-December 2018,
January-May 2019 and July-December 2019.

``event_index``: ``events.csv`` from the default selection (storm events, all four modalities
required, complete events only), with ``events.json`` beside it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from training_support import build_twin_stores

from stormfusion.data.selection import SelectionOptions, run_selection
from stormfusion.data.synthetic import synthesize_archive

TWIN_STORM = 6
TWIN_RANDOM = 2
TWIN_SIZE = 32
TWIN_YEAR = 2019
TWIN_SEED = 0


@pytest.fixture(scope="session")
def synthetic_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw data root of the tiny twin (CATALOG.csv, data/, synthetic_manifest.json)."""
    root = tmp_path_factory.mktemp("sevir_twin") / "raw"
    synthesize_archive(
        root,
        n_storm=TWIN_STORM,
        n_random=TWIN_RANDOM,
        image_size=TWIN_SIZE,
        year=TWIN_YEAR,
        seed=TWIN_SEED,
    )
    return root


@pytest.fixture(scope="session")
def event_index(synthetic_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``events.csv`` of the tiny twin (``events.json`` beside it)."""
    out = tmp_path_factory.mktemp("sevir_index")
    run_selection(
        synthetic_archive / "CATALOG.csv",
        SelectionOptions(),
        out / "events.csv",
        out / "events.json",
        data_root=synthetic_archive,
    )
    return out / "events.csv"


@pytest.fixture(scope="session")
def twin(
    synthetic_archive: Path, event_index: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The twin converted to Zarr (every modality) plus its windows table, built once."""
    return build_twin_stores(synthetic_archive, event_index, tmp_path_factory.mktemp("stores"))
