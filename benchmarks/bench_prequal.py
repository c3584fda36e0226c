"""Prequal against jsq on scenarios/bench.toml: jobs per CPU second, interleaved in one process, median ratio.

    python benchmarks/bench_prequal.py [horizon] [rounds]
    python benchmarks/bench_prequal.py instructions   # CPU instructions per job under callgrind (valgrind)
    python benchmarks/bench_prequal.py floor [horizon] [rounds]   # what the probes alone cost

``floor`` runs, interleaved with jsq and prequal, jsq that also sends
``r_probe`` = 3 probes per query (to the next three of its neighbours in
turn) and ignores their replies: delivered by an event each (two kernel
events per probe, as Prequal's before its inbox), or put in an inbox whose
landed replies are dropped at each query (one event per probe, as Prequal
now does). They cost what carrying Prequal's probes costs with none of its
own work (pool, selection, removal, reuse budget, RIF quantile, sojourn by
RIF), so their ratios to jsq bound from above what any Prequal built on
these kernel events can reach. A third jsq schedules 3 events per query
that do nothing at all: the kernel's own price of one event per probe.

CPU time (``time.process_time``) of the whole ``lbsim.simulate`` call; the
two routers alternate within each round, so a busy machine slows both alike,
and the figure is the median of the per-round ratios. Instruction counts do
not move with the machine's load: each is the difference between runs of
two horizons, so start-up and imports cancel out.
"""

from __future__ import annotations

import statistics
import sys
import time
from heapq import heappop, heappush
from pathlib import Path

from simpy.core import NORMAL

import lbsim

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "bench.toml"

INSTRUCTIONS_CHILD = """
import sys
import lbsim
scenario = lbsim.load_scenario(sys.argv[1], ["simulation.horizon=" + sys.argv[3], "simulation.warmup=1"], warn=False)
lbsim.simulate(scenario, router=sys.argv[2])
"""


def _window(horizon: float) -> list[str]:
    """The run's horizon, and bench.toml's 50 s warm-up shortened to fit a short one."""
    return [f"simulation.horizon={horizon}", f"simulation.warmup={min(50.0, horizon / 2)}"]


def bench_cpu(horizon: float, rounds: int) -> None:
    scenario = lbsim.load_scenario(SCENARIO, _window(horizon), warn=False)
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"jsq": [], "prequal": []}
    warm = lbsim.load_scenario(SCENARIO, ["simulation.horizon=2", "simulation.warmup=1"], warn=False)
    for router in rates:  # imports and first-call costs, outside the rounds
        lbsim.simulate(warm, router=router)
    for r in range(rounds):
        per = {}
        for router in ("jsq", "prequal") if r % 2 == 0 else ("prequal", "jsq"):
            started = time.process_time()
            result = lbsim.simulate(scenario, router=router)
            per[router] = result.counts["jobs_arrived"] / (time.process_time() - started)
            rates[router].append(per[router])
        ratios.append(per["prequal"] / per["jsq"])
        print(f"round {r}: jsq {per['jsq']:,.0f} prequal {per['prequal']:,.0f} jobs/CPU s, ratio {ratios[-1]:.3f}")
    print(f"median: jsq {statistics.median(rates['jsq']):,.0f} prequal {statistics.median(rates['prequal']):,.0f}"
          f" jobs/CPU s, ratio {statistics.median(ratios):.3f}")  # fmt: skip


def _probing_jsq(name: str, delivery: str) -> str:
    """Register a jsq that sends 3 probes per query whose replies nobody reads; return its name.

    ``delivery``: ``"event"`` (each reply an event when it lands), ``"inbox"``
    (replies queued, the landed ones dropped at each query) or ``"nothing"``
    (not a probe: an event at the backend's distance that does nothing, the
    kernel's price of one event).
    """
    from lbsim.events import Wakeup
    from lbsim.routers import ROUTERS, ProbeInbox, register
    from lbsim.routers.jsq import JSQ

    if name in ROUTERS:
        return name

    def nothing(_event) -> None:
        pass

    class ProbingJSQ(JSQ):
        def __init__(self, params, ctx):
            super().__init__(params, ctx)
            self.turn = 0
            self.deliver = (lambda reply: None) if delivery == "event" else ProbeInbox()
            if delivery == "nothing":
                self.env = ctx.probe.__self__.env  # type: ignore[attr-defined]  # (the engine's kernel: benchmark only)
                self.delays = ctx.delay.tolist()  # plain floats, as the engine's own

        def route(self, frontend, job, view):
            deliver, now = self.deliver, self.ctx.now()
            if delivery == "inbox":  # drop the replies that have landed (unread), as Prequal takes them
                while deliver and deliver[0][0] <= now:
                    heappop(deliver)
            candidates = self.neighbours[frontend]
            n = len(candidates)
            for k in range(3):
                backend = candidates[(self.turn + k) % n]
                if delivery == "nothing":
                    env = self.env
                    t = now + self.delays[frontend][backend]
                    heappush(env._queue, (t, NORMAL, next(env._eid), Wakeup(nothing)))
                else:
                    self.ctx.probe(frontend, backend, deliver)
            self.turn += 1
            return super().route(frontend, job, view)

    ProbingJSQ.name = name
    register(ProbingJSQ)
    return name


def bench_floor(horizon: float, rounds: int) -> None:
    scenario = lbsim.load_scenario(SCENARIO, _window(horizon), warn=False)
    routers = [
        "jsq",
        _probing_jsq("jsq+empty events", "nothing"),
        _probing_jsq("jsq+probes(1 event)", "inbox"),
        _probing_jsq("jsq+probes(2 events)", "event"),
        "prequal",
    ]
    rates: dict[str, list[float]] = {r: [] for r in routers}
    warm = lbsim.load_scenario(SCENARIO, ["simulation.horizon=2", "simulation.warmup=1"], warn=False)
    for router in routers:  # imports and first-call costs, outside the rounds
        lbsim.simulate(warm, router=router)
    for r in range(rounds):
        for router in routers if r % 2 == 0 else routers[::-1]:
            started = time.process_time()
            result = lbsim.simulate(scenario, router=router)
            rates[router].append(result.counts["jobs_arrived"] / (time.process_time() - started))
    for router in routers:
        ratios = [a / b for a, b in zip(rates[router], rates["jsq"])]
        print(f"{router:>22}: {statistics.median(rates[router]):>9,.0f} jobs/CPU s, ratio to jsq"
              f" {statistics.median(ratios):.3f} (per-round {min(ratios):.3f}-{max(ratios):.3f})")  # fmt: skip


def bench_instructions(short: float = 2.0, long: float = 7.0) -> None:
    """Instructions per job: (count(long) - count(short)) / (jobs(long) - jobs(short)), for jsq and prequal."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _callgrind

    if not _callgrind.available():
        print("instructions: valgrind not installed (apt-get install valgrind)")
        return

    def jobs(horizon: float) -> int:
        sc = lbsim.load_scenario(SCENARIO, [f"simulation.horizon={horizon}", "simulation.warmup=1"], warn=False)
        return int(lbsim.simulate(sc, router="jsq").counts["jobs_arrived"])

    extra = jobs(long) - jobs(short)  # arrivals do not depend on the router
    per_job = {}
    for router in ("jsq", "prequal"):
        counts = [_callgrind.instructions(INSTRUCTIONS_CHILD, str(SCENARIO), router, str(h)) for h in (short, long)]
        per_job[router] = (counts[1] - counts[0]) / extra
        print(f"{router:>8}: {per_job[router]:>10,.0f} instructions/job (horizon {long} minus {short}: {extra} jobs)")
    print(f"   ratio: {per_job['jsq'] / per_job['prequal']:.3f} (jobs per instruction, prequal / jsq)")


def main() -> None:
    if sys.argv[1:2] == ["instructions"]:
        bench_instructions()
        return
    if sys.argv[1:2] == ["floor"]:
        bench_floor(float(sys.argv[2]) if len(sys.argv) > 2 else 100.0, int(sys.argv[3]) if len(sys.argv) > 3 else 3)
        return
    horizon = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    bench_cpu(horizon, rounds)


if __name__ == "__main__":
    main()
