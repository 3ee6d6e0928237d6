"""The guest agent's files: output tails and per-machine working directories (see agent.py)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

TAIL_BYTES = 4096
#: Recorded (2023): a PUT without a script is accepted (201) and the handler fails it so.
EXIT_NO_SOURCE = -202
NO_SOURCE_MESSAGE = (
    "failed to get configuration: invalid configuration: Either 'source.script' or 'source.scriptUri' "
    "has to be specified"
)


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file, decoded leniently (the cut may split a character)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def machine_dir(resource_id: str, display: str) -> str:
    """A machine's directory name: readable, and unique per resource id (case-insensitively).

    Same-named VMs in other resource groups or subscriptions get directories of their own.
    """
    digest = hashlib.sha256(resource_id.lower().encode()).hexdigest()[:12]
    return f"{safe_name(display)}-{digest}"
