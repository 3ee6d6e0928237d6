"""Subscriptions as ``az`` takes them: ``-s`` by name or id, and the Azure CLI's default.

* :func:`subscription_ids`: names (``-s "Contoso Prod"``) become ids by listing the subscriptions
  the identity can see, once, only when a value is not already a GUID; an unknown or ambiguous
  name is a one-line error listing what is visible.

The Azure CLI's default subscription (used when nothing names one) is read by the settings layer:
:func:`azrun.config.azure_cli_default`, through :meth:`azrun.config.Settings.subscriptions`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from azrun.errors import ConfigError

__all__ = ["UnknownSubscription", "subscription_ids"]

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class UnknownSubscription(ConfigError):
    """``-s NAME`` names no visible subscription (or several)."""


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
