"""azrun.throttle.registry: which buckets a request takes from, how response headers reconcile
them, learned policies, and what a 429 pauses."""

from __future__ import annotations

import json

import pytest
from _throttle_support import ARM, ARM_429, COMPUTE_429, RUN_PUT, SUB, FakeClock, names
from azure.core.utils import case_insensitive_dict

from azrun.throttle import RequestClass, Throttle, ThrottleLimits, TokenBucket, classify, client_kwargs


def test_buckets_for_a_run_command_put() -> None:
    throttle = Throttle(clock=FakeClock())
    got = [b.name for b in throttle.buckets_for(classify("PUT", RUN_PUT))]
    assert got == [f"arm/{SUB}/writes", f"compute/{SUB}/update-vm", "compute/rg-web/virtualmachines/vm-001/update-vm"]
    per_vm = throttle.buckets_for(classify("PUT", RUN_PUT))[2]
    assert per_vm.capacity == 12 and per_vm.refill_per_s == pytest.approx(4 / 60)


def test_headers_reconcile_arm_and_compute_buckets() -> None:
    throttle = Throttle(clock=FakeClock())
    rc = classify("PUT", RUN_PUT)
    headers = case_insensitive_dict({
        "x-ms-ratelimit-remaining-subscription-writes": "7",
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;3, Microsoft.Compute/VMUpdateSubscription;1000",
    })
    assert throttle.observe(rc, 200, headers) is False
    got = names(throttle)
    assert got[f"arm/{SUB}/writes"].level == 7
    assert got["compute/rg-web/virtualmachines/vm-001/update-vm"].level == 3
    assert got[f"compute/{SUB}/update-vm"].level == 1000


def test_legacy_and_unknown_policies_get_learned_buckets() -> None:
    throttle = Throttle(clock=FakeClock())
    rc = classify("PUT", RUN_PUT)
    throttle.observe(rc, 200, case_insensitive_dict({
        "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/PutVM3Min;239,Microsoft.Compute/PutVM30Min;1199,"
                                             "Microsoft.Compute/Mystery;5"}))
    got = names(throttle)
    three = got[f"learned/{SUB}/microsoft.compute/putvm3min"]
    assert (three.capacity, three.level, three.refill_per_s) == (240, 239, pytest.approx(240 / 180))
    assert got[f"learned/{SUB}/microsoft.compute/putvm30min"].refill_per_s == pytest.approx(1200 / 1800)
    mystery = got[f"learned/{SUB}/microsoft.compute/mystery"]
    assert (mystery.capacity, mystery.level) == (12, 5)  # at least learned_min_capacity
    # the same classification (other VM too) now also takes from them; a GET does not
    other_vm = classify("PUT", RUN_PUT.replace("vm-001", "vm-002"))
    assert {b.name for b in throttle.buckets_for(other_vm)} >= {three.name, mystery.name}
    assert not any("learned" in b.name for b in throttle.buckets_for(classify("GET", RUN_PUT)))
    # a later, larger count grows the learned capacity (never the level)
    throttle.observe(rc, 200, case_insensitive_dict({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/Mystery;99"}))
    assert names(throttle)[mystery.name].capacity == 100


def test_unknown_resource_scoped_policy_is_learned_per_target() -> None:
    throttle = Throttle(clock=FakeClock())
    throttle.observe(classify("PUT", RUN_PUT), 200,
                     case_insensitive_dict({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/NewThingResource;20"}))
    buckets = throttle.buckets_for(classify("PUT", RUN_PUT.replace("vm-001", "vm-002")))
    learned = [b for b in buckets if b.name.startswith("learned/")]
    assert len(learned) == 1 and "vm-002" in learned[0].name and learned[0].level() == 21


# -- 429 attribution ---------------------------------------------------------------------------
def test_arm_429_pauses_the_subscription_bucket() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock)
    rc = classify("PUT", RUN_PUT)
    assert throttle.observe(rc, 429, case_insensitive_dict({"Retry-After": "10"}), ARM_429)
    arm = names(throttle)[f"arm/{SUB}/writes"]
    assert (arm.paused_for_s, arm.throttled_429) == (10, 1)
    # a sibling on another VM waits too (the whole bucket is paused)
    sibling = throttle.buckets_for(classify("PUT", RUN_PUT.replace("vm-001", "vm-777")))
    assert max(b.reserve() for b in sibling) == pytest.approx(10)


def test_compute_429_pauses_the_named_policy_bucket() -> None:
    throttle = Throttle(clock=FakeClock())
    rc = classify("GET", f"{ARM}/providers/Microsoft.Compute/virtualMachines")
    headers = case_insensitive_dict({"Retry-After": "1200", "x-ms-ratelimit-remaining-subscription-reads": "240",
                                     "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/HighCostGet;0"})
    assert throttle.observe(rc, 429, headers, COMPUTE_429)
    got = names(throttle)
    assert got[f"compute/{SUB}/high-cost-get"].paused_for_s == 1200
    assert got[f"arm/{SUB}/reads"].paused_for_s == 0


def test_429_attributed_by_zero_header_and_default_pause() -> None:
    throttle = Throttle(clock=FakeClock())
    headers = case_insensitive_dict({"x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;0"})
    assert throttle.observe(classify("PUT", RUN_PUT), 429, headers, b"not json")
    per_vm = names(throttle)["compute/rg-web/virtualmachines/vm-001/update-vm"]
    assert per_vm.paused_for_s == pytest.approx(15)  # no Retry-After: one refill interval (4/min)


def test_429_with_arm_header_at_zero_is_arm() -> None:
    throttle = Throttle(clock=FakeClock())
    headers = case_insensitive_dict({"Retry-After": "3", "x-ms-ratelimit-remaining-subscription-writes": "0"})
    assert throttle.observe(classify("PUT", RUN_PUT), 429, headers)
    assert names(throttle)[f"arm/{SUB}/writes"].paused_for_s == 3


def test_unattributable_429_pauses_nothing() -> None:
    throttle = Throttle(clock=FakeClock())
    body = json.dumps({"error": {"code": "RetryableErrorDueToAnotherOperation", "message": "busy"}})
    rc = classify("PUT", f"{ARM}/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/ip")
    assert throttle.observe(rc, 429, case_insensitive_dict({"Retry-After": "5"}), body) is False
    metrics = throttle.metrics()
    assert metrics.unattributed_429 == 1 and metrics.throttled_429 == 1
    assert all(b.paused_for_s == 0 for b in metrics.buckets)




def test_disabled_throttle_is_inert() -> None:
    throttle = Throttle(ThrottleLimits(enabled=False))
    assert client_kwargs(throttle) == {} and client_kwargs(None) == {}
    assert throttle.acquire(classify("PUT", RUN_PUT)) == 0.0
    assert throttle.observe(classify("PUT", RUN_PUT), 429, case_insensitive_dict({}), ARM_429) is False
    assert throttle.metrics().buckets == ()


# -- per-VM buckets do not pile up ---------------------------------------------------------------
def run_target(throttle: Throttle, clock: FakeClock, vm: int) -> None:
    """A run command's requests for one VM (PUT, GET, DELETE), each answered at once."""
    url = RUN_PUT.replace("vm-001", f"vm-{vm:05d}")
    for method, header in (("PUT", "UpdateVMResource;11"), ("GET", "LowCostGetResource;35"),
                           ("DELETE", "UpdateVMResource;10")):
        rc = classify(method, url)
        sent = throttle.begin(rc)
        throttle.observe(rc, 200, case_insensitive_dict(
            {"x-ms-ratelimit-remaining-resource": f"Microsoft.Compute/{header}"}), sent=sent)
    clock.now += 0.25


def per_vm(throttle: Throttle) -> list[str]:
    return [b.name for b in throttle.metrics().buckets if "/virtualmachines/" in b.name]


def test_full_idle_per_vm_buckets_are_dropped_as_the_run_goes() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    for vm in range(5000):
        run_target(throttle, clock, vm)
    alive = per_vm(throttle)
    # 4 targets/s; a used per-VM bucket is full again after 30 s: ~120 VMs' buckets are in use
    assert 100 < len(alive) <= 2048 < 2 * 5000
    assert throttle.metrics().retired_buckets + len(alive) == 2 * 5000
    assert "compute/rg-web/virtualmachines/vm-04999/update-vm" in alive  # the latest are kept


def test_pruning_keeps_busy_buckets_and_the_metrics_of_dropped_ones() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    busy = classify("PUT", RUN_PUT)
    sent = throttle.begin(busy)  # in flight: never dropped
    throttle.observe(classify("PUT", RUN_PUT.replace("vm-001", "vm-002")), 429, case_insensitive_dict(
        {"Retry-After": "1", "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/UpdateVMResource;0"}), "{}")
    clock.now += 600  # everything refills
    assert throttle.prune() == 1
    alive = per_vm(throttle)
    assert alive == ["compute/rg-web/virtualmachines/vm-001/update-vm"]
    metrics = throttle.metrics()
    assert metrics.retired_429 == 1 and metrics.throttled_429 == 1  # vm-002's 429 outlives its bucket
    throttle.observe(busy, 200, case_insensitive_dict({}), sent=sent)
    assert throttle.prune() == 1 and per_vm(throttle) == []


def test_a_bucket_pruned_while_a_request_looked_it_up_is_replaced() -> None:
    class Racing(Throttle):
        stale: list[TokenBucket] | None = None

        def buckets_for(self, rc: RequestClass) -> list[TokenBucket]:
            if self.stale is not None:
                stale, self.stale = self.stale, None
                return stale
            return super().buckets_for(rc)

    clock = FakeClock()
    throttle = Racing(clock=clock, sleep=clock.sleep)
    rc = classify("PUT", RUN_PUT)
    throttle.stale = throttle.buckets_for(rc)  # looked up ...
    assert throttle.prune() == 1  # ... then another thread dropped the idle per-VM bucket
    sent = throttle.begin(rc)
    assert not any(b.retired for b in sent.buckets) and len(sent.buckets) == 3
    assert names(throttle)["compute/rg-web/virtualmachines/vm-001/update-vm"].level == 11  # the new one paid


def test_subscription_levels_hand_over_to_another_process() -> None:
    """What a durable worker hands down with a shard: the subscription's own buckets (ARM per kind,
    Compute per group, never per VM), and the next process's buckets lowered to them + refill."""
    clock = FakeClock()
    mine, theirs = Throttle(clock=clock), Throttle(clock=clock)
    for b in mine.buckets_for(classify("PUT", RUN_PUT)):
        b.reserve(min(50, b.capacity))
    levels = mine.subscription_levels(SUB.upper())
    assert set(levels) == {"arm/writes", "sub/update-vm"}
    assert levels["arm/writes"] == 150 and levels["sub/update-vm"] == 1450
    theirs.lower_subscription(SUB, levels, elapsed_s=1.0)
    got = {b.name: b.level() for b in theirs.buckets_for(classify("PUT", RUN_PUT))}
    assert got[f"arm/{SUB}/writes"] == pytest.approx(150 + 10)  # + 1 s of refill (10/s)
    assert got[f"compute/{SUB}/update-vm"] == pytest.approx(1450 + 500 / 60)
    theirs.lower_subscription(SUB, {"arm/writes": 1000.0}, elapsed_s=0.0)  # never raised
    assert theirs.buckets_for(classify("PUT", RUN_PUT))[0].level() == pytest.approx(160)
