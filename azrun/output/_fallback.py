"""Runs without output storage: the instance view's last 4 KB is all there is.

Runs still work; azrun says once (:data:`NO_STORAGE_NOTICE`) that output may be truncated and
how to configure storage, and results carry the instance view's text, flagged truncated when it
is as long as the instance view keeps (so bytes before it may be lost).
"""

from __future__ import annotations

from azrun.models import OutputRef
from azrun.output._lines import split_text

__all__ = ["INSTANCE_VIEW_LIMIT_BYTES", "NO_STORAGE_NOTICE", "instance_view_output"]

INSTANCE_VIEW_LIMIT_BYTES = 4096

NO_STORAGE_NOTICE = (
    "no output storage configured: each target's output is only the last 4 KB the instance view keeps "
    "(it may be truncated). To keep all of it, pass --output-container https://<account>.blob.core.windows.net/"
    "<container> or --storage-account NAME, or set AZRUN_OUTPUT_CONTAINER."
)


def _maybe_cut(text: str) -> bool:
    # The handler keeps the last 4096 bytes and decodes them leniently: a character cut at the
    # start becomes U+FFFD (3 bytes), so the re-encoded length is within a few bytes of 4096.
    return len(text.encode("utf-8")) >= INSTANCE_VIEW_LIMIT_BYTES - 8


def instance_view_output(
    iv_output: str, iv_error: str, *, tail_lines: int = 20
) -> tuple[OutputRef, str, str]:
    """``(OutputRef, stdout_tail, stderr_tail)`` from the instance view alone (no blobs)."""
    ref = OutputRef(
        stdout_bytes=len(iv_output.encode("utf-8")),
        stderr_bytes=len(iv_error.encode("utf-8")),
        truncated=_maybe_cut(iv_output) or _maybe_cut(iv_error),
    )
    out = "\n".join(split_text(iv_output.encode("utf-8"))[-tail_lines:])
    err = "\n".join(split_text(iv_error.encode("utf-8"))[-tail_lines:])
    return ref, out, err
