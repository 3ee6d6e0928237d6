"""Clouds: well-known endpoints, scopes derived from the cloud, the custom (local Azure) cloud."""

from __future__ import annotations

import dataclasses
import os

import pytest

from azrun.auth import clear_process_cache
from azrun.cloud import CHINA, CLOUDS, PUBLIC, USGOV, Cloud
from azrun.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_ENDPOINT")):
            monkeypatch.delenv(key, raising=False)
    clear_process_cache()


def test_well_known_clouds_have_matching_scopes_and_endpoints() -> None:
    for cloud in (PUBLIC, USGOV, CHINA):
        host = cloud.arm_endpoint.removeprefix("https://")
        assert cloud.management_scope == f"https://{host}/.default"
        assert cloud.management_resource == f"https://{host}/"
        assert cloud.storage_scope == "https://storage.azure.com/.default"
        assert cloud.ca_bundle is None
        assert not cloud.is_custom
    assert PUBLIC.authority_host == "https://login.microsoftonline.com"
    assert USGOV.authority_host == "https://login.microsoftonline.us"
    assert CHINA.authority_host == "https://login.chinacloudapi.cn"
    assert USGOV.storage_suffix == "blob.core.usgovcloudapi.net"
    assert CHINA.storage_suffix == "blob.core.chinacloudapi.cn"
    assert set(CLOUDS) == {"public", "usgov", "china"}


def test_cloud_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PUBLIC.arm_endpoint = "https://evil"  # type: ignore[misc]


def test_from_env_defaults_to_public() -> None:
    assert Cloud.from_env({}) is PUBLIC


@pytest.mark.parametrize(("name", "expected"), [("usgov", USGOV), ("AzureUSGovernment", USGOV), ("china", CHINA),
                                                ("AzureCloud", PUBLIC), ("PUBLIC", PUBLIC)])
def test_from_env_names_a_cloud(name: str, expected: Cloud) -> None:
    assert Cloud.from_env({"AZRUN_CLOUD": name}) is expected


def test_unknown_cloud_is_a_config_error_with_hint() -> None:
    with pytest.raises(ConfigError) as err:
        Cloud.from_env({"AZRUN_CLOUD": "mars"})
    assert "mars" in str(err.value)
    assert err.value.hint is not None and "usgov" in err.value.hint


def test_custom_cloud_from_env_keeps_public_scopes_for_the_local_azure() -> None:
    cloud = Cloud.from_env({"AZRUN_ARM_ENDPOINT": "https://127.0.0.1:8443/", "AZRUN_CA_BUNDLE": "/x/ca.pem"})
    assert cloud.is_custom
    assert cloud.arm_endpoint == "https://127.0.0.1:8443"
    assert cloud.ca_bundle == "/x/ca.pem"
    assert cloud.management_scope == "https://management.azure.com/.default"
    assert cloud.authority_host == PUBLIC.authority_host


def test_custom_cloud_can_be_based_on_a_sovereign_cloud() -> None:
    cloud = Cloud.from_env({"AZRUN_CLOUD": "usgov", "AZRUN_ARM_ENDPOINT": "https://arm.example"})
    assert cloud.management_scope == USGOV.management_scope
    assert cloud.ca_bundle is None


@pytest.mark.parametrize("bad", ["127.0.0.1:8443", "ftp://x", "https://"])
def test_custom_cloud_rejects_non_urls(bad: str) -> None:
    with pytest.raises(ConfigError):
        Cloud.custom(bad)
