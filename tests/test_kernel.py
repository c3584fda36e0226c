"""The run loop of :class:`lbsim.engine.kernel.Kernel` against SimPy's own ``run(until=...)``."""

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st
from simpy.core import NORMAL, URGENT

from lbsim.engine.kernel import Kernel
from lbsim.events import Wakeup
from lbsim.jobs import Job

# (delay, urgent?, follow-up delay or None): an event that may schedule another when it fires
schedules = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0]),
        st.booleans(),
        st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.0])),
    ),
    max_size=30,
)


def trace(env, schedule, horizon, run):
    """Schedule the events, run to the horizon, and return what fired when (and ``now``)."""
    fired = []

    def make(k, follow):
        def callback(event):
            fired.append((k, env.now))
            if follow is not None:
                env.schedule(Wakeup(make(k + 1000, None)), NORMAL, follow)

        return callback

    for k, (delay, urgent, follow) in enumerate(schedule):
        env.schedule(Wakeup(make(k, follow)), URGENT if urgent else NORMAL, delay)

    def process(env):  # a SimPy process too: the kernel is a full environment
        while True:
            yield env.timeout(1.5)
            fired.append(("process", env.now))

    env.process(process(env))
    run(env, horizon)
    return fired, env.now


@settings(max_examples=200, deadline=None)
@given(schedule=schedules, horizon=st.sampled_from([1.0, 2.0, 3.0, 4.5]))
def test_run_until_fires_the_same_events_in_the_same_order_as_simpy(schedule, horizon):
    ours = trace(Kernel(), schedule, horizon, lambda env, t: env.run_until(t))
    simpys = trace(simpy.Environment(), schedule, horizon, lambda env, t: env.run(until=t))
    assert ours == simpys


def test_a_failed_event_crashes_the_run_as_in_simpy():
    env = Kernel()
    event = env.event()
    event.fail(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        env.run_until(1.0)


def test_a_defused_failure_does_not():
    env = Kernel()
    event = env.event()
    event.fail(ValueError("boom"))
    event.defused = True
    env.run_until(1.0)
    assert env.now == 1.0


def test_a_job_is_its_own_event_on_the_network():
    """The engine schedules a job itself for its network hops (lbsim.jobs): the kernel takes it as an event,
    in time order with the others, detaches its callbacks before calling them (so that it can be scheduled
    again, as the response is), and the job carries nothing else of the event afterwards."""
    env = Kernel()
    job = Job(7, 0, 1.0, 0.0)
    fired = []

    def lands(event):
        fired.append(("lands", event.job_id, env.now, event.callbacks))
        event.callbacks = (back,)
        env.schedule(event, NORMAL, 0.5)

    def back(event):
        fired.append(("back", event.job_id, env.now))

    job.callbacks = (lands,)
    env.schedule(job, NORMAL, 1.0)
    env.schedule(Wakeup(lambda e: fired.append(("other", None, env.now))), NORMAL, 1.25)
    env.run_until(5.0)
    assert fired == [("lands", 7, 1.0, None), ("other", None, 1.25), ("back", 7, 1.5)]
    assert job.callbacks is None and not hasattr(job, "__dict__")
