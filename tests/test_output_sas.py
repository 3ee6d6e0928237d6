"""SAS rules and --blob-identity parsing (no I/O)."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from azrun.errors import ConfigError
from azrun.models import Target, TargetKind
from azrun.output import (
    MAX_SAS_LIFETIME_S,
    AccountKeySigner,
    BlobPair,
    UserDelegationSigner,
    parse_blob_identity,
    sas_lifetime_s,
)
from azrun.redact import redact

KEY = base64.b64encode(b"k" * 64).decode()
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def _target(name: str = "vm-web-01") -> Target:
    return Target(
        resource_id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}",
        name=name, kind=TargetKind.VM, subscription_id="s", resource_group="rg", location="westeurope",
        os="linux", power_state="running",
    )  # fmt: skip


def _fields(token: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(token).items()}


async def test_account_key_sas_is_racw_https_one_blob_with_expiry() -> None:
    signer = AccountKeySigner("acct", KEY, now=lambda: NOW)
    token = await signer.sign("azrun-output", "r1/vm-web-01/stdout", 7200)
    f = _fields(token)
    assert f["sp"] == "racw"
    assert f["spr"] == "https"
    assert f["sr"] == "b"  # one blob, not the container
    assert "st" not in f  # valid at once: no clock-skew surprises on the VM
    assert datetime.fromisoformat(f["se"].replace("Z", "+00:00")) == NOW + timedelta(seconds=7200)
    assert f["sig"]
    assert "acct" in repr(signer) and KEY not in repr(signer)


async def test_sas_lifetime_is_clamped_to_seven_days() -> None:
    signer = AccountKeySigner("acct", KEY, now=lambda: NOW)
    f = _fields(await signer.sign("c", "b", 30 * 24 * 3600))
    assert datetime.fromisoformat(f["se"].replace("Z", "+00:00")) == NOW + timedelta(days=7)


def test_sas_lifetime_rules() -> None:
    assert sas_lifetime_s(3600) == 7200
    assert sas_lifetime_s(0) == MAX_SAS_LIFETIME_S
    assert sas_lifetime_s(10 * 24 * 3600) == MAX_SAS_LIFETIME_S
    assert sas_lifetime_s(1, margin_s=0) == 15 * 60


def _udk(expiry: datetime) -> object:
    from azure.storage.blob import UserDelegationKey

    key = UserDelegationKey()  # type: ignore[no-untyped-call]
    key.signed_oid = "00000000-0000-0000-0000-000000000001"
    key.signed_tid = "00000000-0000-0000-0000-000000000002"
    key.signed_start = "2026-05-01T11:55:00Z"
    key.signed_expiry = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    key.signed_service = "b"
    key.signed_version = "2025-11-05"
    key.value = KEY
    return key


async def test_user_delegation_key_is_fetched_once_and_again_only_for_a_longer_expiry() -> None:
    calls: list[tuple[datetime, datetime]] = []

    async def get_key(start: datetime, expiry: datetime) -> object:
        calls.append((start, expiry))
        await asyncio.sleep(0.01)
        return _udk(expiry)

    signer = UserDelegationSigner("acct", get_key, now=lambda: NOW)  # type: ignore[arg-type]
    tokens = await asyncio.gather(*(signer.sign("c", f"r/vm-{i}/stdout", 7200) for i in range(20)))
    assert len(calls) == 1  # single flight
    assert calls[0][0] == NOW - timedelta(minutes=5)
    f = _fields(tokens[0])
    assert (f["sp"], f["spr"], f["sr"]) == ("racw", "https", "b")
    assert f["skoid"] == "00000000-0000-0000-0000-000000000001"
    await signer.sign("c", "b", 3600)  # shorter: same key
    assert len(calls) == 1
    await signer.sign("c", "b", 3 * 24 * 3600)  # longer: a new key
    assert len(calls) == 2 and calls[1][1] >= NOW + timedelta(days=3)
    await signer.sign("c", "b", 30 * 24 * 3600)  # capped at 7 days
    assert calls[-1][1] == NOW + timedelta(days=7)


def test_blob_identity() -> None:
    assert parse_blob_identity("system") == {}
    cid = "0B2D5C1E-0000-4000-8000-000000000001"
    assert parse_blob_identity(cid) == {"clientId": cid.lower()}
    with pytest.raises(ConfigError) as info:
        parse_blob_identity("/subscriptions/x/objectId")
    assert info.value.hint and "client id" in info.value.hint


def test_blob_pair_repr_hides_write_uris() -> None:
    pair = BlobPair(
        "https://a.blob.core.windows.net/c/r/vm/stdout",
        "https://a.blob.core.windows.net/c/r/vm/stderr",
        "https://a.blob.core.windows.net/c/r/vm/stdout?sv=1&sig=SECRETSIG",
        "https://a.blob.core.windows.net/c/r/vm/stderr?sv=1&sig=SECRETSIG",
        None,
    )
    assert "SECRETSIG" not in repr(pair) and "sig=" not in repr(pair)
    assert redact(pair.stdout_write_uri).endswith("sig=REDACTED")


# -- container URLs and settings (no I/O) ---------------------------------------------------------
def test_container_urls() -> None:
    from azrun.output._connect import parse_container_url

    c = parse_container_url("https://acct.blob.core.windows.net/azrun-output/")
    assert (c.url, c.account, c.name, c.emulator) == (
        "https://acct.blob.core.windows.net/azrun-output", "acct", "azrun-output", False,
    )  # fmt: skip
    e = parse_container_url("https://127.0.0.1:10000/devstoreaccount1/out")
    assert (e.account, e.name, e.emulator) == ("devstoreaccount1", "out", True)
    assert parse_container_url("http://localhost:10000/devstoreaccount1/out").emulator
    for bad in (
        "http://acct.blob.core.windows.net/c",  # plain http off loopback
        "https://acct.blob.core.windows.net/c?sv=1&sig=x",  # a SAS
        "https://acct.blob.core.windows.net/a/b",  # not a container
        "ftp://x/y",
    ):
        with pytest.raises(ConfigError) as info:
            parse_container_url(bad)
        assert "sig=x" not in str(info.value)


def test_container_from_settings(tmp_path: Path) -> None:
    from azrun.config import Settings
    from azrun.output import container_url_from_settings

    def settings(**env: str) -> Settings:
        return Settings.load(environ=env, path=tmp_path / "none.toml")

    assert container_url_from_settings(settings(), "blob.core.windows.net") is None
    assert (
        container_url_from_settings(settings(AZRUN_STORAGE_ACCOUNT="acct"), "blob.core.usgovcloudapi.net")
        == "https://acct.blob.core.usgovcloudapi.net/azrun-output"
    )
    conn = f"DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=https://127.0.0.1:9/devstoreaccount1;"
    assert (
        container_url_from_settings(settings(AZRUN_STORAGE_CONNECTION_STRING=conn), "x")
        == "https://127.0.0.1:9/devstoreaccount1/azrun-output"
    )
    plain = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"
    assert (
        container_url_from_settings(settings(AZRUN_STORAGE_CONNECTION_STRING=plain), "x")
        == "https://acct.blob.core.chinacloudapi.cn/azrun-output"
    )
    given = "https://acct.blob.core.windows.net/mine"
    assert (
        container_url_from_settings(settings(AZRUN_OUTPUT_CONTAINER=given, AZRUN_STORAGE_ACCOUNT="x"), "s")
        == given
    )


async def test_from_settings_without_storage_is_none(tmp_path: Path) -> None:
    from azrun.clients import ClientFactory
    from azrun.config import Settings
    from azrun.output import NO_STORAGE_NOTICE, OutputStore

    factory = ClientFactory.from_env({})
    assert (
        await OutputStore.from_settings(Settings.load(environ={}, path=tmp_path / "c.toml"), factory) is None
    )
    assert "AZRUN_OUTPUT_CONTAINER" in NO_STORAGE_NOTICE and "4 KB" in NO_STORAGE_NOTICE
