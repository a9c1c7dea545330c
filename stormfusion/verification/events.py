"""Per-event tables: the one way accumulators keep their state by SEVIR event.

Every accumulator of the score step (contingency counts, continuous sums) holds an array
whose first axis is the event, in first-seen order, so that bootstrap intervals can
resample events and so that the state can be saved and summed again exactly. This module
owns the mapping from event ids to rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stormfusion.errors import StormFusionError

#: Event id used when a caller does not say which event a sample belongs to.
ALL_EVENTS = "all"


@dataclass
class EventTable:
    """An array ``table`` (E, ...) with one row per event of ``events`` (first-seen order)."""

    events: list[str] = field(default_factory=list)
    table: np.ndarray = field(default_factory=lambda: np.zeros((0,)))

    def rows(self, event_ids: Sequence[str]) -> list[int]:
        """The row of each id, adding zero rows for ids not seen before."""
        index = {e: i for i, e in enumerate(self.events)}
        out = []
        for e in event_ids:
            if e not in index:
                index[e] = len(self.events)
                self.events.append(e)
            out.append(index[e])
        grow = len(self.events) - self.table.shape[0]
        if grow:
            pad = np.zeros((grow, *self.table.shape[1:]), self.table.dtype)
            self.table = np.concatenate([self.table, pad])
        return out

    def add(self, event_ids: Sequence[str], values: np.ndarray) -> None:
        """Add ``values`` (len(event_ids), ...) to the rows of ``event_ids`` (repeats sum)."""
        rows = self.rows(event_ids)  # may grow the table: before reading it
        np.add.at(self.table, rows, values)

    def aligned(self, events: Sequence[str]) -> np.ndarray:
        """The rows of ``events`` in that order (each must be present)."""
        pos = {e: i for i, e in enumerate(self.events)}
        absent = [e for e in events if e not in pos]
        if absent:
            raise StormFusionError(f"events {absent[:3]} have no accumulated values")
        return self.table[[pos[e] for e in events]]


def sample_ids(event_ids: Sequence[str] | None, n: int) -> list[str]:
    """The B event ids of a batch (default: all :data:`ALL_EVENTS`), checked against ``n``."""
    ids = [ALL_EVENTS] * n if event_ids is None else [str(e) for e in event_ids]
    if len(ids) != n:
        raise StormFusionError(f"{len(ids)} event ids for {n} samples")
    return ids
