"""Records of what happened, turned into tidy DataFrames at the end.

A job's row is packed into 56 bytes of a growing buffer as its backend
finishes it (no Python object per value survives the job), so a run of
millions of jobs stays small, and the table is read back with numpy at the end.
"""

from __future__ import annotations

import io
import math
import struct
from array import array
from dataclasses import dataclass

import numpy as np
import pandas as pd

JOB_COLUMNS = (
    "job_id", "frontend", "backend", "size", "t_arrival", "t_backend_arrival", "t_backend_done", "t_response",
)  # fmt: skip
_DTYPES = {
    "job_id": np.int64, "frontend": np.int32, "backend": np.int32, "size": np.float64, "t_arrival": np.float64,
    "t_backend_arrival": np.float64, "t_backend_done": np.float64, "t_response": np.float64,
}  # fmt: skip
#: one job's row, as packed by :meth:`JobRecords.add` and read back by :meth:`JobRecords.frame`
ROW = struct.Struct("<qii5d")
ROW_DTYPE = np.dtype([(name, np.dtype(dtype).newbyteorder("<")) for name, dtype in _DTYPES.items()])
assert ROW.size == ROW_DTYPE.itemsize  # packed, in the same order, with no padding


class JobRecords:
    """One row per job whose service at the backend has ended."""

    _row = ROW
    _dtypes = _DTYPES
    _row_dtype = ROW_DTYPE

    def __init__(self):
        self._buffer = io.BytesIO()
        # Bound once: add() runs once per job.
        self._write = self._buffer.write
        self._pack = self._row.pack
        self._scanned = self._early = 0  # rows read by served_before, and how many of those were early

    def __len__(self) -> int:
        return self._buffer.tell() // self._row.size

    def add(self, job, t_done: float) -> None:
        """Record a job as its backend finishes it; its response lands ``job.return_delay`` later."""
        self._write(self._pack(job.job_id, job.frontend, job.backend, job.size, job.t_arrival,
                               job.t_backend_arrival, t_done, t_done + job.return_delay))  # fmt: skip

    def served_before(self, job_id: int) -> int:
        """How many jobs with an id below ``job_id`` have been recorded (reads only the rows added since
        the last call: ``job_id`` must not change between calls)."""
        ids = np.frombuffer(self._buffer.getbuffer(), self._row_dtype)["job_id"][self._scanned :]
        self._scanned += len(ids)
        self._early += int(np.count_nonzero(ids < job_id))
        del ids  # releases the buffer
        return self._early

    def frame(self, until: float, arrived_before: float = math.inf) -> pd.DataFrame:
        """Jobs that arrived before ``arrived_before`` whose response reached their frontend by ``until``,
        in job_id order."""
        # A view of the buffer, not a copy; each column below is copied once, already in order.
        table = np.frombuffer(self._buffer.getbuffer(), self._row_dtype)
        done = np.flatnonzero((table["t_response"] <= until) & (table["t_arrival"] < arrived_before))
        rows = done[np.argsort(table["job_id"][done], kind="stable")]
        data = {name: table[name][rows].astype(dtype, copy=False) for name, dtype in self._dtypes.items()}
        del table  # releases the buffer, so that more rows could be added
        tokens = {name: data.pop(name) for name in ("prompt", "output") if name in data}
        data["latency"] = data["t_response"] - data["t_arrival"]
        data["sojourn"] = data["t_backend_done"] - data["t_backend_arrival"]
        return pd.DataFrame(data | tokens)


class TokenJobRecords(JobRecords):
    """Job records of a token workload: each row also holds the job's prompt and output tokens."""

    _row = struct.Struct("<qii5dqq")
    _dtypes = _DTYPES | {"prompt": np.int64, "output": np.int64}
    _row_dtype = np.dtype([(name, np.dtype(dtype).newbyteorder("<")) for name, dtype in _dtypes.items()])

    def add(self, job, t_done: float) -> None:
        self._write(self._pack(job.job_id, job.frontend, job.backend, job.size, job.t_arrival,
                               job.t_backend_arrival, t_done, t_done + job.return_delay,
                               job.prompt, job.output))  # fmt: skip


@dataclass
class Measures:
    """What the summary is computed from: the jobs of the table that arrived after the warm-up
    (with a drain, every one that arrived in the window), and the responses landed by the horizon."""

    latency: np.ndarray  # of measured jobs (arrived at or after warm-up, in the jobs table)
    sojourn: np.ndarray
    completed: int  # responses landed by the horizon
    work_landed: float  # work of the jobs whose response landed in [warm-up, horizon]
    jobs_landed: int

    @classmethod
    def of_jobs(cls, jobs: pd.DataFrame, warmup: float, horizon: float) -> Measures:
        measured = jobs["t_arrival"].to_numpy() >= warmup
        t_response = jobs["t_response"].to_numpy()
        landed = (t_response >= warmup) & (t_response <= horizon)
        return cls(
            latency=jobs["latency"].to_numpy()[measured],
            sojourn=jobs["sojourn"].to_numpy()[measured],
            completed=int((t_response <= horizon).sum()),
            work_landed=float(jobs["size"].to_numpy()[landed].sum()),
            jobs_landed=int(landed.sum()),
        )


class LatencyRecords:
    """Instead of job records (``simulation.record_jobs = false``): only what the summary needs.

    8 bytes per measured job for each of latency and sojourn, instead of a row
    of 10 columns: long job-size scaling runs keep their memory for the time series.
    """

    def __init__(self, warmup: float, horizon: float, until: float):
        """Measure the jobs arriving in [``warmup``, ``horizon``) whose response lands by ``until`` (the
        horizon, or infinity when the run drains); throughput counts responses landed by ``horizon``."""
        self.warmup, self.horizon, self.until = warmup, horizon, until
        self.latency = array("d")
        self.sojourn = array("d")
        self.recorded = self.completed = self.jobs_landed = self.early = 0
        self.work_landed = 0.0

    def __len__(self) -> int:
        return self.recorded

    def served_before(self, job_id: int) -> int:
        """How many jobs that arrived before the horizon (ids below ``job_id``) have been recorded."""
        return self.early

    def add(self, job, t_done: float) -> None:
        t_response = t_done + job.return_delay
        self.recorded += 1
        if t_response <= self.horizon:
            self.completed += 1
            if t_response >= self.warmup:
                self.work_landed += job.size
                self.jobs_landed += 1
        elif t_response > self.until or job.t_arrival >= self.horizon:  # (late arrivals: in the drain)
            return
        self.early += 1
        if job.t_arrival >= self.warmup:
            self.latency.append(t_response - job.t_arrival)
            self.sojourn.append(t_done - job.t_backend_arrival)

    def frame(self, until: float, arrived_before: float = math.inf) -> pd.DataFrame:
        """No job records were kept: an empty table with the usual columns."""
        return pd.DataFrame({name: np.empty(0, _DTYPES[name]) for name in JOB_COLUMNS} | {
            "latency": np.empty(0), "sojourn": np.empty(0)})  # fmt: skip

    def measures(self) -> Measures:
        return Measures(
            latency=np.frombuffer(self.latency, dtype=np.float64),
            sojourn=np.frombuffer(self.sojourn, dtype=np.float64),
            completed=self.completed,
            work_landed=self.work_landed,
            jobs_landed=self.jobs_landed,
        )


class SampleRecords:
    """The time series: every backend's load, job count and cumulative work served every ``sample_interval``."""

    def __init__(self):
        self.t = array("d")
        self.backend = array("i")
        self.jobs = array("q")
        self.served = array("d")  # cumulative work served by the backend since t = 0

    def add(self, t: float, backends) -> None:
        for b in backends:
            self.t.append(t)
            self.backend.append(b.index)
            self.jobs.append(b.jobs)
            self.served.append(b.work_served(t))

    def frame(self, mean_size: float) -> pd.DataFrame:
        jobs = np.frombuffer(self.jobs, dtype=np.int64)
        return pd.DataFrame(
            {
                "t": np.frombuffer(self.t, dtype=np.float64),
                "backend": np.frombuffer(self.backend, dtype=np.int32),
                "load": jobs * mean_size,
                "jobs": jobs,
                "served": np.frombuffer(self.served, dtype=np.float64),
            }
        )


class SplitRecords:
    """A router's split p_ij over the usable edges, every ``sample_interval``."""

    def __init__(self, connect: np.ndarray):
        self.frontend, self.backend = np.nonzero(connect)
        self.t: list[float] = []
        self.prob: list[np.ndarray] = []

    def add(self, t: float, split: np.ndarray) -> None:
        self.t.append(t)
        self.prob.append(np.asarray(split, dtype=float)[self.frontend, self.backend])

    def frame(self) -> pd.DataFrame:
        k = len(self.frontend)
        return pd.DataFrame(
            {
                "t": np.repeat(np.asarray(self.t, dtype=float), k),
                "frontend": np.tile(self.frontend.astype(np.int32), len(self.t)),
                "backend": np.tile(self.backend.astype(np.int32), len(self.t)),
                "prob": np.concatenate(self.prob) if self.prob else np.empty(0),
            }
        )
