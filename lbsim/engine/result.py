"""The outcome of one run: tidy tables, counters, a summary, and writing them out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..files import write_json, write_parquet, write_toml
from ..outputs import lbsim_version, output_directory

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
    #: the router's parameters with every default filled in (provenance, in the summary)
    router_params: dict[str, Any] = field(default_factory=dict, repr=False)
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
            router_params=sim.router.params.model_dump(mode="json"),
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
            "lbsim_version": lbsim_version(),
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
            "router_params": self.router_params,
            "seed": self.seed,
            "lbsim_version": lbsim_version(),
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
            "offered_load": offered_load(self.scenario),
            "wall_seconds": round(self.wall_seconds, 6),
            "jobs_per_second": round(self.counts["jobs_arrived"] / self.wall_seconds, 1)
            if self.wall_seconds > 0
            else nan,
            **self.engine_figures,
        }
        self._summary = summary
        return summary

    def resolved_scenario(self) -> dict[str, Any]:
        """What ``scenario.toml`` holds: the scenario run, every default filled in, the router it ran.

        ``Scenario.from_dict`` of it runs the same simulation (with ``seed``).
        """
        data = self.scenario.to_dict()
        data["simulation"]["seed"] = self.seed
        if self.router:  # the router it ran, which simulate(router=...) may have chosen over the scenario's
            data["router"] = {"name": self.router, **self.router_params}
        return data

    def write(self, out: str | Path, *, overrides: Sequence[str] = (), force: bool = False) -> Path:
        """Write the run's tables, ``summary.json`` and ``scenario.toml`` into ``out``, whole or not at all.

        Everything goes into a fresh temporary sibling that is moved into
        place at the end (:func:`lbsim.outputs.output_directory`): a non-empty
        ``out`` is refused unless ``force`` replaces it whole. ``overrides``
        (the ``--set`` strings the scenario was loaded with) are recorded in
        ``summary.json``; ``scenario.toml`` is the resolved scenario, every
        default filled in and every override applied.
        """
        with output_directory(out, force) as tmp:
            self.write_into(tmp, overrides=overrides)
        return Path(out)

    def write_into(self, directory: Path, *, overrides: Sequence[str] = ()) -> None:
        """The files of :meth:`write`, each atomic, into an existing ``directory`` (nothing else is touched)."""
        tables = {"jobs": self.jobs, "timeseries": self.timeseries}
        if not self.scenario.simulation.record_jobs:
            del tables["jobs"]
        if len(self.routing):
            tables["routing"] = self.routing
        if len(self.steps):
            tables["steps"] = self.steps
        for name, frame in tables.items():
            write_parquet(directory / f"{name}.parquet", frame)
        write_toml(directory / "scenario.toml", self.resolved_scenario())
        write_json(directory / "summary.json", {**self.summary(), "overrides": list(overrides)})


def offered_load(scenario: Any, start: float | None = None, end: float | None = None) -> float:
    """The demand offered on average over the measurement window ``[start, end]`` (work units/s).

    ``(1 / (end - start)) * sum_i lambda_i * integral_start^end m(t) m_i(t) dt`` where
    ``m`` is ``simulation.rate_schedule`` and ``m_i`` frontend i's own
    ``rate_schedule`` (each 1 before its first breakpoint, docs/model.md
    section 1); by default the window is ``[warmup, horizon]``. A trace
    frontend offers its trace's rate (schedules do not apply to traces).
    """
    from .simulation import combine_schedules, mean_multiplier

    sim = scenario.simulation
    start = sim.warmup if start is None else start
    end = sim.horizon if end is None else end
    total = 0.0
    for frontend in scenario.frontends:
        if frontend.trace is not None:
            total += frontend.demand
            continue
        schedule = combine_schedules(sim.rate_schedule, frontend.rate_schedule)
        total += frontend.demand * mean_multiplier(schedule, start, end)
    return float(total)


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
