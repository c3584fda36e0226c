"""Per-step statistics of an engine (``steps.parquet``) and their running sums.

Every step is recorded after its completions and before admission
(docs/llm.md, "Statistics"): the step's end time ``t``, its ``duration``,
``load_max = max_g L_g``, ``load_sum = sum_g L_g``, the imbalance
``G * load_max - load_sum`` (tokens), the idle rate
``mean_g (1 - L_g / load_max) = imbalance / (G * load_max)`` (0 when every
rank is empty), ``barrier_idle``: the share of the step's rank-time spent
waiting at the barrier, ``sum_g (duration - own_g) / (G * duration)``,
``active``, ``free_slots``, ``pool`` (waiting requests), ``power``
(``sum_g P_g``, W) and ``energy`` (``power * duration``, J).

Running sums are kept exactly (Python floats added in step order) whatever
the recording mode; with ``sample_interval`` set, only the last step ending
at or before each multiple of it is kept as a row, with the running sums up
to it (``*_total`` columns), so long runs stay small. The *window* of the
BF-IO protocol is steps 1 to the last step after which anything was
admitted: :meth:`StepLog.admitted_after` freezes the sums at that step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd



COLUMNS = (
    "t", "step", "duration", "load_max", "load_sum", "imbalance", "idle_rate", "barrier_idle",
    "active", "free_slots", "pool", "power", "energy",
)  # fmt: skip


@dataclass
class Sums:
    """Running sums over steps 1..``steps`` (times in s, energy in J)."""

    steps: int = 0
    time: float = 0.0  # end of the last step counted
    busy_time: float = 0.0  # sum of durations
    imbalance: float = 0.0  # sum over steps of the imbalance (tokens)
    idle_rate: float = 0.0  # sum over steps of the idle rate
    barrier_idle: float = 0.0  # rank-seconds spent waiting at the barrier
    rank_time: float = 0.0  # rank-seconds of steps: G * busy_time
    energy: float = 0.0
    tokens: int = 0  # tokens emitted

    def copy(self) -> Sums:
        return Sums(**{f.name: getattr(self, f.name) for f in fields(self)})


class StepLog:
    """Records an engine's steps: every step, or one every ``sample_interval`` seconds."""

    def __init__(self, backend: str = "llm", sample_interval: float | None = None):
        if sample_interval is not None and not sample_interval > 0:
            raise ValueError(f"sample_interval must be > 0, got {sample_interval}")
        self.backend = backend
        self.sample_interval = sample_interval
        self.sums = Sums()
        #: the sums at the last step after which anything was admitted (step 0: the first admission)
        self.window: Sums | None = None
        self._rows: dict[str, list[float | int]] = {name: [] for name in (*COLUMNS, *_TOTALS)}
        self._pending: tuple | None = None  # sampled mode: the last step not yet written

    def record(
        self,
        *,
        t: float,
        step: int,
        duration: float,
        load_max: int,
        load_sum: int,
        workers: int,
        barrier_idle: float,
        active: int,
        free_slots: int,
        pool: int,
        power: float,
        tokens: int,
    ) -> None:
        """One step's statistics; ``barrier_idle`` in rank-seconds (``sum_g duration - own_g``)."""
        imbalance = workers * load_max - load_sum
        idle_rate = imbalance / (workers * load_max) if load_max > 0 else 0.0
        energy = power * duration
        sums = self.sums
        sums.steps = step
        sums.time = t
        sums.busy_time += duration
        sums.imbalance += imbalance
        sums.idle_rate += idle_rate
        sums.barrier_idle += barrier_idle
        sums.rank_time += workers * duration
        sums.energy += energy
        sums.tokens += tokens
        share = barrier_idle / (workers * duration) if duration > 0 else 0.0
        row = (
            t,
            step,
            duration,
            load_max,
            load_sum,
            imbalance,
            idle_rate,
            share,
            active,
            free_slots,
            pool,
            power,
            energy,
        )
        if self.sample_interval is None:
            self._append(row)
            return
        pending = self._pending
        if pending is not None and math.ceil(pending[0][0] / self.sample_interval) * self.sample_interval < t:
            # A sample time lies in [pending step, this step): the pending step is the last before it.
            self._append(*pending)
        self._pending = (row, sums.copy())

    def admitted_after(self, step: int, t: float) -> None:
        """Admission placed requests after ``step`` (0: before the first step)."""
        self.window = self.sums.copy()

    def _append(self, row: tuple, sums: Sums | None = None) -> None:
        for name, value in zip(COLUMNS, row):
            self._rows[name].append(value)
        if sums is not None:
            for name, attr in _TOTALS.items():
                self._rows[name].append(getattr(sums, attr))

    def frame(self) -> pd.DataFrame:
        """The recorded steps: one row per step, or per sample with ``*_total`` running sums."""
        import pandas as pd  # (lazy: the CLI starts without pandas)

        if self.sample_interval is not None and self._pending is not None:
            self._append(*self._pending)
            self._pending = None
        names = COLUMNS if self.sample_interval is None else (*COLUMNS, *_TOTALS)
        frame = pd.DataFrame({name: self._rows[name] for name in names})
        frame.insert(1, "backend", self.backend)
        return frame


#: sampled columns -> the running sum they hold
_TOTALS = {
    "steps_total": "steps",
    "busy_time_total": "busy_time",
    "imbalance_total": "imbalance",
    "idle_rate_total": "idle_rate",
    "barrier_idle_total": "barrier_idle",
    "energy_total": "energy",
    "tokens_total": "tokens",
}
