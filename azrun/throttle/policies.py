"""azure-core pipeline policies: the throttle in front of every attempt, and a retry policy that
leaves 429s the throttle has scheduled to the throttle.

* :class:`ThrottlePolicy` / :class:`AsyncThrottlePolicy`: per-retry policies (every attempt
  pays); they share :class:`ThrottlePolicyBase` (classify, observe) and differ only in waiting.
* :class:`ThrottleAwareRetryPolicy` / :class:`AsyncThrottleAwareRetryPolicy`: azure-core's retry
  policy minus its sleep for 429s the throttle has already scheduled (the next attempt waits in
  the throttle instead), plus a separate budget of throttle retries. Every decision is in
  :class:`ThrottleAwareRetryBase` (as azure-core's own ``RetryPolicyBase`` holds every decision
  under ``RetryPolicy`` and ``AsyncRetryPolicy``); the twins differ only in ``sleep``.

Choices where the docs are silent: azure-core's RetryPolicy stays the only retry loop. After a
429 the throttle has paused for, the throttle policy sets ``request.context[SCHEDULED_KEY]``;
the retry policy then skips its own sleep (the retry waits in :class:`ThrottlePolicy` until the
pause ends, so it is never sent before ``Retry-After`` and nothing sleeps twice). Every 429,
attributed or not, is charged to ``retry_throttled`` (default 30) instead of
``retry_total``/``retry_status``, so a 429 storm ends in success; for a 429 no bucket can be
blamed for, azure-core still sleeps ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy, HTTPPolicy, RetryPolicy

# azure-core's shared base of RetryPolicy and AsyncRetryPolicy (not re-exported by azure-core).
from azure.core.pipeline.policies._retry import RetryPolicyBase

from azrun.throttle.limits import RequestClass, classify
from azrun.throttle.registry import InFlight, Throttle

__all__ = [
    "SCHEDULED_KEY", "AsyncThrottleAwareRetryPolicy", "AsyncThrottlePolicy", "ThrottleAwareRetryBase",
    "ThrottleAwareRetryPolicy", "ThrottlePolicy", "ThrottlePolicyBase", "aclient_kwargs", "client_kwargs",
]

#: ``request.context`` key set when the throttle has scheduled the next attempt after a 429.
SCHEDULED_KEY = "azrun_throttle_scheduled"
_THROTTLED_RETRIES = 30


def _response_body(response: Any) -> str | None:
    try:
        return str(response.text())
    except Exception:  # body not read (streamed) or undecodable: headers must do
        return None


class ThrottlePolicyBase:
    """What both throttle policies do around an attempt, without I/O."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__()
        self.throttle = throttle

    def on_attempt(self, request: PipelineRequest[Any]) -> RequestClass:
        """Forget the last attempt's scheduling; classify this one."""
        request.context.pop(SCHEDULED_KEY, None)
        return classify(request.http_request.method, request.http_request.url)

    def on_answer(self, sent: InFlight, request: PipelineRequest[Any], response: Any) -> None:
        """Hand the answer to the throttle; mark the retry as scheduled if a 429 paused a bucket."""
        body = _response_body(response) if response.status_code == 429 else None
        if self.throttle.observe(sent.rc, response.status_code, response.headers, body, sent=sent):
            request.context[SCHEDULED_KEY] = True


class ThrottlePolicy(ThrottlePolicyBase, HTTPPolicy[Any, Any]):
    """Takes a token from every applicable bucket before each attempt; learns from each response."""

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if not self.throttle.enabled:
            return self.next.send(request)
        sent = self.throttle.begin(self.on_attempt(request))
        try:
            response = self.next.send(request)
        except BaseException:
            self.throttle.abandon(sent)
            raise
        self.on_answer(sent, request, response.http_response)
        return response


class AsyncThrottlePolicy(ThrottlePolicyBase, AsyncHTTPPolicy[Any, Any]):
    """Async twin of :class:`ThrottlePolicy`; cancelling a waiting request gives its tokens back."""

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if not self.throttle.enabled:
            return await self.next.send(request)
        sent = await self.throttle.abegin(self.on_attempt(request))
        try:
            response = await self.next.send(request)
        except BaseException:
            self.throttle.abandon(sent)
            raise
        self.on_answer(sent, request, response.http_response)
        return response


def _is_429(response: object) -> bool:
    return isinstance(response, PipelineResponse) and response.http_response.status_code == 429


class ThrottleAwareRetryBase(RetryPolicyBase):
    """azure-core's retry decisions, except: every 429 is charged to a separate budget of
    ``retry_throttled`` (default 30, also per call) retries, and after a 429 the throttle has
    paused for there is no sleep (the next attempt waits in the throttle until ``Retry-After``).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.throttled_retries: int = kwargs.pop("retry_throttled", _THROTTLED_RETRIES)
        super().__init__(**kwargs)

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["throttled"] = options.pop("retry_throttled", self.throttled_retries)
        return settings

    def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
        """Count every 429 against ``retry_throttled``, not ``retry_total``/``retry_status``.

        azure-core's ``increment`` decrements total and status; we add one to each first so a
        429 storm cannot exhaust the budget meant for real errors (attributed or not: a bare
        ``TooManyRequests`` is still throttling). Returns False when out of budget.
        """
        if error is None and _is_429(response) and settings["total"] > 0:  # retry_total=0 still means none
            settings["throttled"] -= 1
            settings["total"] += 1
            settings["status"] += 1
            if settings["throttled"] < 0:
                return False
        return bool(super().increment(settings, response, error))

    @staticmethod
    def scheduled(response: object) -> bool:
        """The throttle will hold the next attempt until the 429's ``Retry-After``: do not sleep."""
        return isinstance(response, PipelineResponse) and bool(response.context.get(SCHEDULED_KEY))


class ThrottleAwareRetryPolicy(ThrottleAwareRetryBase, RetryPolicy[Any, Any]):
    """azure-core's RetryPolicy with the decisions of :class:`ThrottleAwareRetryBase`."""

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        if not self.scheduled(response):
            super().sleep(settings, transport, response)


class AsyncThrottleAwareRetryPolicy(ThrottleAwareRetryBase, AsyncRetryPolicy[Any, Any]):
    """Async twin of :class:`ThrottleAwareRetryPolicy`."""

    async def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        if not self.scheduled(response):
            await super().sleep(settings, transport, response)


def client_kwargs(throttle: Throttle | None, **retry_kwargs: Any) -> dict[str, Any]:
    """Constructor kwargs for a sync management client; ``{}`` when throttling is off."""
    if throttle is None or not throttle.enabled:
        return {}
    return {"per_retry_policies": [ThrottlePolicy(throttle)], "retry_policy": ThrottleAwareRetryPolicy(**retry_kwargs)}


def aclient_kwargs(throttle: Throttle | None, **retry_kwargs: Any) -> dict[str, Any]:
    """Constructor kwargs for an aio management client; ``{}`` when throttling is off."""
    if throttle is None or not throttle.enabled:
        return {}
    return {
        "per_retry_policies": [AsyncThrottlePolicy(throttle)],
        "retry_policy": AsyncThrottleAwareRetryPolicy(**retry_kwargs),
    }
