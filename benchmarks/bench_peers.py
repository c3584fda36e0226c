"""Peer benchmarks: lbsim against a heapq loop, SimPy and Ciw on the same queues, in CPU seconds.

Two families of systems, each simulated by every contender that can express it:

- **M/M/1 FIFO** at load 0.9 (arrival rate 0.9, service rate 1): a minimal
  heapq event loop, SimPy with callbacks on timeouts (no process),
  SimPy with a process per customer and a ``Resource`` (its textbook
  style), Ciw, and ``lbsim.simulate``.
- **N exponential servers behind one dispatcher** (N = 16 and 128, load
  0.9, FIFO at each server, exact counts: no network delay, ``instant``
  telemetry): JSQ and power of two, in Ciw and lbsim. Ciw's
  ``routing.LoadBalancing`` joins the server with the fewest customers
  present (waiting plus in service), lbsim's ``jsq`` rule; Ciw's
  ``JoinShortestQueue`` counts only waiting customers, a different rule.
  Power of two in Ciw is :class:`CiwPowerOfTwo` below: two distinct servers
  sampled, the one with fewer customers present joined, ties at random,
  as lbsim's ``power_of_d`` with ``d = 2``.

Every contender simulates the same horizon ``T = customers / arrival rate``,
discards customers arriving before ``T / 10`` and keeps the sojourn (arrival
at the server to departure) of the others that leave by ``T``. Each pair
is checked to agree on the mean sojourn: the difference of the two means
within the 95% interval of a difference, ``|m1 - m2| <= sqrt(h1^2 + h2^2)``
with ``h`` the half-widths of batch-means intervals (20 batches,
``lbsim.stats.batch_means_ci``; Law & Kelton, *Simulation Modeling and
Analysis*, 3rd ed., section 9.5.3). The M/M/1 means are also set against
``1 / (mu - lambda) = 10``.

Speed is CPU time (``time.process_time``: other processes on a shared
machine do not count) of building and running the model and collecting the
sojourns, with the wall time beside it. Every round runs all contenders of
a system one after the other, in an order rotated from round to round, in
this one process; the report gives each one's median CPU seconds per
million customers and the median over rounds of the per-round ratio
``contender CPU / lbsim CPU`` (how many times slower than lbsim, paired
within a round so drifting machine speed cancels). All contenders of a
system run the same horizon; the systems with more servers run fewer
customers (Ciw's cost per customer grows with its number of nodes).

    pip install -e ".[bench]"                      # Ciw
    python benchmarks/bench_peers.py               # a few minutes
    python benchmarks/bench_peers.py --quick       # a smoke run, seconds
"""

from __future__ import annotations

import argparse
import collections
import heapq
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

import lbsim
from lbsim.stats import CI, batch_means_ci

try:
    import ciw
except ImportError:  # the bench extra is not installed: only the contenders without Ciw run
    ciw = None

LOAD = 0.9
WARMUP_SHARE = 0.1


@dataclass(frozen=True)
class System:
    """A queueing system: ``servers`` exponential servers of rate 1, FIFO, one Poisson stream."""

    name: str
    servers: int
    policy: str  # "single", "jsq" or "power_of_two"
    customers: int  # arrivals expected over the horizon (every contender runs the same horizon)
    load: float = LOAD

    @property
    def arrival_rate(self) -> float:
        return self.load * self.servers


@dataclass
class Timing:
    """One contender's run: sojourns kept and the CPU and wall seconds it took."""

    sojourns: np.ndarray
    cpu: float
    wall: float


#: a contender: (system, customers, seed) -> sojourns of the kept customers
Contender = Callable[[System, int, int], np.ndarray]


def _window(system: System, customers: int) -> tuple[float, float]:
    horizon = customers / system.arrival_rate
    return horizon, WARMUP_SHARE * horizon


# --------------------------------------------------------------------------
# M/M/1 contenders


def heapq_mm1(system: System, customers: int, seed: int) -> np.ndarray:
    """The smallest honest event loop: a heap of (time, kind) and ``random.expovariate``."""
    horizon, warmup = _window(system, customers)
    rnd = random.Random(seed)
    lam = system.arrival_rate
    events = [(rnd.expovariate(lam), 0)]
    waiting: collections.deque[float] = collections.deque()  # arrival times, head in service
    sojourns = []
    while True:
        t, kind = heapq.heappop(events)
        if t >= horizon:
            break
        if kind == 0:  # arrival
            heapq.heappush(events, (t + rnd.expovariate(lam), 0))
            waiting.append(t)
            if len(waiting) == 1:
                heapq.heappush(events, (t + rnd.expovariate(1.0), 1))
        else:  # departure
            arrived = waiting.popleft()
            if arrived >= warmup:
                sojourns.append(t - arrived)
            if waiting:
                heapq.heappush(events, (t + rnd.expovariate(1.0), 1))
    return np.array(sojourns)


def simpy_callbacks_mm1(system: System, customers: int, seed: int) -> np.ndarray:
    """SimPy with the lightest style it offers: callbacks on timeouts, no process."""
    horizon, warmup = _window(system, customers)
    rnd = random.Random(seed)
    lam = system.arrival_rate
    env = simpy.Environment()
    waiting: collections.deque[float] = collections.deque()
    sojourns = []

    def arrival(_event: simpy.Event) -> None:
        waiting.append(env.now)
        if len(waiting) == 1:
            env.timeout(rnd.expovariate(1.0)).callbacks.append(departure)  # type: ignore[union-attr]
        env.timeout(rnd.expovariate(lam)).callbacks.append(arrival)  # type: ignore[union-attr]

    def departure(_event: simpy.Event) -> None:
        arrived = waiting.popleft()
        if arrived >= warmup:
            sojourns.append(env.now - arrived)
        if waiting:
            env.timeout(rnd.expovariate(1.0)).callbacks.append(departure)  # type: ignore[union-attr]

    env.timeout(rnd.expovariate(lam)).callbacks.append(arrival)  # type: ignore[union-attr]
    env.run(until=horizon)
    return np.array(sojourns)


def simpy_processes_mm1(system: System, customers: int, seed: int) -> np.ndarray:
    """SimPy in its textbook style: a source process and a process per customer on a ``Resource``."""
    horizon, warmup = _window(system, customers)
    rnd = random.Random(seed)
    lam = system.arrival_rate
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=1)
    sojourns = []

    def customer(service: float):
        arrived = env.now
        with server.request() as request:
            yield request
            yield env.timeout(service)
        if arrived >= warmup:
            sojourns.append(env.now - arrived)

    def source():
        while True:
            yield env.timeout(rnd.expovariate(lam))
            env.process(customer(rnd.expovariate(1.0)))

    env.process(source())
    env.run(until=horizon)
    return np.array(sojourns)


# --------------------------------------------------------------------------
# Ciw


if ciw is not None:

    class CiwPowerOfTwo(ciw.routing.NodeRouting):
        """Power of two choices as a Ciw node router: sample two distinct destinations, join the
        one with fewer customers present (waiting plus in service), ties at random.

        Mitzenmacher, "The power of two choices in randomized load balancing", IEEE TPDS 12(10),
        2001. Ciw's random streams are Python's ``random`` seeded by ``ciw.seed``, so this draws
        from ``random`` too.
        """

        def __init__(self, destinations: list[int]):
            self.destinations = destinations

        def next_node(self, ind):
            nodes = self.simulation.nodes
            a, b = random.sample(self.destinations, 2)
            na, nb = nodes[a].number_of_individuals, nodes[b].number_of_individuals
            if na == nb:
                return nodes[a if random.random() < 0.5 else b]
            return nodes[a if na < nb else b]


def ciw_system(system: System, customers: int, seed: int) -> np.ndarray:
    """Ciw: one node for an M/M/1; for N servers a dispatcher node (zero service, infinite
    servers) routing to N single-server nodes by ``LoadBalancing`` or :class:`CiwPowerOfTwo`."""
    horizon, warmup = _window(system, customers)
    ciw.seed(seed)
    if system.policy == "single":
        network = ciw.create_network(
            arrival_distributions=[ciw.dists.Exponential(system.arrival_rate)],
            service_distributions=[ciw.dists.Exponential(1.0)],
            number_of_servers=[1],
        )
    else:
        servers = list(range(2, system.servers + 2))  # Ciw numbers nodes from 1; node 1 dispatches
        dispatch = ciw.routing.LoadBalancing(servers) if system.policy == "jsq" else CiwPowerOfTwo(servers)
        network = ciw.create_network(
            arrival_distributions=[ciw.dists.Exponential(system.arrival_rate)] + [None] * system.servers,
            service_distributions=[ciw.dists.Deterministic(0.0)] + [ciw.dists.Exponential(1.0)] * system.servers,
            number_of_servers=[float("inf")] + [1] * system.servers,
            routing=ciw.routing.NetworkRouting(routers=[dispatch] + [ciw.routing.Leave() for _ in servers]),
        )
    simulation = ciw.Simulation(network)
    simulation.simulate_until_max_time(horizon)
    at_servers = 1 if system.policy == "single" else 2
    records = [
        r
        for r in simulation.get_all_records()
        if r.node >= at_servers and r.arrival_date >= warmup and r.exit_date <= horizon
    ]
    records.sort(key=lambda r: r.arrival_date)
    return np.array([r.exit_date - r.arrival_date for r in records])


# --------------------------------------------------------------------------
# lbsim


def lbsim_scenario(system: System, customers: int, seed: int) -> lbsim.Scenario:
    """The same system as an lbsim scenario: one frontend, ``servers`` FIFO backends of constant
    rate 1, no delay, exact (``instant``) counts."""
    horizon, warmup = _window(system, customers)
    router = {"single": {"name": "random"}, "jsq": {"name": "jsq"}, "power_of_two": {"name": "power_of_d", "d": 2}}
    return lbsim.Scenario.from_dict(
        {
            "name": f"peers_{system.name}",
            "simulation": {
                "horizon": horizon, "warmup": warmup, "seed": seed, "sample_interval": horizon / 10,
                "drain": False,  # the peers stop at the horizon too: the same customers are timed
            },
            "frontends": [{"rate": system.arrival_rate}],
            "backends": [{"discipline": "fifo", "service": {"kind": "constant", "c": 1.0}}] * system.servers,
            "network": {"delay": 0.0, "telemetry": "instant"},
            "router": router[system.policy],
        }
    )


def lbsim_system(system: System, customers: int, seed: int) -> np.ndarray:
    """``lbsim.simulate`` end to end: build the scenario, run, the jobs table, its sojourns."""
    scenario = lbsim_scenario(system, customers, seed)
    jobs = lbsim.simulate(scenario).jobs
    _, warmup = _window(system, customers)
    kept = jobs[jobs["t_arrival"] >= warmup].sort_values("t_arrival")
    return kept["sojourn"].to_numpy()


# --------------------------------------------------------------------------
# the benchmark


def timed(contender: Contender, system: System, customers: int, seed: int) -> Timing:
    cpu, wall = time.process_time(), time.perf_counter()
    sojourns = contender(system, customers, seed)
    return Timing(sojourns, time.process_time() - cpu, time.perf_counter() - wall)


def agree(a: CI, b: CI) -> bool:
    """The two means differ by less than the 95% half-width of their difference."""
    return abs(a.estimate - b.estimate) <= math.hypot(a.half_width, b.half_width)


def bench_system(
    system: System, contenders: dict[str, Contender], scale: float, rounds: int, seed: int
) -> tuple[list[str], bool]:
    """Run every contender ``rounds`` times interleaved: the report's lines, and whether all pairs agreed."""
    names = list(contenders)
    customers = max(1000, round(system.customers * scale))
    for name in names:  # untimed: first-call costs (imports, caches) are nobody's per-customer cost
        contenders[name](system, 1000, seed)
    runs: dict[str, list[Timing]] = {name: [] for name in names}
    for k in range(rounds):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            runs[name].append(timed(contenders[name], system, customers, seed + k))

    def per_million(name: str, attr: str) -> list[float]:
        return [getattr(t, attr) / len(t.sojourns) * 1e6 for t in runs[name]]

    ref = per_million("lbsim", "cpu")
    lines = [f"{system.name}: {system.servers} server(s), load {system.load}, {rounds} interleaved rounds"]
    lines.append(
        f"  {'contender':<18} {'customers':>9} {'CPU s/M':>9} {'wall s/M':>9} {'x lbsim CPU':>12}"
        f" {'per round':>15}  mean sojourn (95% CI)"
    )
    cis = {name: batch_means_ci(runs[name][0].sojourns) for name in names}
    figures = []  # the README's row: CPU and wall seconds per million customers, ratio to lbsim's CPU
    for name in names:
        cpu = per_million(name, "cpu")
        ratios = [c / r for c, r in zip(cpu, ref)]
        ratio = "" if name == "lbsim" else f", {statistics.median(ratios):.2f}x lbsim"
        wall = statistics.median(per_million(name, "wall"))
        figures.append(f"{name} {statistics.median(cpu):.3g} CPU s/M ({wall:.3g} wall){ratio}")
        ci = cis[name]
        lines.append(
            f"  {name:<18} {len(runs[name][0].sojourns):>9} {statistics.median(cpu):>9.2f}"
            f" {statistics.median(per_million(name, 'wall')):>9.2f} {statistics.median(ratios):>12.2f}"
            f" {min(ratios):>7.2f}-{max(ratios):<7.2f}  {ci.estimate:.3f} ± {ci.half_width:.3f}"
        )
    if system.policy == "single":
        theory = 1.0 / (1.0 - system.arrival_rate)
        off = [n for n in names if theory not in cis[n]]
        where = f"outside the CI of {off}" if off else "in every CI"
        lines.append(f"  theory 1/(mu - lambda) = {theory:g}: {where}")
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    disagree = [f"{a}/{b}" for a, b in pairs if not agree(cis[a], cis[b])]
    lines.append(f"  pairs agreeing on the mean sojourn: {len(pairs) - len(disagree)} of {len(pairs)}")
    if disagree:
        lines.append(f"  DISAGREE: {', '.join(disagree)}")
    agreement = "agree on the mean sojourn" if not disagree else f"DISAGREE: {', '.join(disagree)}"
    row = f"| {system.name}, load {system.load}, {customers:,} customers | {'; '.join(figures)}; {agreement} |"
    return lines, not disagree, row


#: run lengths: Ciw's cost per customer grows with the number of nodes, so the larger systems run shorter
MM1 = System("M/M/1", 1, "single", customers=100_000)
LOAD_BALANCING = [
    System("JSQ, 16 servers", 16, "jsq", customers=50_000),
    System("power of two, 16 servers", 16, "power_of_two", customers=50_000),
    System("JSQ, 128 servers", 128, "jsq", customers=20_000),
    System("power of two, 128 servers", 128, "power_of_two", customers=20_000),
]


def run(scale: float = 1.0, rounds: int = 3, seed: int = 1) -> tuple[list[str], dict[str, bool], list[str]]:
    """The whole benchmark, run lengths times ``scale``: report lines, per system whether all pairs
    agreed, and the README's table rows."""
    mm1: dict[str, Contender] = {
        "heapq loop": heapq_mm1,
        "SimPy callbacks": simpy_callbacks_mm1,
        "SimPy processes": simpy_processes_mm1,
        "lbsim": lbsim_system,
    }
    if ciw is not None:
        mm1["Ciw"] = ciw_system
    lines, ok, row = bench_system(MM1, mm1, scale, rounds, seed)
    agreed, rows = {MM1.name: ok}, [row]
    if ciw is None:
        lines.append("Ciw not installed (pip install -e '.[bench]'): the load-balancing systems are skipped")
        return lines, agreed, rows
    for system in LOAD_BALANCING:
        peers: dict[str, Contender] = {"Ciw": ciw_system, "lbsim": lbsim_system}
        more, agreed[system.name], row = bench_system(system, peers, scale, rounds, seed)
        lines += more
        rows.append(row)
    return lines, agreed, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="run lengths times this (100k customers for M/M/1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="smoke run: a tenth of the run lengths, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.scale, args.rounds = 0.1, 1
    lines, _, rows = run(args.scale, args.rounds)
    print("\n".join(lines))
    print("\nREADME rows (CPU s/M: CPU seconds per million customers, median of the rounds):")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
