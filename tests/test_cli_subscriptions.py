"""``-s`` takes a subscription's name or id, and with none given azrun falls back to the Azure CLI's
default subscription (``az account set``), as ``az`` itself does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from azrun.cli._subscriptions import UnknownSubscription, subscription_ids
from azrun.config import azure_cli_default

PROD = "11111111-1111-4111-8111-111111111111"
STAGING = "22222222-2222-4222-8222-222222222222"


def test_names_become_ids() -> None:
    visible = lambda: [(PROD, "Test Production"), (STAGING, "Test Staging")]  # noqa: E731
    assert subscription_ids(["test production", STAGING], visible=visible) == (PROD, STAGING)
    assert subscription_ids([PROD], visible=lambda: pytest.fail("no listing for ids")) == (PROD,)
    with pytest.raises(UnknownSubscription, match="no visible subscription is named 'Nope'"):
        subscription_ids(["Nope"], visible=visible)
    twice = lambda: [(PROD, "Same"), (STAGING, "Same")]  # noqa: E731
    with pytest.raises(UnknownSubscription, match="several subscriptions are named 'Same'"):
        subscription_ids(["Same"], visible=twice)


def test_azure_cli_default_subscription(tmp_path: Path) -> None:
    profile = {"subscriptions": [{"id": PROD, "isDefault": False}, {"id": STAGING, "isDefault": True}]}
    (tmp_path / "azureProfile.json").write_text("\ufeff" + json.dumps(profile), encoding="utf-8")
    assert azure_cli_default({"AZURE_CONFIG_DIR": str(tmp_path)}) == STAGING
    assert azure_cli_default({"AZURE_CONFIG_DIR": str(tmp_path / "none")}) is None
    assert azure_cli_default({"HOME": str(tmp_path)}) is None
    # the settings layer uses it: the CLI and Fleet.from_env() get the same scope
    from azrun.config import Settings

    env = {"AZURE_CONFIG_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert Settings.load(environ=env).subscriptions() == (STAGING,)
    assert Settings.load(environ={**env, "AZURE_SUBSCRIPTION_ID": f"{PROD}, {STAGING}"}).subscriptions() == (PROD, STAGING)
    assert Settings.load(environ={**env, "AZRUN_AUTH": "msi"}).subscriptions() == ()  # not logged in through az


def _azrun(sim: Any, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZRUN_"))}
    env.update(sim.env)
    env.update(extra)
    env = {k: v for k, v in env.items() if v}
    return subprocess.run([sys.executable, "-m", "azrun", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_subscription_by_name_and_the_az_default(local_azure: Any, tmp_path: Path) -> None:
    by_name = _azrun(local_azure, "targets", "--all", "-s", "Test Staging", "-o", "json", "--query",
                     "[?status=='selected'].subscription")
    assert by_name.returncode == 0, by_name.stderr
    assert set(json.loads(by_name.stdout)) == {STAGING}

    profile = {"subscriptions": [{"id": STAGING, "name": "Test Staging", "isDefault": True}]}
    (tmp_path / "azureProfile.json").write_text(json.dumps(profile), encoding="utf-8")
    default = _azrun(local_azure, "targets", "--all", "-o", "json", "--query", "[?status=='selected'].subscription",
                     AZURE_SUBSCRIPTION_ID="", AZURE_CONFIG_DIR=str(tmp_path))
    assert default.returncode == 0, default.stderr
    assert set(json.loads(default.stdout)) == {STAGING}
