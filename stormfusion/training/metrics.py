"""Metrics of a run: the per-epoch rows of ``metrics.csv``, TensorBoard, the log lines.

A row has the base columns :data:`METRIC_COLUMNS` (times in seconds), then
``train_<term>`` and ``val_<term>`` for each named loss term. ``data_s`` is the time the
training loop waited for the DataLoader, ``step_s`` the time in the training steps
(forward, backward, all-reduce, optimiser): ``data_s`` well above a small fraction of
``step_s`` means the GPU waited on data.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stormfusion.io import write_text_atomic

logger = logging.getLogger(__name__)

#: The first columns of ``metrics.csv``; the loss terms follow.
METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    "val_loss",
    "lr",
    "time_s",
    "samples_per_s",
    "data_s",
    "step_s",
)


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Write the per-epoch rows atomically (base columns first, then the loss terms)."""
    extra = sorted(
        {k for row in history for k in row} - set(METRIC_COLUMNS),
        key=lambda k: (not k.startswith("train_"), k),
    )
    columns = [*METRIC_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in columns})
    write_text_atomic(path, buffer.getvalue())


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> tqdm[Any]:
    """A step bar on stderr (rarely refreshed when stderr is a log file)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        file=sys.stderr,
    )


class TensorBoard:
    """TensorBoard event files in ``out_dir/tensorboard`` (nothing when not installed)."""

    def __init__(self, out_dir: Path, purge_step: int, enabled: bool) -> None:
        self.writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed: no TensorBoard logs")
            return
        self.writer = SummaryWriter(
            log_dir=str(out_dir / "tensorboard"), purge_step=purge_step or None
        )

    def step(self, loss: float, global_step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/step_loss", loss, global_step)

    def epoch(self, row: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def log_epoch(row: dict[str, float], epochs: int, improved: bool) -> None:
    """The epoch's summary line, with where the training time went."""
    busy = row["data_s"] + row["step_s"]
    logger.info(
        "epoch %d/%d: train loss %.5g, val loss %.5g%s, lr %.3g, %.1f samples/s, %.1f s; "
        "waiting for data %.1f s, in steps %.1f s (%.0f%% of the loop waited on data)",
        int(row["epoch"]),
        epochs,
        row["train_loss"],
        row["val_loss"],
        " (best)" if improved else "",
        row["lr"],
        row["samples_per_s"],
        row["time_s"],
        row["data_s"],
        row["step_s"],
        100.0 * row["data_s"] / busy if busy > 0 else 0.0,
    )
