"""The outcome of one run: tidy tables, counters, a summary, and writing them out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..files import write_json, write_parquet

#: summary fields that measure the machine, not the model: excluded from reproducibility checks
TIMING_FIELDS = ("wall_seconds", "jobs_per_second")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}


@dataclass
class Result:
    """``jobs`` (one row per completed job), ``timeseries`` (t, backend, load, jobs, served),
    ``routing`` (t, frontend, backend, prob; empty for routers without a split)."""

    jobs: pd.DataFrame
    timeseries: pd.DataFrame
    routing: pd.DataFrame
    scenario: Any
    router: str
    seed: int
    counts: dict[str, int]
    wall_seconds: float
    #: "complete", "job_limit" (stopped when the jobs in the system passed simulation.max_jobs_in_system)
    #: or "drain_limit" (the drain after the horizon stopped with jobs left: see counts["jobs_undrained"])
    status: str = "complete"
    #: when the run stopped: the horizon, the job limit's sample, or the end of the drain
    t_end: float = float("nan")
    measures: Any = field(default=None, repr=False)
    #: per-step statistics of llm backends (steps.parquet), empty without them
    steps: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    #: the llm backends' figures (TTFT, TPOT, energy...), added to the summary
    engine_figures: dict[str, Any] = field(default_factory=dict, repr=False)
    #: work units per second the backends served in [warm-up, horizon], jobs finished or not
    served: float = float("nan")
    _summary: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_simulation(cls, sim) -> Result:
        from .records import LatencyRecords, Measures

        drained = sim.drain_limit is not None and sim.status != "job_limit"
        at = sim.at_stop
        # with the drain: every job that arrived before the horizon and was served, not the later arrivals
        jobs = sim.records.frame(math.inf, sim.horizon) if drained else sim.records.frame(sim.t_stop)
        if isinstance(sim.records, LatencyRecords):
            measures = sim.records.measures()
        else:
            measures = Measures.of_jobs(jobs, sim.scenario.simulation.warmup, sim.t_stop)
        responding = at["recorded"] - measures.completed
        # the jobs table's rows
        in_table = sim.records.served_before(at["arrived"]) if drained else measures.completed
        counts = {
            "jobs_arrived": at["arrived"],
            "jobs_completed": measures.completed,
            "jobs_to_backends_end": at["to_backends"],
            "jobs_at_backends_end": at["at_backends"],
            "jobs_responding_end": responding,
            "jobs_in_system_end": at["to_backends"] + at["at_backends"] + responding,
            # responses landed after the horizon, in the drain; and jobs left out of the jobs table
            "jobs_drained": in_table - measures.completed,
            "jobs_undrained": at["arrived"] - in_table,
        }
        routing = sim.splits.frame() if sim.splits is not None else _empty_routing()
        jobs, steps, figures = _model_outputs(sim, jobs)
        window = sim.t_stop - sim.scenario.simulation.warmup  # (the job limit may stop it before the horizon)
        served = (sum(sim.served_end) - sum(sim.served_warmup)) / window if window > 0 else float("nan")
        return cls(
            jobs=jobs,
            timeseries=sim.samples.frame(sim.mean_size),
            routing=routing,
            scenario=sim.scenario,
            router=sim.router.name,
            seed=sim.seed,
            counts=counts,
            wall_seconds=sim.wall_seconds,
            status=sim.status,
            t_end=sim.t_end,
            measures=measures,
            steps=steps,
            engine_figures=figures,
            served=served,
        )

    @classmethod
    def from_saturated(cls, scenario: Any, seed: int, run: Any, wall_seconds: float) -> Result:
        """A saturated run (:func:`lbsim.llm.saturated.run_saturated`): its jobs, steps and figures."""
        jobs = run.jobs.rename(columns={"request_id": "job_id", "t_done": "t_backend_done"})
        jobs.insert(1, "backend", np.int32(0))
        steps = run.steps.assign(backend=np.int32(0))
        n = len(jobs)
        counts = {"jobs_arrived": n, "jobs_completed": int(jobs["t_backend_done"].notna().sum())}
        counts["jobs_in_system_end"] = n - counts["jobs_completed"]
        result = cls(
            jobs=jobs,
            timeseries=pd.DataFrame({"t": [], "backend": np.empty(0, np.int32), "load": [], "jobs": [], "served": []}),
            routing=_empty_routing(),
            scenario=scenario,
            router="",
            seed=seed,
            counts=counts,
            wall_seconds=wall_seconds,
            steps=steps,
            engine_figures=dict(run.summary),
        )
        result._summary = {
            **run.summary,  # the BF-IO protocol figures first, at the top level
            "scenario": scenario.name,
            "mode": "saturated",
            "seed": seed,
            "admission": scenario.backends[0].params.admission.name,
            **counts,
            "wall_seconds": round(wall_seconds, 6),
        }
        return result

    @property
    def warmup(self) -> float:
        return self.scenario.simulation.warmup

    def measured(self) -> pd.DataFrame:
        """Jobs that arrived after the warm-up (empty when job records were switched off)."""
        return self.jobs[self.jobs["t_arrival"] >= self.warmup]

    def summary(self) -> dict[str, Any]:
        """The figures of docs/model.md section 3, computed on jobs arriving after warm-up."""
        if self._summary is not None:
            return self._summary
        sim = self.scenario.simulation
        m = self.measures
        latency = m.latency
        stopped = self.t_end if self.status == "job_limit" else sim.horizon
        window = stopped - sim.warmup
        nan = float("nan")
        some = len(latency) > 0
        summary: dict[str, Any] = {
            "scenario": self.scenario.name,
            "router": self.router,
            "seed": self.seed,
            "job_scale": sim.job_scale,
            "horizon": sim.horizon,
            "warmup": sim.warmup,
            "status": self.status,
            "t_end": self.t_end,
            **self.counts,
            "jobs_measured": len(latency),
            "mean_latency": float(latency.mean()) if some else nan,
            **{name: float(np.quantile(latency, q)) if some else nan for name, q in QUANTILES.items()},
            "mean_sojourn": float(m.sojourn.mean()) if some else nan,
            "mean_network": float((latency - m.sojourn).mean()) if some else nan,
            "throughput": m.work_landed / window if window > 0 else nan,
            "served": self.served,
            "throughput_jobs": m.jobs_landed / window if window > 0 else nan,
            "offered_load": float(self.scenario.demand.sum()),
            "wall_seconds": round(self.wall_seconds, 6),
            "jobs_per_second": round(self.counts["jobs_arrived"] / self.wall_seconds, 1)
            if self.wall_seconds > 0
            else nan,
            **self.engine_figures,
        }
        self._summary = summary
        return summary

    def write(self, out: str | Path) -> Path:
        """Write jobs/timeseries/(routing).parquet and summary.json; each file appears whole or not at all."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tables = {"jobs": self.jobs, "timeseries": self.timeseries}
        if not self.scenario.simulation.record_jobs:
            del tables["jobs"]
        if len(self.routing):
            tables["routing"] = self.routing
        if len(self.steps):
            tables["steps"] = self.steps
        for name, frame in tables.items():
            write_parquet(out / f"{name}.parquet", frame)
        write_json(out / "summary.json", self.summary())
        return out


def _model_outputs(sim: Any, jobs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """What the backend models add: columns joined to the jobs table by job_id, the steps table, figures."""
    steps, figures = [], {}
    for model in dict.fromkeys(type(b) for b in sim.backends):  # each model once, in backend order
        out = model.fleet_outputs(
            [b for b in sim.backends if type(b) is model], sim.scenario.simulation.warmup, sim.horizon
        )
        if out.job_columns is not None and len(jobs):
            jobs = jobs.merge(out.job_columns, on="job_id", how="left", sort=False)
            for name, value in out.fill.items():  # the model's columns for jobs other backends served
                jobs[name] = jobs[name].fillna(value).astype(np.int64)
        steps += [out.tables["steps"]] if "steps" in out.tables else []
        figures.update(out.figures)
    return jobs, pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(), figures


def _empty_routing() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "t": np.empty(0),
            "frontend": np.empty(0, np.int32),
            "backend": np.empty(0, np.int32),
            "prob": np.empty(0),
        }
    )
