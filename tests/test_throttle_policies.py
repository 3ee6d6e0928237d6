"""azrun.throttle.policies: the sync policies in a real azure-core Pipeline around a counting
fake transport (time is faked), and the client kwargs that install them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from _throttle_support import ARM_429, RUN_PUT, SUB, Canned, CountingTransport, FakeClock, names
from azure.core.pipeline import Pipeline
from azure.core.rest import HttpRequest, HttpResponse
from azure.core.utils import case_insensitive_dict

from azrun.throttle import (
    Throttle,
    ThrottleAwareRetryPolicy,
    ThrottleLimits,
    ThrottlePolicy,
    classify,
    client_kwargs,
)


def test_client_kwargs_installs_policy_and_retry() -> None:
    kwargs = client_kwargs(Throttle(), retry_total=4)
    assert isinstance(kwargs["per_retry_policies"][0], ThrottlePolicy)
    assert isinstance(kwargs["retry_policy"], ThrottleAwareRetryPolicy)
    assert kwargs["retry_policy"].total_retries == 4




OK: Canned = (200, {"x-ms-ratelimit-remaining-subscription-writes": "199"}, "{}")


def run(throttle: Throttle, transport: CountingTransport, **retry: Any) -> HttpResponse:
    pipeline: Pipeline[HttpRequest, HttpResponse] = Pipeline(
        transport, policies=[ThrottleAwareRetryPolicy(**retry), ThrottlePolicy(throttle)])
    return pipeline.run(HttpRequest("PUT", RUN_PUT, json={"location": "westus"})).http_response


def test_429_retry_waits_for_retry_after_exactly_once() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, ARM_429), OK])
    assert run(throttle, transport).status_code == 200
    (t0, _), (t1, _) = transport.sent
    assert t1 - t0 == pytest.approx(2.0)  # not before Retry-After ...
    assert transport.slept == [] and clock.sleeps == [pytest.approx(2.0)]  # ... and slept once
    arm = names(throttle)[f"arm/{SUB}/writes"]
    assert (arm.throttled_429, arm.tokens_waited, arm.wait_s) == (1, 1, pytest.approx(2.0))


def test_compute_429_retry_waits_in_the_per_vm_bucket() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    headers = {"Retry-After": "17", "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;0"}
    transport = CountingTransport(clock, [(429, headers, "{}"), OK])
    assert run(throttle, transport).status_code == 200
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(17.0)
    assert transport.slept == []


def test_unattributed_429_leaves_the_sleep_to_the_retry_policy() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    body = json.dumps({"error": {"code": "RetryableErrorDueToAnotherOperation"}})
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, body), OK])
    assert run(throttle, transport).status_code == 200
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(2.0)
    assert transport.slept == [2.0] and clock.sleeps == []


def test_every_429_uses_the_throttled_budget_even_unattributed() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    bare = json.dumps({"error": {"code": "TooManyRequests", "message": "The request is being throttled."}})
    transport = CountingTransport(clock, [*[(429, {"Retry-After": "1"}, bare)] * 5, OK])
    assert run(throttle, transport).status_code == 200  # 5 > retry_status=3, still succeeds
    assert transport.slept == [1.0] * 5  # nothing to pause: azure-core sleeps Retry-After
    assert throttle.metrics().unattributed_429 == 5


def test_begin_counts_an_attempt_in_flight_until_observed_or_abandoned() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    rcs = [classify("PUT", RUN_PUT.replace("vm-001", f"vm-00{i}")) for i in range(1, 4)]
    first, second = throttle.begin(rcs[0]), throttle.begin(rcs[1])
    writes = f"arm/{SUB}/writes"
    throttle.observe(rcs[0], 200, case_insensitive_dict({"x-ms-ratelimit-remaining-subscription-writes": "150"}),
                     sent=first)
    assert names(throttle)[writes].level == pytest.approx(149)  # the server's 150, less the second on its way
    throttle.abandon(second)  # it failed without an answer: no longer on its way
    third = throttle.begin(rcs[2])
    throttle.observe(rcs[2], 200, case_insensitive_dict({"x-ms-ratelimit-remaining-subscription-writes": "140"}),
                     sent=third)
    assert names(throttle)[writes].level == pytest.approx(140)  # nothing else in flight: the server's word


def test_429_storm_uses_the_throttled_retry_budget() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    storm = [(429, {"Retry-After": "1"}, ARM_429)] * 8
    transport = CountingTransport(clock, [*storm, OK])
    assert run(throttle, transport).status_code == 200  # 8 > retry_status=3, still succeeds
    gaps = [b[0] - a[0] for a, b in zip(transport.sent, transport.sent[1:], strict=False)]
    assert gaps == pytest.approx([1.0] * 8) and transport.slept == []
    limited = CountingTransport(clock, [*storm, OK])
    assert run(throttle, limited, retry_throttled=2).status_code == 429
    assert len(limited.sent) == 3


def test_retry_total_zero_still_means_no_retries() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, ARM_429), OK])
    assert run(throttle, transport, retry_total=0).status_code == 429
    assert len(transport.sent) == 1 and transport.slept == []


def test_server_retry_after_beats_the_refill_model() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    headers = {"Retry-After": "1", "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;0"}
    transport = CountingTransport(clock, [(429, headers, "{}"), OK])
    assert run(throttle, transport).status_code == 200
    # the per-VM model refills one token per 15 s, but the server said 1 s: retry at +1 s
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(1.0)


def test_every_attempt_takes_a_token_and_headers_reconcile() -> None:
    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [
        (503, {}, ""), (200, {"x-ms-ratelimit-remaining-subscription-writes": "4",
                              "x-ms-ratelimit-remaining-resource": "Microsoft.Compute/VMUpdateResource;2"}, "{}")])
    assert run(throttle, transport, retry_backoff_factor=0).status_code == 200
    got = names(throttle)
    assert got[f"arm/{SUB}/writes"].level == pytest.approx(4)
    assert got["compute/rg-web/virtualmachines/vm-001/update-vm"].level == pytest.approx(2)
    assert got[f"compute/{SUB}/update-vm"].level == pytest.approx(1498)  # two attempts paid


def test_disabled_policy_passes_through() -> None:
    clock = FakeClock()
    throttle = Throttle(ThrottleLimits(enabled=False), clock=clock, sleep=clock.sleep)
    transport = CountingTransport(clock, [(429, {"Retry-After": "2"}, ARM_429), OK])
    assert run(throttle, transport).status_code == 200
    assert transport.slept == [2.0] and throttle.metrics().buckets == ()


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("fake-token", int(time.time()) + 3600)


def test_real_compute_client_is_throttled_per_attempt() -> None:
    from azure.mgmt.compute import ComputeManagementClient

    clock = FakeClock()
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    run_command = {"name": "azrun-1", "location": "westus", "properties": {"provisioningState": "Succeeded"}}
    transport = CountingTransport(clock, [(429, {"Retry-After": "3"}, ARM_429), (200, {}, json.dumps(run_command))])
    client = ComputeManagementClient(StaticToken(), SUB, transport=transport, **client_kwargs(throttle))
    got = client.virtual_machine_run_commands.get_by_virtual_machine("RG-Web", "vm-001", "azrun-1")
    assert got.name == "azrun-1"
    assert [m for _, m in transport.sent] == ["GET", "GET"]
    assert transport.sent[1][0] - transport.sent[0][0] == pytest.approx(3.0) and transport.slept == []
    assert names(throttle)["compute/rg-web/virtualmachines/vm-001/low-cost-get"].level == pytest.approx(36 - 2 + 3 * 12 / 60)
