"""What a run report shows, as plain data: built from the ledger's records and the output text,
with no I/O of its own (the collector in :mod:`azrun.report._collect` does the reading).

Times in the report are seconds from the run's creation, so the page needs no clock and no time
zone; absolute times are given once, in the header, as ISO 8601 UTC.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from azrun.models import TargetState

if TYPE_CHECKING:
    from azrun.ledger import RunRecord, TargetRecord

__all__ = ["STATE_ORDER", "ReportData", "ReportTarget", "build_report_data"]

#: The order states are counted and coloured in (final states first, then the live ones).
STATE_ORDER: tuple[str, ...] = tuple(
    s.value
    for s in (
        TargetState.SUCCEEDED,
        TargetState.FAILED,
        TargetState.TIMED_OUT,
        TargetState.CANCELED,
        TargetState.UNDELIVERABLE,
        TargetState.SKIPPED,
        TargetState.RUNNING,
        TargetState.DISPATCHING,
        TargetState.PENDING,
    )
)


@dataclass(frozen=True, slots=True)
class ReportTarget:
    """One target's row and bar. Offsets are seconds after the run was created (None: never)."""

    key: str
    name: str
    subscription: str
    resource_group: str
    wave: str
    os: str
    state: str
    exit_code: int | None
    message: str
    dispatched: float | None
    started: float | None
    ended: float | None
    duration: float | None
    arm_requests: int
    stdout: str
    stderr: str
    output_note: str


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows; :meth:`to_json` is what is embedded in it."""

    run_id: str
    status: str
    created: str
    ended: str | None
    span_s: float
    spec: dict[str, Any]
    selector: dict[str, Any] | None
    options: dict[str, Any]
    driver: dict[str, Any]
    counts: dict[str, int]
    throttle: dict[str, Any]
    targets: tuple[ReportTarget, ...] = field(default_factory=tuple)
    generator: str = "azrun"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [asdict(t) for t in self.targets]
        return data


def _offset(moment: datetime | None, origin: datetime) -> float | None:
    if moment is None:
        return None
    return round(max(0.0, (moment - origin).total_seconds()), 3)


def _key(resource_id: str) -> str:
    return hashlib.sha256(resource_id.lower().encode()).hexdigest()[:12]


def _ordered(
    dispatched: float | None, started: float | None, ended: float | None
) -> tuple[float | None, float | None, float | None]:
    """Dispatch <= start <= end on one axis. Start and end come from the VM agent's clock (second
    resolution on some agents), dispatch from ours: a start that reads before its dispatch is
    shown at the dispatch, never as time travel."""
    if dispatched is not None and started is not None and started < dispatched:
        started = dispatched
    floor = started if started is not None else dispatched
    if floor is not None and ended is not None and ended < floor:
        ended = floor
    return dispatched, started, ended


def _duration(rec: TargetRecord) -> float | None:
    begin = rec.started_at or rec.dispatched_at
    if begin is None or rec.ended_at is None:
        return None
    return round(max(0.0, (rec.ended_at - begin).total_seconds()), 3)


def _note(rec: TargetRecord, has_blob_text: bool) -> str:
    if has_blob_text:
        return ""
    if rec.stdout_url or rec.stderr_url:
        return "output blobs could not be read; showing the last lines the run recorded"
    return "no output storage for this run; showing the last lines the run recorded (at most 4 KB)"


def build_report_data(
    run: RunRecord,
    records: Sequence[TargetRecord],
    *,
    outputs: Mapping[str, tuple[str, str]] | None = None,
    mask: Callable[[str], str] = lambda text: text,
    throttle: Mapping[str, Any] | None = None,
    driver: Mapping[str, Any] | None = None,
    waves: Mapping[str, str] | None = None,
) -> ReportData:
    """The report of ``run``.

    Args:
        run: the ledger's run record.
        records: the ledger's target records of that run.
        outputs: full (stdout, stderr) text per target resource id (lower-cased), read from the
            blobs; a target missing here shows the ledger's tail instead, with a note.
        mask: applied to every text that came from a script or a message (secrets masked as in
            ``azrun logs``).
        throttle: the run's throttle figures (ARM requests, 429s, seconds waited for buckets).
        driver: who ran it (identity, host, pid).
        waves: wave name per target resource id (lower-cased), when the run had waves.
    """
    outputs = {k.lower(): v for k, v in (outputs or {}).items()}
    waves = {k.lower(): v for k, v in (waves or {}).items()}
    origin = run.created
    targets: list[ReportTarget] = []
    last = run.ended or run.updated
    for rec in sorted(records, key=lambda r: r.seq):
        rid = rec.target.resource_id
        sub, rg = rec.target.subscription_id, rec.target.resource_group.lower()
        text = outputs.get(rid.lower())
        stdout, stderr = text if text is not None else (rec.stdout_tail, rec.stderr_tail)
        for moment in (rec.ended_at, rec.started_at, rec.dispatched_at):
            if moment is not None and moment > last:
                last = moment
        dispatched, started, ended = _ordered(
            _offset(rec.dispatched_at, origin), _offset(rec.started_at, origin), _offset(rec.ended_at, origin)
        )
        targets.append(
            ReportTarget(
                key=_key(rid),
                name=rec.target.name,
                subscription=sub,
                resource_group=rg,
                wave=waves.get(rid.lower(), ""),
                os=rec.target.os,
                state=rec.state.value,
                exit_code=rec.exit_code,
                message=mask(rec.message),
                dispatched=dispatched,
                started=started,
                ended=ended,
                duration=_duration(rec),
                arm_requests=rec.arm_requests,
                stdout=mask(stdout),
                stderr=mask(stderr),
                output_note=_note(rec, text is not None),
            )
        )
    counts = _counts(t.state for t in targets)
    return ReportData(
        run_id=run.id,
        status=run.status,
        created=run.created.isoformat(),
        ended=run.ended.isoformat() if run.ended else None,
        span_s=round(max(1.0, (last - origin).total_seconds()), 3),
        spec=_mask_spec(run.spec, mask),
        selector=run.selector,
        options=_public_options(run.options),
        driver=dict(driver or {"host": run.host, "pid": run.pid}),
        counts=counts,
        throttle=_throttle(throttle, targets),
        targets=tuple(targets),
    )


def _public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The run's options minus what a page must not carry: the protected values' salted
    fingerprints (they let a reader test guesses offline) and what is shown elsewhere."""
    from azrun.redact import FINGERPRINTS_KEY

    return {k: v for k, v in options.items() if k not in (FINGERPRINTS_KEY, "runStats", "driver")}


def _counts(states: Iterable[str]) -> dict[str, int]:
    found = Counter(states)
    ordered = {s: found[s] for s in STATE_ORDER if found.get(s)}
    ordered.update({s: n for s, n in sorted(found.items()) if s not in ordered})
    return ordered


def _mask_spec(spec: Mapping[str, Any], mask: Callable[[str], str]) -> dict[str, Any]:
    """The spec as the ledger keeps it (protected values are never there), text masked again."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return mask(value)
        if isinstance(value, Mapping):
            return {str(k): walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return dict(walk(dict(spec)))


def _throttle(given: Mapping[str, Any] | None, targets: Sequence[ReportTarget]) -> dict[str, Any]:
    figures: dict[str, Any] = {"armRequests": sum(t.arm_requests for t in targets)}
    if given:
        figures.update(given)
    return figures
