"""Environment detection, auth modes, the credential registry, the Azure CLI path and describe()."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _imds_stub import ImdsStub

from azrun import auth
from azrun.auth import (
    AuthInfo,
    Environment,
    EnvironmentKind,
    IdentitySelector,
    SubscriptionInfo,
    describe,
    detect_environment,
    resolve_mode,
)
from azrun.auth._environment import AZURE_ASSET_TAG
from azrun.cloud import PUBLIC, USGOV, Cloud
from azrun.errors import AuthError, ConfigError

K = EnvironmentKind


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_ENDPOINT")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZRUN_RUNTIME_DIR", str(tmp_path / "runtime"))
    auth.clear_process_cache()
    yield
    auth.clear_process_cache()


@pytest.mark.parametrize(
    ("environ", "kind", "endpoint", "text"),
    [
        ({}, K.TERMINAL, None, "terminal (Azure CLI login)"),
        ({"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9/"}, K.AZURE_VM,
         "http://127.0.0.1:9/metadata/identity/oauth2/token",
         "Azure VM / VMSS (IMDS at http://127.0.0.1:9/metadata/identity/oauth2/token)"),
        ({"IDENTITY_ENDPOINT": "http://localhost:8081/msi/token", "IDENTITY_HEADER": "h"}, K.APP_SERVICE,
         "http://localhost:8081/msi/token", "App Service / Functions (identity endpoint http://localhost:8081/msi/token"),
        ({"IDENTITY_ENDPOINT": "http://127.0.0.1:40342/x", "IDENTITY_HEADER": "h", "AUTOMATION_ASSET_ACCOUNTID": "a"},
         K.AUTOMATION, "http://127.0.0.1:40342/x", "Azure Automation"),
        ({"MSI_ENDPOINT": "http://127.0.0.1:1/msi", "AUTOMATION_ASSET_ACCOUNTID": "a"}, K.AUTOMATION,
         "http://127.0.0.1:1/msi", "Azure Automation"),
        ({"IDENTITY_ENDPOINT": "http://localhost:40342/metadata/identity/oauth2/token",
          "IMDS_ENDPOINT": "http://localhost:40342"}, K.ARC,
         "http://localhost:40342/metadata/identity/oauth2/token", "Azure Arc"),
        ({"MSI_ENDPOINT": "http://127.0.0.1:2/msi", "MSI_SECRET": "s"}, K.APP_SERVICE, "http://127.0.0.1:2/msi",
         "App Service / Functions (identity endpoint http://127.0.0.1:2/msi; MSI_ENDPOINT + MSI_SECRET"),
        ({"MSI_ENDPOINT": "http://localhost:50342/oauth2/token"}, K.CLOUD_SHELL,
         "http://localhost:50342/oauth2/token", "Cloud Shell"),
        ({"IDENTITY_ENDPOINT": "https://sf:2377/x", "IDENTITY_HEADER": "h", "IDENTITY_SERVER_THUMBPRINT": "t"},
         K.SERVICE_FABRIC, "https://sf:2377/x", "Service Fabric"),
        ({"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "s"}, K.SERVICE_PRINCIPAL, None,
         "service principal (AZURE_CLIENT_ID + secret in environment)"),
        ({"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": "/f"}, K.WORKLOAD_IDENTITY,
         None, "Kubernetes workload identity"),
    ],
)
def test_detection_gives_one_printable_answer(
    environ: dict[str, str], kind: EnvironmentKind, endpoint: str | None, text: str
) -> None:
    env = detect_environment(environ, dmi_asset_tag_path=None)
    assert env.kind is kind
    assert env.endpoint == endpoint
    assert env.describe().startswith(text)
    assert str(env) == env.describe()


def test_plain_azure_vm_is_recognised_by_its_asset_tag(tmp_path: Path) -> None:
    tag = tmp_path / "chassis_asset_tag"
    tag.write_text(AZURE_ASSET_TAG + "\n")
    env = detect_environment({}, dmi_asset_tag_path=str(tag))
    assert env.kind is K.AZURE_VM
    assert env.endpoint == "http://169.254.169.254/metadata/identity/oauth2/token"
    tag.write_text("No Asset Tag\n")
    assert detect_environment({}, dmi_asset_tag_path=str(tag)).kind is K.TERMINAL


def test_secrets_in_the_environment_never_reach_the_description() -> None:
    env = detect_environment({"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "hunter2-secret",
                              "IDENTITY_HEADER": "hdr-x"}, dmi_asset_tag_path=None)
    assert "hunter2" not in env.describe() and "hdr-x" not in env.describe()


def test_modes_resolve_per_environment() -> None:
    vm = detect_environment({"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://x"}, dmi_asset_tag_path=None)
    terminal = detect_environment({}, dmi_asset_tag_path=None)
    assert resolve_mode("auto", vm) == "msi"
    assert resolve_mode("auto", terminal) == "cli"
    assert resolve_mode("device", vm) == "device"
    with pytest.raises(ConfigError):
        resolve_mode("kerberos", vm)  # type: ignore[arg-type]


def test_selector_allows_one_identity_only() -> None:
    assert IdentitySelector().is_system_assigned
    assert IdentitySelector(object_id="o").label() == "object_id=o"
    with pytest.raises(ConfigError):
        IdentitySelector(client_id="a", object_id="b")


def test_registry_keys_by_cloud_environment_mode_and_identity() -> None:
    env = detect_environment({"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://x"}, dmi_asset_tag_path=None)
    a = auth.get_credential(cloud=PUBLIC, environment=env)
    assert auth.get_credential(IdentitySelector(), cloud=PUBLIC, environment=env, mode="msi") is a
    assert auth.get_credential(IdentitySelector(client_id="u"), cloud=PUBLIC, environment=env) is not a
    assert auth.get_credential(cloud=USGOV, environment=env) is not a
    assert auth.get_credential(cloud=PUBLIC, environment=env, mode="cli") is not a
    custom = Cloud.custom("https://127.0.0.1:1")
    assert auth.get_credential(cloud=custom, environment=env) is auth.get_credential(cloud=custom, environment=env)
    assert auth.get_async_credential(cloud=PUBLIC, environment=env).spec == a.spec
    assert repr(a).startswith("ProcessCredential(mode='msi', identity='system-assigned'")
    auth.clear_process_cache()
    assert auth.get_credential(cloud=PUBLIC, environment=env) is not a


FAKE_AZ = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_AZ_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
time.sleep(0.2)
resource = args[args.index("--resource") + 1]
print(json.dumps({{"accessToken": "cli-token-for-" + resource, "expires_on": int(time.time()) + 3600,
                  "tokenType": "Bearer", "tenant": "t"}}))
"""


@pytest.fixture
def fake_az(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ.format(python=sys.executable))
    az.chmod(az.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "az.log"
    monkeypatch.setenv("FAKE_AZ_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def test_terminal_uses_the_azure_cli_once_per_scope_per_process(fake_az: Path) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    assert cred.spec.mode == "cli"
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda s=scope: tokens.append(cred.get_token(s).token))
               for scope in (PUBLIC.management_scope, PUBLIC.storage_scope) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(set(tokens)) == ["cli-token-for-https://management.azure.com",
                                   "cli-token-for-https://storage.azure.com"]
    calls = fake_az.read_text().splitlines()
    assert len(calls) == 2  # one `az account get-access-token` per scope, not per call
    assert all(c.startswith("account get-access-token") for c in calls)


def test_missing_cli_login_error_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no az anywhere
    with pytest.raises(AuthError) as err:
        auth.get_credential(cloud=PUBLIC, mode="cli").get_token(PUBLIC.management_scope)
    assert "Azure CLI login" in str(err.value)
    assert "az login" in (err.value.hint or "")


def test_env_mode_without_variables_says_which_to_set() -> None:
    with pytest.raises(AuthError) as err:
        auth.get_credential(cloud=PUBLIC, mode="env").get_token(PUBLIC.management_scope)
    assert "AZURE_CLIENT_SECRET" in (err.value.hint or "")


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ImdsStub]:
    with ImdsStub() as running:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", running.url)
        yield running


def test_describe_reports_identity_tenant_expiry_and_subscriptions(stub: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    seen: list[object] = []

    def lister(credential: auth.ProcessCredential, cloud: Cloud) -> list[SubscriptionInfo]:
        seen.append(credential)
        return [SubscriptionInfo("0000-1", "dev", "Enabled"), SubscriptionInfo("0000-2")]

    info = describe(cred, list_subscriptions=lister)
    assert seen == [cred]
    assert info.environment_kind == "azure-vm" and stub.url in info.environment
    assert info.auth_mode == "msi"
    assert info.client_id == "sys-client-id" and info.object_id == "sys-object-id"
    assert info.tenant_id == "72f988bf-0000-0000-0000-000000000001"
    assert info.identity_resource_id is not None and info.identity_resource_id.endswith("/virtualMachines/vm1")
    assert 3500 < info.token_expires_in_s <= 3600
    assert info.subscriptions is not None and [s.subscription_id for s in info.subscriptions] == ["0000-1", "0000-2"]
    data = json.loads(info.to_json())
    assert data["subscriptions"][0] == {"subscription_id": "0000-1", "display_name": "dev", "state": "Enabled",
                                        "tenant_id": None}
    text = info.to_json() + repr(info) + str(info.rows())
    for token in stub.issued:
        assert token not in text and token.split(".")[1] not in text
    assert ("subscriptions", "0000-1 (dev), 0000-2") in info.rows()


def test_describe_without_lister_or_with_failing_lister(stub: ImdsStub) -> None:
    cred = auth.get_credential(cloud=PUBLIC)
    assert describe(cred).subscriptions is None

    def broken(credential: auth.ProcessCredential, cloud: Cloud) -> list[SubscriptionInfo]:
        raise RuntimeError("ARM said 403 for https://x?sig=abcdef123")

    info: AuthInfo = describe(cred, list_subscriptions=broken)
    assert info.subscriptions is None
    assert info.subscriptions_error is not None and "403" in info.subscriptions_error
    assert "abcdef123" not in info.subscriptions_error
    assert len(stub.token_requests()) == 1  # describe used the cached token the second time


def test_describe_raises_auth_error_when_no_token(stub: ImdsStub) -> None:
    with pytest.raises(AuthError):
        describe(auth.get_credential(IdentitySelector(client_id="nope"), cloud=PUBLIC))


def test_environment_is_a_value() -> None:
    a = Environment(K.AZURE_VM, "http://x", "e")
    assert a == Environment(K.AZURE_VM, "http://x", "e")
    assert hash(a) == hash(Environment(K.AZURE_VM, "http://x", "e"))
