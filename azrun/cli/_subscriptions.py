"""Subscriptions as ``az`` takes them: ``-s`` by name or id, and the Azure CLI's default.

* :func:`subscription_ids`: names (``-s "Contoso Prod"``) become ids by listing the subscriptions
  the identity can see, once, only when a value is not already a GUID; an unknown or ambiguous
  name is a one-line error listing what is visible.
* :func:`azure_cli_default`: the subscription ``az account set`` chose (``isDefault`` in
  ``$AZURE_CONFIG_DIR/azureProfile.json``, default ``~/.azure``), used when nothing else names one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from azrun.errors import ConfigError

__all__ = ["UnknownSubscription", "azure_cli_default", "subscription_ids"]

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class UnknownSubscription(ConfigError):
    """``-s NAME`` names no visible subscription (or several)."""


def _profile(environ: Mapping[str, str]) -> Path:
    base = environ.get("AZURE_CONFIG_DIR") or str(Path(environ.get("HOME") or Path.home()) / ".azure")
    return Path(base) / "azureProfile.json"


def azure_cli_default(environ: Mapping[str, str] | None = None) -> str | None:
    """The Azure CLI's default subscription id, or None (no profile, not logged in, unreadable)."""
    path = _profile(os.environ if environ is None else environ)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # az writes a BOM
    except (OSError, ValueError):
        return None
    for sub in data.get("subscriptions") or () if isinstance(data, dict) else ():
        if isinstance(sub, dict) and sub.get("isDefault") and sub.get("id"):
            return str(sub["id"])
    return None


def _visible() -> list[tuple[str, str]]:
    """``(id, display name)`` of every subscription azrun's identity can see."""
    from azrun.azerrors import map_azure_errors
    from azrun.cli._options import client_factory

    client = client_factory().subscriptions()
    with map_azure_errors("listing subscriptions"):
        return [(str(s.subscription_id), str(s.display_name or "")) for s in client.subscriptions.list()]


def subscription_ids(
    values: Sequence[str], *, visible: Callable[[], Iterable[tuple[str, str]]] = _visible
) -> tuple[str, ...]:
    """``values`` with every name replaced by its subscription id (ids pass through untouched)."""
    if all(_GUID.match(v.strip()) for v in values):
        return tuple(v.strip() for v in values)
    known = list(visible())
    out: list[str] = []
    for value in values:
        value = value.strip()
        if _GUID.match(value):
            out.append(value)
            continue
        hits = [sid for sid, name in known if name.lower() == value.lower()]
        if len(hits) != 1:
            names = ", ".join(f"{name} ({sid})" for sid, name in known[:8]) or "none"
            why = "several subscriptions are named" if hits else "no visible subscription is named"
            raise UnknownSubscription(f"{why} {value!r}", hint=f"use the id; visible: {names}")
        out.append(hits[0])
    return tuple(out)
