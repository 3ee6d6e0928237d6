"""Fixtures of the durable-engine tests: the local scheduler (the SDK's in-memory backend plus
redelivery) in the test process, and a local Azure of several subscriptions with storage."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azrun.durable._local import LocalScheduler


@pytest.fixture
def scheduler() -> Iterator[LocalScheduler]:
    sched = LocalScheduler(port=0)
    sched.start()
    try:
        yield sched
    finally:
        sched.stop(grace=0)
