"""The fleet's I/O-free parts: budgets, the poll schedule, the poll scheduler, the scrubber,
and rebuilding a spec for resume."""

from __future__ import annotations

import asyncio
import time

import pytest

from azrun.errors import ConfigError
from azrun.fleet import (
    Budget,
    DurationStats,
    FleetOptions,
    PollPolicy,
    PollScheduler,
    Scrubber,
    check_same_spec,
    first_delay,
    next_delay,
    respec,
)
from azrun.models import RunSpec
from azrun.throttle import TokenBucket


# -- budgets -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "n", "concurrency", "errors"),
    [
        ("50", 1000, 50, 50),
        (7, 3, 7, 7),
        ("10%", 15, 2, 1),  # concurrency rounds up, errors round down
        ("10%", 5, 1, 0),
        ("100%", 40, 40, 40),
        ("0", 10, 1, 0),  # concurrency is at least 1
        ("0%", 10, 1, 0),
        ("33.3%", 100, 34, 33),
    ],
)
def test_budget_resolution(raw: str | int, n: int, concurrency: int, errors: int) -> None:
    b = Budget.parse(raw)
    assert b.concurrency(n) == concurrency
    assert b.errors(n) == errors


@pytest.mark.parametrize("raw", ["", "-1", "ten", "5.5", "101%", "%", "5 %x"])
def test_budget_rejects_garbage(raw: str) -> None:
    with pytest.raises(ConfigError):
        Budget.parse(raw, what="--max-errors")


def test_options_round_trip_through_the_ledger_dict() -> None:
    opts = FleetOptions.make(max_concurrency="20%", max_errors=3, canary=1, keep=True, watchdog_grace_s=5)
    again = FleetOptions.from_dict(opts.to_dict())
    assert again == opts
    assert str(again.max_concurrency) == "20%" and str(again.max_errors) == "3"
    assert opts.grace_s(3600) == 5
    assert FleetOptions().grace_s(100) == 60 and FleetOptions().grace_s(7200) == 720


# -- poll schedule ---------------------------------------------------------------------------------
def test_first_poll_waits_for_what_finished_targets_took() -> None:
    policy, stats = PollPolicy(min_first_s=1, initial_guess_s=2), DurationStats(min_count=3)
    assert first_delay(policy, stats) == 2  # nothing learned: the guess
    for d in (5.0, 5.2, 5.4, 5.5, 5.6):
        stats.add(d)
    assert first_delay(policy, stats) == 5.6  # the p90: most targets are done by then
    for d in (60.0, 70.0, 80.0):
        stats.add(d)
    assert first_delay(policy, stats) == pytest.approx(1.5 * 5.6)  # a long tail is capped at 1.5 x median
    assert first_delay(PollPolicy(min_first_s=10), stats) == 10


def test_next_poll_backs_off_but_stays_a_fraction_of_the_time_run() -> None:
    policy = PollPolicy(backoff=1.5, growing_backoff=2.0, elapsed_fraction=0.15, max_interval_s=20)
    stats = DurationStats()
    # early on, the backoff decides; growing output backs off faster
    assert next_delay(policy, stats, prev_interval=2, elapsed=40, growing=False) == pytest.approx(3.0)
    assert next_delay(policy, stats, prev_interval=2, elapsed=40, growing=True) == pytest.approx(4.0)
    # a target found running after 6 s is looked at again within 15 % of that, not 1.5 x 6 s later
    assert next_delay(policy, stats, prev_interval=6, elapsed=6, growing=False) == pytest.approx(0.9)
    assert next_delay(policy, stats, prev_interval=6, elapsed=6, growing=True) == pytest.approx(1.8)
    assert next_delay(policy, stats, prev_interval=19, elapsed=600, growing=True) == 20  # capped
    assert next_delay(policy, stats, prev_interval=0.1, elapsed=0.1, growing=False) == 0.5  # floor


def test_next_poll_is_pulled_in_around_the_learned_p90_and_the_deadline() -> None:
    policy, stats = PollPolicy(min_interval_s=0.5), DurationStats(min_count=1)
    for d in (50.0, 52.0, 54.0, 55.0, 56.0):
        stats.add(d)
    # 40 s in, p90 at 56: the next poll comes just after it, not 1.5 x 20 s or 6 s later
    assert next_delay(policy, stats, prev_interval=20, elapsed=52.0, growing=False) == pytest.approx(4.5)
    # never past the watchdog deadline
    assert next_delay(policy, stats, prev_interval=8, elapsed=90, growing=False, until_deadline=2) == pytest.approx(2.05)


async def test_scheduler_polls_in_due_order_and_respects_reschedules() -> None:
    seen: list[str] = []
    sched: PollScheduler[str] = PollScheduler(lambda k: _record(seen, k), max_inflight=4)
    sched.start()
    try:
        sched.schedule("late", 0.15)
        sched.schedule("early", 0.05)
        sched.schedule("moved", 0.01)
        sched.schedule("moved", 0.10)  # replaces the earlier schedule: polled once, after "early"
        sched.schedule("dropped", 0.02)
        sched.discard("dropped")
        await asyncio.sleep(0.3)
    finally:
        await sched.aclose()
    assert seen == ["early", "moved", "late"]
    assert sched.polls == 3 and len(sched) == 0


async def test_scheduler_never_exceeds_its_read_budget() -> None:
    stamps: list[float] = []

    async def poll(key: int) -> None:
        stamps.append(time.monotonic())

    budget = TokenBucket(5, 50.0, name="test")  # burst 5, then 50/s
    sched: PollScheduler[int] = PollScheduler(poll, budget=budget, max_inflight=100)
    sched.start()
    t0 = time.monotonic()
    try:
        for i in range(25):
            sched.schedule(i, 0)
        while len(stamps) < 25 and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
    finally:
        await sched.aclose()
    assert len(stamps) == 25
    # 5 at once, then 20 more at 50/s: at least 0.4 s, and no 1 s window holds more than 5 + 50
    assert stamps[-1] - t0 >= 0.35


async def _record(seen: list[str], key: str) -> None:
    seen.append(key)


async def test_scheduler_survives_a_failing_poll() -> None:
    calls: list[int] = []

    async def poll(key: int) -> None:
        calls.append(key)
        if key == 1:
            raise RuntimeError("boom")

    sched: PollScheduler[int] = PollScheduler(poll)
    sched.start()
    try:
        sched.schedule(1, 0)
        sched.schedule(2, 0.02)
        deadline = time.monotonic() + 5  # generous: a loaded 2-core CI box is slow
        while len(calls) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await sched.aclose()
    assert calls == [1, 2]


# -- secrets -----------------------------------------------------------------------------------------
def test_scrubber_replaces_every_secret_longest_first() -> None:
    scrub = Scrubber(["hunter2", "hunter2-long", "", None, "ab"])  # too-short values are ignored
    assert scrub("pw=hunter2-long and hunter2") == "pw=*** and ***"
    assert scrub("ab stays") == "ab stays"
    assert "hunter" not in repr(scrub)
    assert not Scrubber([])


def test_respec_needs_the_script_and_the_protected_values_again() -> None:
    spec = RunSpec(script="echo $TOKEN", parameters=(("a", "1"),), protected_parameters=(("TOKEN", "s3cr3t"),),
                   timeout_s=99, script_name="x.sh")
    public = spec.public_dict()
    assert "s3cr3t" not in repr(public)
    with pytest.raises(ConfigError, match="needs its script"):
        respec(public, run_id="r")
    with pytest.raises(ConfigError, match="TOKEN"):
        respec(public, run_id="r", script="echo $TOKEN")
    with pytest.raises(ConfigError, match="script differs"):
        respec(public, run_id="r", script="echo other", protected={"TOKEN": "s3cr3t"})
    again = respec(public, run_id="r", script="echo $TOKEN", protected={"TOKEN": "s3cr3t"})
    assert again == spec
    with pytest.raises(ConfigError, match="protected parameters differ"):
        check_same_spec(public, RunSpec(script="echo $TOKEN"), run_id="r")


def test_respec_of_a_command_id_run_needs_nothing() -> None:
    spec = RunSpec(command_id="RunShellScript", timeout_s=60)
    assert respec(spec.public_dict(), run_id="r").command_id == "RunShellScript"


def test_import_azrun_stays_cheap_and_exports_the_library_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, azrun\n"
        "assert not [m for m in sys.modules if m.startswith(('azure', 'aiohttp', 'azrun.fleet'))]\n"
        "assert azrun.Fleet.__module__ == 'azrun.fleet._fleet' and azrun.RunSpec.__name__ == 'RunSpec'\n"
        "assert set(azrun.__all__) == set(azrun._LAZY) | {'__version__', 'run'}\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
