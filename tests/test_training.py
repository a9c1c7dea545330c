"""Trainer mechanics on a tiny model and a tiny in-memory dataset (no SEVIR data needed).

The end-to-end checks on the synthetic twin with the real loader and models (a SIGKILLed
run resuming, torchrun with 2 processes against 1) are in tests/test_training_cli.py, the
learning check in tests/test_learning.py.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from stormfusion.errors import StormFusionError
from stormfusion.models.base import ForecastModel
from stormfusion.training.checkpoint import read_checkpoint
from stormfusion.training.config import TrainingConfig
from stormfusion.training.distributed import DistContext, ShardedBatchSampler
from stormfusion.training.metrics import METRIC_COLUMNS
from stormfusion.training.state import DataInfo
from stormfusion.training.trainer import Trainer

T_IN, T_OUT, SIZE = 4, 2, 12
DATA = DataInfo(data_fingerprint="test-fingerprint", catalog_sha256="abc", events=("S1", "S2"))


class TinyModel(ForecastModel):
    """Two convolutions from VIL frames to VIL frames; optional dropout and injected faults."""

    def __init__(
        self,
        input_frames: int = T_IN,
        output_frames: int = T_OUT,
        hidden: int = 8,
        dropout: float = 0.0,
        nan_at_call: int = 0,
        oom: bool = False,
    ) -> None:
        super().__init__(("vil",), input_frames, output_frames)
        self.net = nn.Sequential(
            nn.Conv2d(input_frames, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, output_frames, 3, padding=1),
        )
        self.nan_at_call = nan_at_call
        self.oom = oom
        self.calls = 0

    def forward(self, inputs: dict[str, Tensor], mask: Tensor) -> Tensor:
        if self.oom:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return 33.44 + 47.54 * self.net(inputs["vil"])

    def training_loss(
        self, inputs: dict[str, Tensor], mask: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        loss, terms = super().training_loss(inputs, mask, target)
        if self.training:
            self.calls += 1
            if self.calls == self.nan_at_call:
                loss = loss * float("nan")
        mae = float(torch.mean(torch.abs(self(inputs, mask) - target)).detach()) / 255.0
        return loss, {**terms, "mae": mae}


class TinyDataset(torch.utils.data.Dataset):
    """Drifting random fields: the target continues the drift of the inputs.

    With ``augment`` the sample is flipped left-right depending on (seed, epoch, index), so
    the order of epochs matters and a resumed run must reproduce it.
    """

    def __init__(self, n: int, offset: int = 0, augment: bool = False, seed: int = 0) -> None:
        self.n, self.offset, self.augment, self.seed, self.epoch = n, offset, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(self.offset + i)
        field = np.kron(rng.random((SIZE // 4, SIZE // 4)), np.ones((4, 4))) * 200.0
        frames = np.stack([np.roll(field, k, axis=1) for k in range(T_IN + T_OUT)])
        if self.augment and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            frames = frames[:, :, ::-1]
        frames = torch.from_numpy(np.ascontiguousarray(frames)).float()
        return {
            "inputs": {"vil": frames[:T_IN]},  # stored units
            "mask": torch.tensor([1.0, 0.0, 0.0, 0.0]),
            "target": frames[T_IN:],
            "event_id": f"S{self.offset + i}",
            "window_start": i,
        }


def make_trainer(
    out_dir: Path,
    *,
    model_args: dict[str, Any] | None = None,
    n_train: int = 24,
    ctx: DistContext | None = None,
    on_step: Any = None,
    resume: str = "strict",
    **config: Any,
) -> Trainer:
    args = {"hidden": 8, "dropout": 0.0, **(model_args or {})}
    settings = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "seed": 0, "num_workers": 0, **config}
    return Trainer(
        model_name="tiny",
        model_args=args,
        train_set=TinyDataset(n_train, augment=True),
        val_set=TinyDataset(8, offset=1000),
        out_dir=out_dir,
        config=TrainingConfig(**settings),
        data=DATA,
        build_model=lambda: TinyModel(**args),
        ctx=ctx,
        device=torch.device("cpu"),
        on_step=on_step,
        resume=resume,
    )


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- sampler
def test_sharded_sampler_splits_each_global_batch_between_ranks() -> None:
    single = ShardedBatchSampler(10, 4, seed=3)
    ranks = [ShardedBatchSampler(10, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(1)
    batches = list(single)
    assert len(batches) == 2 == len(single)  # 10 // 4 full batches, the rest dropped
    shares = [list(s) for s in ranks]
    for step, batch in enumerate(batches):
        assert sorted(shares[0][step] + shares[1][step]) == sorted(batch)
        assert len(shares[0][step]) == len(shares[1][step]) == 2
    # another epoch, another order; skipping steps resumes in the middle of an epoch
    single.set_epoch(2)
    other = list(single)
    assert other != batches
    single.set_epoch(2, start_step=1)
    assert list(single) == other[1:]


def test_sharded_sampler_keeps_partial_batch_for_validation() -> None:
    sampler = ShardedBatchSampler(5, 4, rank=1, world_size=2, shuffle=False, drop_last=False)
    assert list(sampler) == [[1, 3]]  # rank 1 has nothing in the last batch [4]
    assert len(sampler) == 1
    rank0 = ShardedBatchSampler(5, 4, rank=0, world_size=2, shuffle=False, drop_last=False)
    assert list(rank0) == [[0, 2], [4]]


def test_batch_size_must_divide_between_processes() -> None:
    with pytest.raises(StormFusionError, match="not divisible by the 2 processes"):
        ShardedBatchSampler(10, 3, rank=0, world_size=2)


# ----------------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_writes_checkpoints_and_metrics(tmp_path: Path) -> None:
    result = make_trainer(tmp_path, epochs=5).fit()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert list(rows[0])[: len(METRIC_COLUMNS)] == list(METRIC_COLUMNS)
    assert {"train_mse", "train_mae", "val_mse", "val_mae"} <= set(rows[0])
    assert float(rows[-1]["val_loss"]) < 0.7 * float(rows[0]["val_loss"])
    assert float(rows[0]["samples_per_s"]) > 0
    # the MSE is the whole loss of this model: the term and the loss agree
    assert float(rows[-1]["val_mse"]) == pytest.approx(float(rows[-1]["val_loss"]))
    best = read_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.best_epoch
    assert best["best_val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows))
    assert best["model_name"] == "tiny" and best["model_args"] == {"dropout": 0.0, "hidden": 8}
    assert best["data"] == {
        "data_fingerprint": "test-fingerprint",
        "catalog_sha256": "abc",
        "events": ["S1", "S2"],
    }
    assert best["config"]["batch_size"] == 4 and "package_version" in best
    assert set(best["optimizer"]) == {"state", "param_groups"}
    latest = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert latest["epoch"] == 5 and latest["best"]["epoch"] == result.best_epoch
    assert (tmp_path / "tensorboard").is_dir()


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = make_trainer(tmp_path / "a", epochs=2, model_args={"dropout": 0.2})
    b = make_trainer(tmp_path / "b", epochs=2, model_args={"dropout": 0.2})
    a.fit(), b.fit()
    for (name, wa), wb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(wa, wb), name


class SimulatedKillError(Exception):
    """Stands in for a kill right after a step's checkpoint was written."""


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    settings = {"epochs": 3, "checkpoint_every_steps": 4, "model_args": {"dropout": 0.3}}
    reference = make_trainer(tmp_path / "ref", **settings)
    reference.fit()

    def kill_at(step: int) -> Any:
        def hook(global_step: int) -> None:
            if global_step == step:
                raise SimulatedKillError

        return hook

    run = tmp_path / "run"
    # 6 steps per epoch: step 9 is mid-epoch 2, one step after the checkpoint of step 8
    with pytest.raises(SimulatedKillError):
        make_trainer(run, on_step=kill_at(9), **settings).fit()
    saved = read_checkpoint(run / "latest.pt")
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 2, 8)
    # Snakemake deletes the declared outputs of a failed job before running it again
    (run / "best.pt").unlink()
    (run / "metrics.csv").unlink()
    with pytest.raises(SimulatedKillError):  # a second kill, this time at an epoch's last step
        make_trainer(run, on_step=kill_at(12), **settings).fit()
    assert (run / "best.pt").is_file() and (run / "metrics.csv").is_file()
    resumed = make_trainer(run, **settings)
    resumed.fit()

    for (name, w_ref), w_run in zip(
        reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(w_ref, w_run), name
    ref_rows, run_rows = (
        read_metrics(tmp_path / "ref" / "metrics.csv"),
        read_metrics(run / "metrics.csv"),
    )
    for key in ("train_loss", "val_loss", "lr", "train_mae", "val_mse"):
        assert [r[key] for r in run_rows] == [r[key] for r in ref_rows], key
    ref_best, run_best = (
        read_checkpoint(tmp_path / "ref" / "best.pt"),
        read_checkpoint(run / "best.pt"),
    )
    assert ref_best["epoch"] == run_best["epoch"]
    for k, v in ref_best["model"].items():
        assert torch.equal(v, run_best["model"][k]), k


def test_a_finished_run_started_again_only_rewrites_its_outputs(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=2).fit()
    before = read_metrics(tmp_path / "metrics.csv")
    (tmp_path / "best.pt").unlink()
    steps: list[int] = []
    make_trainer(tmp_path, epochs=2, on_step=steps.append).fit()
    assert steps == []
    assert read_metrics(tmp_path / "metrics.csv") == before
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] in (1, 2)


def test_resuming_with_other_model_arguments_is_refused(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=1).fit()
    with pytest.raises(
        StormFusionError, match=r"other tiny arguments \(hidden: checkpoint 8 vs requested 16\)"
    ):
        make_trainer(tmp_path, epochs=2, model_args={"hidden": 16}).fit()
    with pytest.raises(StormFusionError, match=r"other training settings \(lr: checkpoint 0.01"):
        make_trainer(tmp_path, epochs=2, lr=1e-3).fit()


def test_auto_resume_retrains_afresh_when_the_settings_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # what Snakemake does after a run's args change: the same out_dir, other settings
    make_trainer(tmp_path / "old", epochs=1).fit()
    (tmp_path / "old").rename(tmp_path / "run")
    fresh = make_trainer(tmp_path / "fresh", epochs=2, model_args={"hidden": 16})
    fresh.fit()
    with caplog.at_level("WARNING", logger="stormfusion.training"):
        rerun = make_trainer(tmp_path / "run", epochs=2, model_args={"hidden": 16}, resume="auto")
        rerun.fit()
    assert "not resuming" in caplog.text and "hidden: checkpoint 8 vs requested 16" in caplog.text
    saved = read_checkpoint(tmp_path / "run" / "latest.pt")
    assert saved["model_args"]["hidden"] == 16 and saved["epoch"] == 2
    for (name, wa), wb in zip(
        fresh.model.state_dict().items(), rerun.model.state_dict().values(), strict=True
    ):
        assert torch.equal(wa, wb), name
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == 2


def test_auto_resume_still_resumes_a_compatible_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_trainer(tmp_path, epochs=1).fit()
    with caplog.at_level("INFO", logger="stormfusion.training"):
        make_trainer(tmp_path, epochs=2, resume="auto").fit()
    assert "resuming from" in caplog.text and "not resuming" not in caplog.text
    assert read_checkpoint(tmp_path / "latest.pt")["epoch"] == 2


def test_a_checkpoint_past_the_asked_epochs_is_not_resumed(tmp_path: Path) -> None:
    make_trainer(tmp_path, epochs=3).fit()
    with pytest.raises(StormFusionError, match="3 epochs done, more than the 2 asked for"):
        make_trainer(tmp_path, epochs=2).fit()
    make_trainer(tmp_path, epochs=2, resume="auto").fit()
    assert read_checkpoint(tmp_path / "latest.pt")["epoch"] == 2
    assert len(read_metrics(tmp_path / "metrics.csv")) == 2


def test_unknown_resume_mode_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StormFusionError, match="unknown resume mode 'maybe'; valid: strict"):
        make_trainer(tmp_path, resume="maybe")


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    # 6 steps per epoch: call 9 is step 3 of epoch 2; the last good checkpoint is epoch 1's
    with pytest.raises(
        StormFusionError,
        match=r"non-finite training loss \(nan\) at epoch 2, "
        r"step 3 \(global step 9\).*latest.pt is kept",
    ):
        make_trainer(tmp_path, model_args={"nan_at_call": 9}).fit()
    saved = read_checkpoint(tmp_path / "latest.pt")
    assert saved["epoch"] == 1 and saved["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_out_of_memory_says_what_to_reduce(tmp_path: Path) -> None:
    with pytest.raises(
        StormFusionError,
        match="out of memory on cpu while training step 1 "
        r"\(batch 4 per process\): reduce --batch-size, --image-size or the "
        "model's hidden_dim",
    ):
        make_trainer(tmp_path, model_args={"oom": True}).fit()


def test_models_without_weights_to_train_are_refused(tmp_path: Path) -> None:
    class Frozen(TinyModel):
        trainable = False

    with pytest.raises(StormFusionError, match="has nothing to train"):
        Trainer(
            model_name="frozen",
            model_args={},
            train_set=TinyDataset(8),
            val_set=TinyDataset(4),
            out_dir=tmp_path,
            config=TrainingConfig(),
            data=DATA,
            build_model=Frozen,
            device=torch.device("cpu"),
        )


def test_too_small_splits_and_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(
        StormFusionError, match="training split has 3 windows, fewer than one batch of 4"
    ):
        make_trainer(tmp_path, n_train=3)
    with pytest.raises(StormFusionError, match=r"invalid training settings: lr=0.0, grad_clip=-1"):
        TrainingConfig(lr=0.0, grad_clip=-1)


# ----------------------------------------------------------------------------- settings
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
#: Keys of the schema's `training` block that say how the job is launched, not how it trains.
LAUNCH_KEYS = {"gpus", "nodes", "rdzv_port", "rdzv_timeout"}


def test_the_schema_documents_every_setting_with_the_dataclass_default() -> None:
    import yaml

    from stormfusion.training.config import config_fields

    schema = yaml.safe_load(SCHEMA.read_text())
    sections = {
        "training": schema["$defs"]["training"]["properties"],
        "data": schema["properties"]["data"]["properties"],
        "split": schema["properties"]["split"]["properties"],
    }
    for f in config_fields():
        section = sections[f.metadata["schema"]]
        assert f.name in section, f"{f.name} is not in the schema's {f.metadata['schema']}"
        assert section[f.name]["default"] == f.default, f.name
    names = {f.name for f in config_fields()}
    assert set(sections["training"]) - names == LAUNCH_KEYS
    override = schema["$defs"]["training_override"]["properties"]
    assert set(override) == set(sections["training"])


def test_train_options_are_generated_from_the_dataclass() -> None:
    from stormfusion.cli import build_parser
    from stormfusion.training.config import config_argv, config_from_args

    required = ["train", "--model", "unet2d", "--zarr-dir", "z", "--windows", "w"]
    required += ["--events-meta", "m", "--out-dir", "o"]
    parser = build_parser("train")
    assert config_from_args(parser.parse_args(required)) == TrainingConfig()
    changed = TrainingConfig(
        epochs=7,
        lr=3e-4,
        max_steps_per_epoch=5,
        scheduler_patience=1,
        augment=False,
        num_workers=0,
        image_size=64,
    )
    argv = config_argv(changed.to_dict())
    assert "--no-augment" in argv and "--scheduler-patience" in argv
    assert config_from_args(parser.parse_args(required + argv)) == changed
    # keys that are not settings (launch keys, other data keys) are not options
    assert config_argv({"gpus": 2, "nodes": 2, "epochs": 3}) == ["--epochs", "3"]


def test_plateau_patience_is_the_setting_and_a_resume_must_keep_it(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, epochs=1, scheduler_patience=5, scheduler_factor=0.25)
    assert trainer.parts.scheduler.patience == 5
    assert trainer.parts.scheduler.factor == 0.25
    trainer.fit()
    with pytest.raises(StormFusionError, match="scheduler_patience: checkpoint 5 vs now 3"):
        make_trainer(tmp_path, epochs=2, scheduler_factor=0.25).fit()


def test_persistent_workers_draw_each_epochs_augmentation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two worker processes kept across epochs give the weights of loading in-process.

    TinyDataset flips samples depending on the epoch: a worker that kept a stale epoch
    would train on other samples and end with other weights.
    """
    inline = make_trainer(tmp_path / "inline", epochs=3)
    inline.fit()
    with caplog.at_level("INFO", logger="stormfusion.training"):
        workers = make_trainer(tmp_path / "workers", epochs=3, num_workers=2)
        workers.fit()
    assert workers.train_loader.persistent_workers
    for (name, a), b in zip(
        inline.model.state_dict().items(), workers.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    rows = read_metrics(tmp_path / "workers" / "metrics.csv")
    assert all(float(r["data_s"]) >= 0 and float(r["step_s"]) > 0 for r in rows)
    assert caplog.text.count("waiting for data") == 3
