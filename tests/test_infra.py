"""Offline checks of infra/ (the Bicep CLI cannot be installed here; see infra/README.md).

A small reader pulls ``param`` declarations, ``module`` calls and their ``params`` blocks, and
array literals out of the Bicep files; the tests then check the wiring between the files, and
that the custom role grants exactly :mod:`azrun.permissions`. When ``tree-sitter-bicep`` is
installed, every file must also parse without a syntax error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from azrun.config import KEYS
from azrun.permissions import ACTIONS, DATA_ACTIONS, PERMISSIONS, VM_BLOB_ROLE_ID, role_definition

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BICEP_FILES = sorted([INFRA / "main.bicep", *(INFRA / "modules").glob("*.bicep")])

_PARAM = re.compile(r"^param\s+(\w+)\s+\w+(\s*=)?", re.M)
_MODULE = re.compile(r"^module\s+(\w+)\s+'([^']+)'\s*=\s*(?:if\s*\(.*?\)\s*)?\{", re.M)
_LOAD = re.compile(r"load(?:Text|Json|Yaml)Content\('([^']+)'")


def _strip_comments(text: str) -> str:
    """Drop ``//`` comments (outside strings), so a word in a comment counts as no use."""
    out = []
    for line in text.splitlines():
        in_string = False
        for i, ch in enumerate(line):
            if ch == "'":
                in_string = not in_string
            elif ch == "/" and not in_string and line[i : i + 2] == "//":
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def _block(text: str, open_at: int) -> str:
    """The text between the brace at ``open_at`` and its match (strings skipped)."""
    depth, in_string = 0, False
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "'":
            in_string = not in_string
        elif not in_string and ch in "{[":
            depth += 1
        elif not in_string and ch in "}]":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    raise AssertionError("unbalanced braces")


def _top_level_keys(block: str) -> list[str]:
    """Keys at depth 0 of an object literal body."""
    keys, depth, in_string = [], 0, False
    for line in block.splitlines():
        if depth == 0 and not in_string:
            match = re.match(r"\s*'?([\w.-]+)'?\s*:", line)
            if match:
                keys.append(match.group(1))
        for ch in line:
            if ch == "'":
                in_string = not in_string
            elif not in_string and ch in "{[":
                depth += 1
            elif not in_string and ch in "}]":
                depth -= 1
    return keys


def _array(text: str, key: str) -> list[str]:
    """The string items of the array literal ``key: [ ... ]``."""
    match = re.search(rf"\b{key}:\s*\[", text)
    assert match, f"no {key} array"
    return re.findall(r"'([^']*)'", _block(text, match.end() - 1))


@dataclass(frozen=True)
class BicepFile:
    path: Path
    text: str

    @property
    def params(self) -> dict[str, bool]:
        """Declared parameters -> whether they have a default."""
        return {m.group(1): bool(m.group(2)) for m in _PARAM.finditer(self.text)}

    def modules(self) -> list[tuple[str, Path, dict[str, str]]]:
        """(symbol, module file, {param: expression text}) for every module call."""
        found = []
        for match in _MODULE.finditer(self.text):
            body = _block(self.text, match.end() - 1)
            params_at = re.search(r"\bparams:\s*\{", body)
            keys = _top_level_keys(_block(body, params_at.end() - 1)) if params_at else []
            found.append(
                (match.group(1), (self.path.parent / match.group(2)).resolve(), dict.fromkeys(keys, ""))
            )
        return found


def _load(path: Path) -> BicepFile:
    return BicepFile(path, _strip_comments(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def files() -> dict[str, BicepFile]:
    return {p.name: _load(p) for p in BICEP_FILES}


def test_the_expected_files_exist() -> None:
    names = {p.name for p in BICEP_FILES}
    assert names == {
        "main.bicep", "identity.bicep", "storage.bicep", "role.bicep",
        "fleet.bicep", "functionapp.bicep", "automation.bicep", "durable.bicep",
    }  # fmt: skip
    assert (INFRA / "main.bicepparam").is_file()
    assert (INFRA / "README.md").is_file()


def test_modules_exist_and_get_exactly_their_parameters(files: dict[str, BicepFile]) -> None:
    calls = files["main.bicep"].modules()
    assert {path.name for _, path, _ in calls} == {p.name for p in BICEP_FILES} - {"main.bicep"}
    for symbol, path, passed in calls:
        assert path.is_file(), f"module {symbol}: {path} does not exist"
        declared = _load(path).params
        unknown = set(passed) - set(declared)
        assert not unknown, f"module {symbol} passes parameters {path.name} does not declare: {unknown}"
        missing = {name for name, has_default in declared.items() if not has_default} - set(passed)
        assert not missing, f"module {symbol} leaves required parameters of {path.name} unset: {missing}"


def test_loaded_files_exist(files: dict[str, BicepFile]) -> None:
    loaded = [(f, name) for f in files.values() for name in _LOAD.findall(f.text)]
    assert loaded, "automation.bicep loads its cloud-init"
    for f, name in loaded:
        assert (f.path.parent / name).is_file(), f"{f.path.name} loads {name}, which does not exist"


def test_every_parameter_is_used(files: dict[str, BicepFile]) -> None:
    for f in files.values():
        for name in f.params:
            uses = len(re.findall(rf"\b{name}\b", f.text))
            assert uses >= 2, f"{f.path.name}: param {name} is declared but never used"


def test_bicepparam_sets_only_known_parameters(files: dict[str, BicepFile]) -> None:
    text = (INFRA / "main.bicepparam").read_text(encoding="utf-8")
    assert re.search(r"^using\s+'\./main\.bicep'", text, re.M)
    declared = files["main.bicep"].params
    set_here = re.findall(r"^param\s+(\w+)\s*=", text, re.M)
    assert set_here and set(set_here) <= set(declared)
    assert "sshPublicKey" in set_here  # the one parameter without a default


def test_role_grants_exactly_azrun_permissions(files: dict[str, BicepFile]) -> None:
    role = files["role.bicep"].text
    assert _array(role, "actions") == list(ACTIONS)
    assert _array(role, "dataActions") == list(DATA_ACTIONS)
    assert _array(role, "notActions") == [] and _array(role, "notDataActions") == []
    assert "assignableScopes" in role and "resourceGroup().id" in _block(
        role, role.index("assignableScopes: [") + 18
    )


def test_permissions_are_well_formed_and_documented() -> None:
    names = [p.name for p in PERMISSIONS]
    assert len(names) == len(set(names))
    for p in PERMISSIONS:
        assert p.name.startswith(("Microsoft.Compute/", "Microsoft.Resources/", "Microsoft.Storage/")), p.name
        assert p.why
        assert p.data == ("/containers/blobs/" in p.name), f"{p.name}: blob operations are the data actions"
    # the runner never assigns identities, and never deletes output
    assert not any("userAssignedIdentities" in n or n.endswith("blobs/delete") for n in names)
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    for p in PERMISSIONS:
        assert f"`{p.name}`" in readme, f"infra/README.md does not list {p.name}"
    definition = role_definition("azrun runner", ["/subscriptions/x/resourceGroups/y"])
    assert definition["Actions"] == list(ACTIONS) and definition["DataActions"] == list(DATA_ACTIONS)


def test_vm_identity_gets_blob_data_contributor_on_the_container(files: dict[str, BicepFile]) -> None:
    storage = files["storage.bicep"].text
    assert VM_BLOB_ROLE_ID in storage
    assignment = storage[storage.index("resource vmBlobWriter") :]
    assert re.search(r"^\s*scope:\s*container\s*$", assignment, re.M)


def test_function_app_settings_are_azrun_settings(files: dict[str, BicepFile]) -> None:
    app = files["functionapp.bicep"].text
    settings = _top_level_keys(_block(app, app.index("resource appSettings")).split("properties: {", 1)[1])
    known = {var for var, _ in KEYS.values()} | {"AZRUN_AUTH"}
    example = (ROOT / "examples" / "functions" / "function_app.py").read_text(encoding="utf-8")
    for name in settings:
        if name.startswith("AzureWebJobsStorage__"):
            continue
        assert name in known or name in example, (
            f"app setting {name} is neither an azrun setting nor read by the example"
        )
    assert {"AZRUN_CLIENT_ID", "AZRUN_OUTPUT_CONTAINER", "AZRUN_BLOB_IDENTITY", "AZRUN_STATE_DIR"} <= set(
        settings
    )
    assert "%AZRUN_SCHEDULE%" in example


def test_machines_carry_the_selector_tag_and_the_output_identity(files: dict[str, BicepFile]) -> None:
    main = files["main.bicep"].text
    assert "'${testTagName}': testTagValue" in main
    fleet = files["fleet.bicep"].text
    assert fleet.count("identity: identity") == 3  # VMs, Uniform, Flexible
    assert "orchestrationMode: 'Uniform'" in fleet and "orchestrationMode: 'Flexible'" in fleet


def test_durable_engine_scheduler_workers_and_roles(files: dict[str, BicepFile]) -> None:
    durable = files["durable.bicep"].text
    assert "Microsoft.DurableTask/schedulers@" in durable and "Microsoft.DurableTask/schedulers/taskHubs@" in durable
    assert _array(durable, "ipAllowlist") == ["0.0.0.0/0"]  # an empty list would deny every caller
    # the runner identity works the task hub; the operator schedules and watches runs
    worker = durable[durable.index("resource workerRole") :]
    assert "scope: taskHub" in worker and "durableTaskWorker" in worker and "principalId: runnerPrincipalId" in worker
    assert "80d0d6b0-f522-40a4-8886-a5a11720c375" in durable  # Durable Task Worker
    assert "0ad04412-c4d5-4796-b79c-f76d14c8d402" in durable  # Durable Task Data Contributor
    # the workers run `azrun worker` as the runner identity, configured with azrun's own settings
    app = durable[durable.index("resource workers") :]
    assert "runnerIdentityId" in app and "exec azrun worker" in app
    env = re.findall(r"name: '(AZRUN_\w+)'", app)
    known = {var for var, _ in KEYS.values()}
    assert set(env) <= known, set(env) - known
    assert {"AZRUN_DURABLE_ENDPOINT", "AZRUN_DURABLE_TASKHUB", "AZRUN_CLIENT_ID", "AZRUN_OUTPUT_CONTAINER"} <= set(env)
    assert "scheduler.properties.endpoint" in app
    # main wires it behind a switch and reports where the scheduler is
    main = files["main.bicep"].text
    assert "module durable 'modules/durable.bicep' = if (deployDurable)" in main
    assert "output durableEndpoint string" in main


def test_bicep_files_parse() -> None:
    ts_bicep = pytest.importorskip("tree_sitter_bicep", reason="pip install tree-sitter tree-sitter-bicep")
    tree_sitter = pytest.importorskip("tree_sitter")
    parser = tree_sitter.Parser(tree_sitter.Language(ts_bicep.language()))
    for path in BICEP_FILES:
        tree = parser.parse(path.read_bytes())
        errors: list[tuple[int, int]] = []
        stack = [tree.root_node]
        while stack:
            node = stack.pop()
            if node.type == "ERROR" or node.is_missing:
                errors.append((node.start_point[0] + 1, node.start_point[1] + 1))
            stack.extend(node.children)
        assert not errors, f"{path.name}: syntax errors at {errors[:5]}"
