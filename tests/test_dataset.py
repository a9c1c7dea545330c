"""The window loader (stormfusion.data.dataset) and the regridding it uses (regrid)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
import zarr
from archive_twin import LGHT_FILE, Twin, make_twin
from torch.utils.data import DataLoader

from stormfusion.data.chunks import WindowReader
from stormfusion.data.convert import StoreLayout, convert_modality
from stormfusion.data.dataset import SevirWindowDataset, _dihedral, collate_windows
from stormfusion.data.hdf5 import grid_lightning, write_lightning_file
from stormfusion.data.normalization import SEVIR_NORMALIZATION, Normalization, normalize
from stormfusion.data.regrid import native_size, regrid, regrid_counts, regrid_mean
from stormfusion.data.sevir import STUDY_MODALITIES
from stormfusion.data.splits import PRESETS, SplitOptions, assign_splits, make_windows
from stormfusion.errors import StormFusionError

# --------------------------------------------------------------------------- regrid


@pytest.mark.parametrize(("n", "size"), [(48, 384), (4, 32), (48, 64), (7, 5), (8, 2)])
def test_lightning_regrid_keeps_every_frames_total(n: int, size: int) -> None:
    counts = torch.from_numpy(np.random.default_rng(n).poisson(2.0, (3, n, n)).astype(np.float32))
    out = regrid_counts(counts, size)
    assert out.shape == (3, size, size)
    torch.testing.assert_close(out.sum((-2, -1)), counts.sum((-2, -1)), rtol=1e-5, atol=1e-3)


def test_lightning_regrid_integer_factor_spreads_counts_evenly() -> None:
    counts = torch.zeros(1, 2, 2)
    counts[0, 1, 0] = 8.0  # north-west cell (row 1 = north)
    out = regrid_counts(counts, 4)
    expected = torch.zeros(1, 4, 4)
    expected[0, 2:, :2] = 2.0
    torch.testing.assert_close(out, expected)


def test_area_average_and_bilinear() -> None:
    x = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    torch.testing.assert_close(regrid_mean(x, 2), torch.tensor([[[2.5, 4.5], [10.5, 12.5]]]))
    torch.testing.assert_close(regrid("vil", x, 2), regrid_mean(x, 2))
    up = regrid("ir107", x, 8)
    ref = F.interpolate(x[None], size=(8, 8), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(up, ref)
    assert regrid("ir069", x, 4) is x


def test_regridders_and_normalisations_are_registries_listing_valid_names() -> None:
    with pytest.raises(StormFusionError, match=r"unknown regridding .* 'radar'.*ir069, ir107"):
        regrid("radar", torch.zeros(1, 4, 4), 2)
    with pytest.raises(StormFusionError, match=r"unknown normalisation .* 'vis'.*lght, vil"):
        normalize("vis", torch.zeros(1))
    assert SEVIR_NORMALIZATION.get("vil") == Normalization(33.44, 47.54)  # published
    assert native_size("ir069", 384) == 192 and native_size("lght", 384) == 48
    with pytest.raises(StormFusionError, match="image size 60 is not divisible by 8"):
        native_size("lght", 60)


# --------------------------------------------------------------------------- dataset


def _windows(events_csv: Path, val_fraction: float = 0.25) -> pd.DataFrame:
    events = pd.read_csv(events_csv, dtype={"id": str})
    labels = assign_splits(events, "random", SplitOptions(seed=0, val_fraction=val_fraction))
    return make_windows(events, labels, PRESETS["sevir"])


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Twin, Path, pd.DataFrame]:
    """A 4-event twin at VIL size 32 with one event lacking lightning, all stores built."""
    root = tmp_path_factory.mktemp("loader_twin")
    twin = make_twin(root, n_events=4, size=32, without_lght=("S1002",), missing_vil=6)
    for m in STUDY_MODALITIES:
        convert_modality(twin.events_csv, root, m, root / "zarr" / f"{m}.zarr", verify_events=0)
    return twin, root / "zarr", _windows(twin.events_csv)


def _source(twin: Twin, modality: str, event_id: str) -> np.ndarray:
    """(49, n, n) frames of one event as converted (lightning gridded)."""
    i = twin.ids.index(event_id)
    if modality == "lght":
        return np.moveaxis(grid_lightning(twin.flashes[event_id], twin.sizes["lght"]), -1, 0)
    return np.moveaxis(twin.rasters[modality][i], -1, 0)


def test_items_hold_the_source_windows_at_native_resolution(
    archive: tuple[Twin, Path, pd.DataFrame],
) -> None:
    """At the stores' own size every modality is the stored data, untouched: VIL 32 uint8,
    IR 16 int16, lightning 4 int32 counts (the native-resolution contract)."""
    twin, zarr_dir, windows = archive
    ds = SevirWindowDataset(zarr_dir, windows, None, image_size=32)
    assert (ds.input_frames, ds.output_frames) == (13, 12)
    assert ds.data_fingerprint == "fp-0-4"
    assert len(ds) == len(windows)
    for i in range(len(ds)):
        item = ds[i]
        event, s = item["event_id"], item["window_start"]
        assert (event, s) == (windows.event_id[i], windows.window_start[i])
        vil = _source(twin, "vil", event).copy()
        vil[vil == 255] = 0  # missing VIL is read as 0
        assert item["inputs"]["vil"].dtype == torch.uint8
        np.testing.assert_array_equal(item["inputs"]["vil"].numpy(), vil[s : s + 13])
        assert item["target"].dtype == torch.uint8
        np.testing.assert_array_equal(item["target"].numpy(), vil[s + 13 : s + 25])
        for m in ("ir069", "ir107"):
            assert item["inputs"][m].dtype == torch.int16
            np.testing.assert_array_equal(
                item["inputs"][m].numpy(), _source(twin, m, event)[s : s + 13]
            )
        got = item["inputs"]["lght"]
        assert got.shape == (13, 4, 4) and got.dtype == torch.int32
        if event == "S1002":
            assert item["mask"].tolist() == [1.0, 1.0, 1.0, 0.0]
            assert not got.any()
        else:
            assert item["mask"].tolist() == [1.0, 1.0, 1.0, 1.0]
            np.testing.assert_array_equal(got.numpy(), _source(twin, "lght", event)[s : s + 13])


def test_stores_of_another_size_are_regridded_and_missing_vil_logged(
    archive: tuple[Twin, Path, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    """At S = 16 from 32-pixel stores: VIL 16 and IR 8 area averages, lightning 2 with
    every frame's flash total kept; float32 stored units."""
    twin, zarr_dir, windows = archive
    with caplog.at_level(logging.INFO, logger="stormfusion.data.dataset"):
        ds = SevirWindowDataset(zarr_dir, windows, "train", image_size=16)
    log = caplog.text
    assert "missing VIL pixels" in log and "6 in all" in log  # S1000 has 6 missing pixels
    item = next(ds[i] for i in range(len(ds)) if ds.windows.event_id[i] != "S1002")
    event, s = item["event_id"], item["window_start"]
    ir = _source(twin, "ir069", event)[s : s + 13].astype(np.float32)
    ir_block = ir.reshape(13, 8, 2, 8, 2).mean(axis=(2, 4))  # 16 -> 8
    np.testing.assert_allclose(item["inputs"]["ir069"].numpy(), ir_block, rtol=1e-6)
    vil = _source(twin, "vil", event).astype(np.float32)
    vil[vil == 255] = 0.0
    block = vil[s + 13 : s + 25].reshape(12, 16, 2, 16, 2).mean(axis=(2, 4))  # 32 -> 16
    np.testing.assert_allclose(item["target"].numpy(), block, rtol=1e-6)
    assert item["target"].max() <= 254
    lght = _source(twin, "lght", event)[s : s + 13].astype(np.float32)
    got = item["inputs"]["lght"].numpy()
    assert got.shape == (13, 2, 2)
    np.testing.assert_allclose(got, lght.reshape(13, 2, 2, 2, 2).sum(axis=(2, 4)), atol=1e-4)


def test_lightning_frames_causal_hold_no_flash_after_the_last_input_time(
    tmp_path: Path,
) -> None:
    """A flash 1 minute after the last input time is in the official inputs (frame k holds
    [T_k, T_k + 5 min)) and absent from the causal ones (frame k holds [T_k - 5 min, T_k)),
    where it appears only one frame later; causal frame 0 is zeros."""
    twin = make_twin(tmp_path, n_events=2, size=16)
    event = twin.ids[1]
    t_last = (-120 + 5 * 12) * 60.0  # seconds: frame 12 is the last input of window 0
    flash = np.array(
        [
            [t_last + 60.0, 0.0, 0.0, 1.5, 0.5],  # x 1, y 0 on the 2 x 2 grid
            [-120 * 60.0 + 60.0, 0.0, 0.0, 0.5, 1.5],  # official frame 0, x 0, y 1
        ]
    )
    write_lightning_file(tmp_path / "data" / LGHT_FILE, {twin.ids[0]: flash[:0], event: flash})
    for m in ("vil", "lght"):
        convert_modality(twin.events_csv, tmp_path, m, tmp_path / "z" / f"{m}.zarr")
    table = _windows(twin.events_csv, val_fraction=0.5)
    table = table[(table.event_id == event) & (table.window_start == 0)]
    items = {
        mode: SevirWindowDataset(
            tmp_path / "z", table, None, ("vil", "lght"), 16, lightning_frames=mode
        )[0]["inputs"]["lght"]
        for mode in ("official", "causal")
    }
    official, causal = items["official"].numpy(), items["causal"].numpy()
    assert official.sum() == 2 and official[12, 0, 1] == 1  # in the last input frame
    assert official[0, 1, 0] == 1
    assert causal[12].sum() == 0 and causal[0].sum() == 0  # causal frame 0: zeros
    assert causal.sum() == 1 and causal[1, 1, 0] == 1  # the early flash, one frame later
    table = table.assign(window_start=1)  # one frame later it is causal frame 13 = input 12
    shifted = SevirWindowDataset(
        tmp_path / "z", table, None, ("lght",), 16, lightning_frames="causal"
    )[0]["inputs"]["lght"]
    assert shifted[12, 0, 1] == 1 and shifted[0, 1, 0] == 1 and shifted.sum() == 2
    with pytest.raises(StormFusionError, match=r"unknown lightning_frames 'late'.*causal"):
        SevirWindowDataset(tmp_path / "z", table, None, ("lght",), 16, lightning_frames="late")


def test_random_window_sampling_is_seeded_per_epoch_and_validates_at_frame_0(
    archive: tuple[Twin, Path, pd.DataFrame],
) -> None:
    twin, zarr_dir, windows = archive
    kwargs = {"modalities": ("vil",), "image_size": 32, "window_sampling": "random"}
    train = SevirWindowDataset(zarr_dir, windows, "train", seed=5, **kwargs)
    events = list(dict.fromkeys(windows[windows.split == "train"].event_id))
    assert len(train) == len(events)  # one window per event per epoch
    epochs = []
    for epoch in range(4):
        train.set_epoch(epoch)
        items = [train[i] for i in range(len(train))]
        assert [it["event_id"] for it in items] == events
        starts = [it["window_start"] for it in items]
        # the documented rule: default_rng((seed, epoch, 1)) draws, one per event in order
        rule = np.random.default_rng((5, epoch, 1)).integers(0, 49 - 25 + 1, len(events))
        assert starts == rule.tolist()
        for it in items:
            vil = _source(twin, "vil", it["event_id"]).copy()
            vil[vil == 255] = 0
            s = it["window_start"]
            np.testing.assert_array_equal(it["inputs"]["vil"].numpy(), vil[s : s + 13])
        epochs.append(starts)
    assert len({tuple(e) for e in epochs}) > 1  # the starts change between epochs
    same = SevirWindowDataset(zarr_dir, windows, "train", seed=5, **kwargs)
    same.set_epoch(2)
    assert [same[i]["window_start"] for i in range(len(same))] == epochs[2]
    val = SevirWindowDataset(zarr_dir, windows, "val", seed=5, **kwargs)
    assert len(val) == windows[windows.split == "val"].event_id.nunique()
    for epoch in range(3):
        val.set_epoch(epoch)
        assert all(val[i]["window_start"] == 0 for i in range(len(val)))
    with pytest.raises(StormFusionError, match=r"unknown window_sampling 'sometimes'.*fixed"):
        SevirWindowDataset(zarr_dir, windows, "val", window_sampling="sometimes")


def test_missing_modality_is_masked_and_logged(
    archive: tuple[Twin, Path, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    _, zarr_dir, windows = archive
    with caplog.at_level(logging.WARNING, logger="stormfusion.data.dataset"):
        ds = SevirWindowDataset(zarr_dir, windows, None, image_size=8)
    assert ds.missing_windows == {"vil": 0, "ir069": 0, "ir107": 0, "lght": 3}
    assert "modality lght missing for 3 of 12 windows (1 events)" in caplog.text
    items = [ds[i] for i in range(len(ds)) if ds.windows.event_id[i] == "S1002"]
    assert all(it["mask"][3] == 0 and not it["inputs"]["lght"].any() for it in items)


def test_augmentation_is_the_same_for_every_modality_and_reproducible(
    archive: tuple[Twin, Path, pd.DataFrame],
) -> None:
    _, zarr_dir, windows = archive
    for dtype in (np.uint8, np.int16, np.int32, np.float32):
        x = np.arange(2 * 3 * 3).astype(dtype).reshape(2, 3, 3)
        for k in range(4):
            np.testing.assert_array_equal(_dihedral(x, k, False), np.rot90(x, k, axes=(1, 2)))
            np.testing.assert_array_equal(
                _dihedral(x, k, True), np.flip(np.rot90(x, k, axes=(1, 2)), axis=-1)
            )
    plain = SevirWindowDataset(zarr_dir, windows, None, image_size=16)
    aug = SevirWindowDataset(zarr_dir, windows, None, image_size=16, augment=True, seed=3)
    seen = set()
    for i in range(len(aug)):
        k, flip = aug.augmentation(i)
        seen.add((k, flip))
        a, p = aug[i], plain[i]
        for m in STUDY_MODALITIES:  # each at its own resolution (8 and 1 pixels here)
            expected = _dihedral(p["inputs"][m].numpy(), k, flip)
            np.testing.assert_array_equal(a["inputs"][m].numpy(), expected)
        np.testing.assert_array_equal(a["target"], _dihedral(p["target"].numpy(), k, flip))
    assert len(seen) > 2  # several of the 8 symmetries drawn
    again = SevirWindowDataset(zarr_dir, windows, None, image_size=16, augment=True, seed=3)
    draws = [again.augmentation(i) for i in range(len(again))]
    assert draws == [aug.augmentation(i) for i in range(len(aug))]
    again.set_epoch(1)
    assert [again.augmentation(i) for i in range(len(again))] != draws
    np.testing.assert_array_equal(
        again[0]["target"], _dihedral(plain[0]["target"].numpy(), *again.augmentation(0))
    )


def test_dataloader_workers_give_the_same_batches(
    archive: tuple[Twin, Path, pd.DataFrame],
) -> None:
    _, zarr_dir, windows = archive
    ds = SevirWindowDataset(zarr_dir, windows, "train", image_size=16, augment=True)
    ds[0]  # handles opened in the parent must not travel to the workers
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_windows)
        batches[workers] = list(loader)
    # the plain way: items one by one, stacked by default_collate
    batches[-1] = list(DataLoader(_ItemsOnly(ds), batch_size=4))
    assert len(batches[0]) == len(batches[2]) == len(batches[-1]) == 3
    for b0, b2 in zip(batches[0], batches[-1], strict=True):
        assert b0["event_id"] == b2["event_id"]
        assert b0["window_start"].tolist() == b2["window_start"].tolist()
        torch.testing.assert_close(b0["mask"], b2["mask"])
        assert torch.equal(b0["target"], b2["target"])
        assert all(torch.equal(b0["inputs"][m], b2["inputs"][m]) for m in STUDY_MODALITIES)
    # without collate_windows the batched fetch still gives the same batches
    plain = next(iter(DataLoader(ds, batch_size=4)))
    assert torch.equal(plain["target"], batches[0][0]["target"])
    for b0, b2 in zip(batches[0], batches[2], strict=True):
        assert b0["event_id"] == b2["event_id"]
        assert b0["window_start"].dtype == torch.int64
        b = len(b0["event_id"])
        assert b0["target"].shape == (b, 12, 16, 16) and b0["mask"].shape == (b, 4)
        torch.testing.assert_close(b0["target"], b2["target"])
        for m in STUDY_MODALITIES:
            torch.testing.assert_close(b0["inputs"][m], b2["inputs"][m])


class _ItemsOnly(torch.utils.data.Dataset[dict[str, object]]):
    """The dataset without its batched fetch (``__getitems__``)."""

    def __init__(self, ds: SevirWindowDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, object]:
        return self.ds[i]


def test_targets_only(archive: tuple[Twin, Path, pd.DataFrame]) -> None:
    _, zarr_dir, windows = archive
    ds = SevirWindowDataset(zarr_dir, windows, "val", modalities=(), image_size=32)
    item = ds[0]
    assert item["inputs"] == {}
    assert item["mask"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert item["target"].shape == (12, 32, 32)


def test_bad_stores_and_windows_are_errors(
    archive: tuple[Twin, Path, pd.DataFrame], tmp_path: Path
) -> None:
    _, zarr_dir, windows = archive
    with pytest.raises(StormFusionError, match=r"vil\.zarr: zarr store for modality 'vil'"):
        SevirWindowDataset(tmp_path, windows, None)
    unknown = windows.copy()
    unknown.loc[0, "event_id"] = "S999"
    with pytest.raises(StormFusionError, match=r"no target frames for 1 event.*S999"):
        SevirWindowDataset(zarr_dir, unknown, None, modalities=())
    with pytest.raises(StormFusionError, match="no windows in split 'test'"):
        SevirWindowDataset(zarr_dir, windows, "test")
    mixed = windows.copy()
    mixed.loc[0, "output_frames"] = 6
    with pytest.raises(StormFusionError, match="output_frames takes several values"):
        SevirWindowDataset(zarr_dir, mixed, None, modalities=())
    # a store whose dtype, shape or fingerprint does not fit
    ir = xr.open_zarr(zarr_dir / "ir069.zarr", consolidated=False, mask_and_scale=False).load()
    bad = tmp_path / "bad"
    for name, store in {
        "dtype": ir.assign(ir069=ir["ir069"].astype("float32")),
        "shape": ir.isel(time=slice(0, 48)),
        "fingerprint": ir.assign_attrs(data_fingerprint="other"),
    }.items():
        folder = bad / name
        (folder).mkdir(parents=True)
        (folder / "vil.zarr").symlink_to(zarr_dir / "vil.zarr")
        store.to_zarr(folder / "ir069.zarr", zarr_format=3, consolidated=False)
        with pytest.raises(StormFusionError, match=f"ir069.zarr: .*{name[:5]}"):
            SevirWindowDataset(folder, windows, None, modalities=("vil", "ir069"))


@pytest.mark.parametrize(
    "layout",
    [
        StoreLayout(7, "zstd1"),
        StoreLayout(13, "blosc-lz4"),
        StoreLayout(5, "none"),
        StoreLayout(7, "zstd1", shard=True),
    ],
)
def test_window_reader_matches_zarr_indexing(tmp_path: Path, layout: StoreLayout) -> None:
    twin = make_twin(tmp_path, n_events=2, size=16)  # S1000 has no flashes: no chunk files
    for m in ("vil", "lght"):
        out = tmp_path / f"{m}.zarr"
        convert_modality(twin.events_csv, tmp_path, m, out, verify_events=0, layout=layout)
        array = zarr.open_array(out / m, mode="r")
        reader = WindowReader(array)
        assert reader.fast is not layout.shard  # sharded stores go through zarr
        for row in range(2):
            for start, stop in [(0, 49), (12, 30), (24, 49), (36, 37), (7, 7)]:
                np.testing.assert_array_equal(
                    reader.read(row, start, stop), np.asarray(array[row, start:stop])
                )
    with pytest.raises(IndexError):
        WindowReader(zarr.open_array(tmp_path / "vil.zarr" / "vil", mode="r")).read(0, 40, 50)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("delete", "the chunk file is missing"),
        ("truncate", "corrupt or truncated"),
        ("garbage", "corrupt or truncated"),
    ],
)
@pytest.mark.parametrize("layout", [StoreLayout(7, "blosc-lz4"), StoreLayout(7, "zstd1")])
def test_damaged_chunks_are_refused_naming_store_event_and_chunk(
    tmp_path: Path, damage: str, says: str, layout: StoreLayout
) -> None:
    """Deleted, cut-off or overwritten chunk files are errors, never read as fill (zeros),
    through the dataset and through DataLoader workers alike (one line, no traceback)."""
    twin = make_twin(tmp_path, n_events=2, size=16)
    zarr_dir = tmp_path / "zarr"
    convert_modality(twin.events_csv, tmp_path, "vil", zarr_dir / "vil.zarr", layout=layout)
    table = _windows(twin.events_csv, val_fraction=0.5)
    event = str(table.event_id[0])
    start = int(table.window_start[0])
    row = twin.ids.index(event)  # the store keeps the event index's order
    key = f"c/{row}/{start // 7 + 1}/0/0"  # the window's second chunk
    chunk = zarr_dir / "vil.zarr" / "vil" / key
    assert chunk.is_file()  # every chunk is written, even all-fill ones
    data = chunk.read_bytes()
    if damage == "delete":
        chunk.unlink()
    elif damage == "truncate":
        chunk.write_bytes(data[: len(data) // 2])
    else:
        chunk.write_bytes(bytes(len(data)))
    ds = SevirWindowDataset(zarr_dir, table.iloc[:1], None, modalities=("vil",), image_size=16)
    pattern = f"vil.zarr/vil: event {event}, chunk {key}: {says}.*convert it again"
    with pytest.raises(StormFusionError, match=pattern):
        ds[0]
    with pytest.raises(StormFusionError, match=pattern) as caught:
        list(DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate_windows))
    assert "Traceback" not in str(caught.value)


def test_stores_that_may_skip_empty_chunks_are_logged(
    archive: tuple[Twin, Path, pd.DataFrame], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store of an older format (or another writer) may lack all-fill chunks: opened,
    with a warning that a missing chunk there reads as the fill value."""
    _, zarr_dir, windows = archive
    old = tmp_path / "vil.zarr"
    xr.open_zarr(
        zarr_dir / "vil.zarr", consolidated=False, mask_and_scale=False
    ).load().assign_attrs(store_format=1).to_zarr(old, zarr_format=3, consolidated=False)
    with caplog.at_level(logging.WARNING, logger="stormfusion.data.dataset"):
        ds = SevirWindowDataset(tmp_path, windows, None, modalities=())
    assert "store_format 1 predates format 2" in caplog.text
    assert ds.stores["vil"].store_format == 1
    fresh = SevirWindowDataset(zarr_dir, windows, None, modalities=())
    assert fresh.stores["vil"].store_format == 2
    torch.testing.assert_close(ds[0]["target"], fresh[0]["target"])


def test_loader_option_names_and_defaults_agree_with_the_settings_and_schema() -> None:
    """One set of names (the registries) and one default, wherever they are spelled."""
    import yaml

    from stormfusion.data.dataset import (
        DEFAULT_LIGHTNING_FRAMES,
        DEFAULT_WINDOW_SAMPLING,
        LIGHTNING_FRAMES,
        WINDOW_SAMPLING,
    )
    from stormfusion.training.config import TrainingConfig

    schema_path = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())["properties"]
    lightning = schema["data"]["properties"]["lightning_frames"]
    sampling = schema["split"]["properties"]["window_sampling"]
    assert sorted(lightning["enum"]) == LIGHTNING_FRAMES.names()
    assert sorted(sampling["enum"]) == WINDOW_SAMPLING.names()
    defaults = {lightning["default"], TrainingConfig().lightning_frames}
    assert defaults == {DEFAULT_LIGHTNING_FRAMES}
    assert {sampling["default"], TrainingConfig().window_sampling} == {DEFAULT_WINDOW_SAMPLING}
