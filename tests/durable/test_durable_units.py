"""The durable engine's pure parts: shard planning, the run documents, the shard state."""

from __future__ import annotations

from azrun.durable import ShardState, plan_shards
from azrun.durable._docs import (
    result_from_doc,
    result_to_doc,
    spec_from_doc,
    spec_to_doc,
    target_from_doc,
    target_to_doc,
    tick_name,
)
from azrun.models import OutputRef, RunSpec, Target, TargetKind, TargetResult, TargetState


def _target(sub: str, i: int) -> Target:
    rid = f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm{i}"
    return Target(rid, f"vm{i}", TargetKind.VM, sub, "rg", "westeurope", "linux", "running",
                  tags=(("env", "x"),), vm_name=f"vm{i}", system_identity=True, user_identity_client_ids=("c1",))  # fmt: skip


def test_shards_split_concurrency_and_errors_in_proportion() -> None:
    targets = [_target("A", i) for i in range(300)] + [_target("b", i) for i in range(100)]
    shards = plan_shards("r1", targets, limit=40, max_errors=4, cap=750)
    assert [(s.subscription, s.total, s.window, s.max_errors) for s in shards] == [("a", 300, 30, 3), ("b", 100, 10, 1)]
    assert [s.instance_id for s in shards] == ["r1.s0000", "r1.s0001"]
    # at least one in flight per subscription; the window never exceeds the budget cap or the shard
    tiny = plan_shards("r2", targets, limit=1, max_errors=0, cap=750)
    assert [s.window for s in tiny] == [1, 1] and [s.max_errors for s in tiny] == [0, 0]
    capped = plan_shards("r3", targets, limit=400, max_errors=0, cap=50)
    assert [s.window for s in capped] == [50, 50]


def test_documents_round_trip() -> None:
    t = _target("s", 1)
    assert target_from_doc(target_to_doc(t)) == t
    spec = RunSpec(script="echo hi", parameters=(("A", "1"),), timeout_s=90, script_name="x.sh",
                   os_scripts=(("windows", "Write-Output hi"),))  # fmt: skip
    assert spec_from_doc(spec_to_doc(spec)) == spec
    r = TargetResult(t, TargetState.FAILED, 3, "exit code 3", "rc-id", None, None,
                     OutputRef("https://o", "https://e", 10, 2, True), "out", "err", 4)  # fmt: skip
    assert result_from_doc(result_to_doc(7, r), t) == r
    assert tick_name("r", 3, 12) == ".azrun-durable/r/results/0003/00000012.jsonl"


def test_shard_state_finishes_only_when_nothing_is_left() -> None:
    s = ShardState(run_id="r", shard=0, subscription="a", total=2, container="c", window=1, max_errors=0)
    assert not s.finished
    s.cursor, s.inflight = 2, [[1, 0.0]]
    assert not s.finished
    s.inflight, s.to_delete = [], [1]
    assert not s.finished  # the last run commands are deleted by one more tick
    s.to_delete = []
    assert s.finished
    stopped = ShardState.from_dict({**s.to_dict(), "cursor": 0, "stop_reason": "error budget exceeded", "x": 1})
    assert stopped.summary()["stop"] == "error budget exceeded"
    assert not stopped.finished  # one more tick records the undispatched targets as Skipped


def test_budget_is_handed_down_through_every_tick_of_the_subscription() -> None:
    from typing import Any

    from azrun.durable._tick import TickEnv, _hand_down_budget, _take_over_budget
    from azrun.throttle import RequestClass, Throttle, ThrottleLimits

    clock = [1000.0]

    def env(throttle: Throttle, name: str) -> TickEnv:
        nothing: Any = None
        return TickEnv(client=nothing, options=nothing, store=nothing, plan=nothing, targets=nothing,
                       tailer=nothing, name=name, now=lambda: clock[0], throttle=throttle)  # fmt: skip

    def deletes(throttle: Throttle) -> Any:
        return throttle.buckets_for(RequestClass(kind="delete", subscription="sub"))[0]

    a, b = Throttle(ThrottleLimits()), Throttle(ThrottleLimits())
    state = ShardState(run_id="r", shard=0, subscription="SUB", total=1, container="c", window=1, max_errors=0)
    # tick 1 on worker A sends 150 DELETEs; tick 2 on B, 50 more; tick 3 back on A
    _take_over_budget(env(a, "A"), state)
    deletes(a).reserve(150)
    _hand_down_budget(env(a, "A"), state)
    clock[0] += 1.0
    _take_over_budget(env(b, "B"), state)
    assert 55 <= deletes(b).level() <= 65  # 200 - 150 + 10 refilled: not a cold, full 200
    deletes(b).reserve(50)
    _hand_down_budget(env(b, "B"), state)
    clock[0] += 1.0
    _take_over_budget(env(a, "A"), state)
    # A's own bucket knew only its 150; handed down, it also knows B's 50: the whole history
    assert deletes(a).level() <= 25, deletes(a).level()


def test_waves_lay_out_one_shard_per_subscription_per_wave() -> None:
    from azrun.durable._plan import layout, wave_error_shares
    from azrun.fleet import WavePlan

    targets = [_target("a", i) for i in range(6)] + [_target("b", i) for i in range(4)]
    plan = WavePlan.parse("1,50%,100%", max_errors="1")
    laid = layout("r", targets, plan.assign(targets), limit=10, max_errors=2, cap=750,
                  wave_budgets=[plan.wave_budget(n) for n in (1, 4, 5)])  # fmt: skip
    # the same plan arithmetic as a one-process run: wave 1 = 1 target, wave 2 to 5, wave 3 the rest
    assert [w.size for w in laid.waves] == [1, 4, 5] and [w.budget for w in laid.waves] == [1, 1, 1]
    assert [(s.wave, s.subscription, s.total) for s in laid.shards] == [(0, "a", 1), (1, "a", 4), (2, "a", 1), (2, "b", 4)]
    assert [s.shard for s in laid.shards] == [0, 1, 2, 3] and laid.waves[2].shards == [2, 3]
    assert [len(t) for t in laid.targets] == [1, 4, 1, 4]
    assert sum(s.window for s in laid.shards if s.wave == 2) <= 10
    # each wave's shards share what is left of the run's budget and the wave's own, the smaller
    assert wave_error_shares([1, 4], left=10, wave_budget=None) == [2, 8]
    assert wave_error_shares([1, 4], left=10, wave_budget=0) == [0, 0]
    assert wave_error_shares([5], left=None, wave_budget=None) == [1_000_000]
