"""Script manifests: parsing, validation before dispatch, and secrets kept off argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from azrun.errors import ConfigError
from azrun.manifest import (
    BoundParameters,
    Manifest,
    ParameterSpec,
    parse_param_args,
    read_param_file,
    resolve_parameters,
    side_file_for,
)
from azrun.models import RunSpec

PATCH_SH = """#!/bin/bash
# --- azrun ---
# description = "Install a KB"
# timeout = 1800
# [parameters.kb]
# type = "string"
# pattern = "^KB[0-9]{7}$"
# required = true
# description = "the KB article"
# [parameters.reboot]
# type = "bool"
# default = false
# [parameters.token]
# type = "string"
# secret = true
# pattern = "^[a-z]{8}$"
# --- end ---
echo "installing $kb"
"""

SIDE_TOML = """
description = "Resize the pool"
[parameters.workers]
type = "int"
min = 1
max = 64
default = 4
[parameters.env]
allowed = ["dev", "prod"]
required = true
"""


@pytest.fixture
def patch() -> Manifest:
    return Manifest.parse(PATCH_SH, script_name="patch.sh")


def _error(fn: object, *args: object, **kwargs: object) -> ConfigError:
    assert callable(fn)
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


# -- parsing ---------------------------------------------------------------------------------
def test_header_is_parsed_in_order(patch: Manifest) -> None:
    assert patch.origin == "header"
    assert patch.description == "Install a KB"
    assert patch.timeout_s == 1800
    assert patch.names == ("kb", "reboot", "token")
    kb = patch.parameter("kb")
    assert kb == ParameterSpec(name="kb", pattern="^KB[0-9]{7}$", required=True, description="the KB article")
    assert patch.parameter("reboot") == ParameterSpec(name="reboot", type="bool", default=False)
    token = patch.parameter("token")
    assert token is not None and token.secret and token.env_var == "AZRUN_PARAM_TOKEN"


def test_powershell_header_with_crlf_and_indentation() -> None:
    script = (
        "param([string]$Name)\r\n"
        "  #   --- azrun ---\r\n"
        "  # [parameters.Name]\r\n"
        "  #allowed = ['a', 'b']\r\n"
        "\r\n"
        "  # --- end ---\r\n"
        "Write-Output $Name\r\n"
    )
    manifest = Manifest.parse(script, script_name="x.ps1")
    assert manifest.parameter("Name") == ParameterSpec(name="Name", allowed=("a", "b"))


def test_side_file_and_for_script(tmp_path: Path) -> None:
    script = tmp_path / "resize.sh"
    script.write_text("#!/bin/bash\necho $workers\n", encoding="utf-8")
    side_file_for(script).write_text(SIDE_TOML, encoding="utf-8")
    assert side_file_for(script).name == "resize.sh.azrun.toml"
    manifest = Manifest.for_script(script)
    assert manifest.origin == "side file"
    assert manifest.parameter("workers") == ParameterSpec(
        name="workers", type="int", minimum=1, maximum=64, default=4
    )
    bound = manifest.bind({"env": "prod"})
    assert bound.parameters == (("workers", "4"), ("env", "prod"))


def test_header_and_side_file_together_is_an_error() -> None:
    err = _error(Manifest.parse, PATCH_SH, SIDE_TOML, script_name="patch.sh")
    assert "both a manifest header and a .azrun.toml side file" in err.message


def test_missing_script_is_a_config_error(tmp_path: Path) -> None:
    err = _error(Manifest.for_script, tmp_path / "nope.sh")
    assert "cannot read" in err.message and err.hint


def test_no_manifest_passes_values_through_unchecked() -> None:
    manifest = Manifest.parse("#!/bin/bash\necho hi\n")
    assert not manifest.present
    bound = manifest.bind({"a": "1", "b": "x y"}, secret_values={"pw": "hunter22"})
    assert bound.parameters == (("a", "1"), ("b", "x y"))
    assert bound.protected == (("pw", "hunter22"),)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("timout = 5", "unknown key 'timout' (did you mean 'timeout'?)"),
        ("timeout = -1", "timeout must be a positive number of seconds"),
        ("timeout = true", "timeout must be a positive number of seconds"),
        ("[parameters.x]\ntype = 'integer'", "unknown type 'integer'"),
        ("[parameters.x]\nrequird = true", "unknown key 'requird' (did you mean 'required'?)"),
        ("[parameters.x]\ntype = 'int'\npattern = '[0-9]+'", "pattern is for string parameters"),
        ("[parameters.x]\npattern = '(['", "is not a valid regular expression"),
        ("[parameters.x]\nmin = 1", "min is for int parameters"),
        ("[parameters.x]\ntype = 'int'\nmin = 5\nmax = 1", "min is greater than max"),
        ("[parameters.x]\ntype = 'bool'\nallowed = [true]", "allowed makes no sense for a bool"),
        ("[parameters.x]\ntype = 'int'\nallowed = ['a']", "allowed must be a non-empty list of int values"),
        ("[parameters.x]\nsecret = true\ndefault = 'pw'", "a secret parameter cannot have a default"),
        (
            "[parameters.x]\nrequired = true\ndefault = 'a'",
            "'required = true' and a default cannot go together",
        ),
        ("[parameters.x]\ntype = 'int'\ndefault = '3'", "default must be of type int"),
        (
            "[parameters.x]\nallowed = ['a']\ndefault = 'b'",
            "the default is invalid: parameter x='b' is not one of: a",
        ),
        ("[parameters.x]\ntype = 'int'\nmax = 3\ndefault = 4", "the default is invalid"),
        ("[parameters.1x]\n", "not a valid name"),
        ("[parameters.Kb]\n[parameters.KB]\n", "differ only in case"),
        ("parameters = 3", "parameters must be tables"),
        ("description = = 1", "is not valid TOML"),
    ],
)
def test_bad_manifests_fail_before_any_value_is_read(toml: str, expected: str) -> None:
    err = _error(Manifest.parse, "#!/bin/sh\n", toml, script_name="s.sh")
    assert expected in err.message
    assert "\n" not in err.message


def test_header_structure_errors() -> None:
    unterminated = "# --- azrun ---\n# timeout = 5\necho\n"
    assert "line 3: not a comment inside the azrun header" in _error(Manifest.parse, unterminated).message
    no_end = "# --- azrun ---\n# timeout = 5\n"
    err = _error(Manifest.parse, no_end, script_name="a.sh")
    assert err.message == "a.sh: the azrun header has no '# --- end ---' line"
    assert err.hint and "# --- azrun ---" in err.hint
    twice = "# --- azrun ---\n# --- azrun ---\n# --- end ---\n"
    assert "a second '# --- azrun ---' marker" in _error(Manifest.parse, twice).message


# -- binding ---------------------------------------------------------------------------------
def test_bind_renders_types_and_splits_protected(patch: Manifest) -> None:
    bound = patch.bind({"kb": "KB5030211", "reboot": "YES"}, secret_values={"token": "abcdefgh"})
    assert bound.parameters == (("kb", "KB5030211"), ("reboot", "true"))
    assert bound.protected == (("token", "abcdefgh"),)
    assert bound.protected_names == ("token",)
    assert "abcdefgh" not in repr(bound)
    spec = RunSpec(script=PATCH_SH, parameters=bound.parameters, protected_parameters=bound.protected)
    assert "abcdefgh" not in repr(spec)
    assert spec.public_dict()["protected_parameter_names"] == ["token"]
    assert "abcdefgh" not in str(spec.public_dict())


def test_defaults_fill_in_and_optional_params_are_left_out(patch: Manifest) -> None:
    assert patch.bind({"kb": "KB5030211"}) == BoundParameters(
        parameters=(("kb", "KB5030211"), ("reboot", "false"))
    )


@pytest.mark.parametrize(
    ("cli", "message", "hint"),
    [
        ({"kb": "KB12"}, "parameter kb='KB12' does not match ^KB[0-9]{7}$", "kb: the KB article"),
        ({"kb": "KB5030211x"}, "parameter kb='KB5030211x' does not match ^KB[0-9]{7}$", None),
        (
            {"kb": "KB5030211", "kbb": "x"},
            "unknown parameter 'kbb' (did you mean 'kb'?)",
            "declared parameters",
        ),
        ({"KB": "KB5030211"}, "unknown parameter 'KB' (did you mean 'kb'?)", None),
        ({}, "missing required parameter 'kb'", "pass --param kb=<value>"),
        (
            {"kb": "KB5030211", "reboot": "maybe"},
            "parameter reboot='maybe' is not a boolean",
            "use true or false",
        ),
        (
            {"kb": "KB5030211", "token": "abcdefgh"},
            "parameter 'token' is secret and cannot be given on the command line",
            "set AZRUN_PARAM_TOKEN",
        ),
    ],
)
def test_bind_errors_are_one_line_with_a_hint(
    patch: Manifest, cli: dict[str, str], message: str, hint: str | None
) -> None:
    err = _error(patch.bind, cli)
    assert err.message == message
    assert err.hint
    if hint:
        assert hint in err.hint


def test_secret_values_never_appear_in_errors(patch: Manifest) -> None:
    err = _error(patch.bind, {"kb": "KB5030211"}, secret_values={"token": "NOT-A-MATCH-s3cret"})
    assert "NOT-A-MATCH-s3cret" not in err.message + (err.hint or "")
    assert err.message == "parameter token does not match ^[a-z]{8}$"


def test_missing_required_secret_hint_names_the_env_var() -> None:
    manifest = Manifest.parse("#!/bin/sh\n", "[parameters.pw]\nsecret = true\nrequired = true\n")
    err = _error(manifest.bind, {})
    assert err.message == "missing required parameter 'pw'"
    assert err.hint and "AZRUN_PARAM_PW" in err.hint


def test_int_bounds_and_enums() -> None:
    manifest = Manifest.parse("#!/bin/sh\n", SIDE_TOML)
    assert manifest.bind({"env": "dev", "workers": " +64 "}).parameters == (("workers", "64"), ("env", "dev"))
    assert _error(manifest.bind, {"env": "dev", "workers": "0"}).message == (
        "parameter workers=0 is below the minimum 1"
    )
    assert _error(manifest.bind, {"env": "dev", "workers": "65"}).message == (
        "parameter workers=65 is above the maximum 64"
    )
    assert _error(manifest.bind, {"env": "dev", "workers": "4.5"}).message == (
        "parameter workers='4.5' is not an integer"
    )
    err = _error(manifest.bind, {"env": "qa"})
    assert err.message == "parameter env='qa' is not one of: dev, prod"
    assert err.hint == "allowed values: dev, prod"


def test_unknown_name_from_a_param_file_is_rejected(patch: Manifest) -> None:
    err = _error(patch.bind, {"kb": "KB5030211"}, secret_values={"tokn": "abcdefgh"})
    assert err.message == "unknown parameter 'tokn' (did you mean 'token'?)"


# -- gathering values ------------------------------------------------------------------------
def test_parse_param_args() -> None:
    assert parse_param_args(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    assert "is not NAME=VALUE" in _error(parse_param_args, ["novalue"]).message
    assert "is not NAME=VALUE" in _error(parse_param_args, ["=v"]).message
    assert _error(parse_param_args, ["a=1", "a=2"]).message == "parameter 'a' given twice"


def test_read_param_file(tmp_path: Path) -> None:
    path = tmp_path / "params.toml"
    path.write_text('kb = "KB5030211"\nreboot = true\ncount = 3\n', encoding="utf-8")
    assert read_param_file(path) == {"kb": "KB5030211", "reboot": "true", "count": "3"}
    path.write_text("x = [1]\n", encoding="utf-8")
    assert "values must be strings" in (_error(read_param_file, path).hint or "")
    path.write_text('token = "s3cret-value\n', encoding="utf-8")
    err = _error(read_param_file, path)
    assert "is not valid TOML" in err.message and "s3cret-value" not in err.message
    assert "cannot read parameter file" in _error(read_param_file, tmp_path / "missing.toml").message


def test_resolve_parameters_precedence_and_prompt(patch: Manifest, tmp_path: Path) -> None:
    env = {"AZRUN_PARAM_TOKEN": "fromenvv"}
    bound = resolve_parameters(patch, argv_params=["kb=KB5030211"], environ=env)
    assert bound.protected == (("token", "fromenvv"),)

    param_file = tmp_path / "p.toml"
    param_file.write_text('token = "fromfile"\nkb = "KB1111111"\nreboot = true\n', encoding="utf-8")
    bound = resolve_parameters(patch, argv_params=["kb=KB5030211"], param_file=param_file, environ=env)
    assert bound.parameters == (("kb", "KB5030211"), ("reboot", "true"))  # argv beats the file
    assert bound.protected == (("token", "fromfile"),)  # the file beats the environment

    required = Manifest.parse("#!/bin/sh\n", "[parameters.pw]\nsecret = true\nrequired = true\n")
    asked: list[str] = []

    def prompt(spec: ParameterSpec) -> str:
        asked.append(spec.name)
        return "typed-in"

    assert resolve_parameters(required, prompt=prompt).protected == (("pw", "typed-in"),)
    assert asked == ["pw"]
    resolve_parameters(required, environ={"AZRUN_PARAM_PW": "x"}, prompt=prompt)
    assert asked == ["pw"]  # not asked when the environment has it
    with pytest.raises(ConfigError, match="missing required parameter 'pw'"):
        resolve_parameters(required)
