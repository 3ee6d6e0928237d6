"""Reading what a report needs: the run and its targets from the ledger, each target's whole
output from its blobs (bounded concurrency; a blob that cannot be read falls back to the ledger's
tail with a note on the page).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from azrun.redact import redact
from azrun.report._data import ReportData, build_report_data

if TYPE_CHECKING:
    from azrun.ledger import Ledger, TargetRecord

__all__ = ["MAX_OUTPUT_BYTES", "READ_CONCURRENCY", "BlobReader", "acollect_report", "run_mask"]

#: Per stream and target: a report stays an attachment, not an archive. Longer output is cut at
#: the end with a marker naming the full size (``azrun logs`` has the rest).
MAX_OUTPUT_BYTES = 256 * 1024
READ_CONCURRENCY = 16

#: ``await reader(url)`` -> the blob's bytes (the caller's OutputStore, already authorised).
BlobReader = Callable[[str], Awaitable[bytes]]


def _cut(data: bytes, total: int) -> str:
    text = data[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    if total > MAX_OUTPUT_BYTES:
        text += f"\n[... {total - MAX_OUTPUT_BYTES} more bytes: `azrun logs` shows the whole output]"
    return text


async def _read_target(reader: BlobReader, rec: TargetRecord, gate: asyncio.Semaphore) -> tuple[str, str] | None:
    if not rec.stdout_url and not rec.stderr_url:
        return None
    async with gate:
        try:
            out = await reader(rec.stdout_url) if rec.stdout_url else b""
            err = await reader(rec.stderr_url) if rec.stderr_url else b""
        except Exception:  # any storage failure: the page says so and shows the ledger's tail
            return None
    return _cut(out, len(out)), _cut(err, len(err))


def run_mask(options: Mapping[str, Any]) -> Callable[[str], str]:
    """The mask of everything a run's report shows: the secret patterns (:func:`redact`) and the
    run's own protected values, by their salted fingerprints (as ``azrun logs`` masks them)."""
    from azrun.redact import FINGERPRINTS_KEY, SecretFingerprints

    prints = SecretFingerprints.from_dict(options.get(FINGERPRINTS_KEY))
    if not prints:
        return redact

    def mask(text: str) -> str:
        masker = prints.masker()
        data = masker.feed(text.encode("utf-8"))
        return redact((data + masker.flush()).decode("utf-8", errors="replace"))

    return mask


async def acollect_report(
    ledger: Ledger,
    run_id: str,
    *,
    reader: BlobReader | None = None,
    mask: Callable[[str], str] | None = None,
    throttle: Mapping[str, Any] | None = None,
    driver: Mapping[str, Any] | None = None,
) -> ReportData:
    """The report of ``run_id`` (ledger + blobs). Without a ``reader`` only the ledger's tails show.

    ``mask`` defaults to :func:`run_mask` of the run (secret patterns and the run's protected
    values); the throttle figures and the driver default to what the run recorded at its end.
    """
    run = ledger.require_run(run_id)
    mask = mask or run_mask(run.options)
    records = ledger.targets(run.id)
    outputs: dict[str, tuple[str, str]] = {}
    if reader is not None:
        gate = asyncio.Semaphore(READ_CONCURRENCY)
        texts = await asyncio.gather(*(_read_target(reader, rec, gate) for rec in records))
        outputs = {rec.target.resource_id: text for rec, text in zip(records, texts, strict=True) if text is not None}
    stats = dict(run.options.get("runStats") or {})
    stats.update(throttle or {})
    if driver is None:
        driver = {"host": run.host, "pid": run.pid, **dict(run.options.get("driver") or {})}
    waves = {rec.target.resource_id: f"wave {wave}" for rec in records if (wave := getattr(rec, "wave", 0))}
    return build_report_data(
        run, records, outputs=outputs, mask=mask, throttle=stats or None, driver=driver, waves=waves or None,
    )
