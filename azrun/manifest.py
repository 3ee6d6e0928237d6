"""Script manifests: typed parameters declared next to the script, checked before anything is sent.

Azure run commands take parameters as plain name/value strings; a typo or a bad value is only
found on the machines, after the fleet has been touched. A manifest (like an SSM document's
parameter schema) lets a script say what it accepts, so ``azrun run`` refuses bad input first.

A manifest is TOML, written either as a header of ``#`` comment lines inside the script (bash and
PowerShell both use ``#``)::

    #!/bin/bash
    # --- azrun ---
    # description = "Install a KB"
    # timeout = 1800
    # [parameters.kb]
    # type = "string"
    # pattern = "^KB[0-9]{7}$"
    # required = true
    # [parameters.reboot]
    # type = "bool"
    # default = false
    # [parameters.token]
    # type = "string"
    # secret = true
    # --- end ---

or as a side file ``<script>.azrun.toml`` (``patch.sh.azrun.toml``) holding the same TOML, for
scripts that cannot be edited. Giving both is an error rather than a silent choice. TOML only:
azrun takes no YAML dependency.

Parameter keys: ``type`` (``string`` | ``int`` | ``bool``, default ``string``), ``description``,
``default``, ``required``, ``allowed`` (a list of values: an enum), ``pattern`` (a regular
expression the whole value must match, strings only), ``min`` / ``max`` (ints only) and
``secret``. A secret parameter is sent as a *protected* parameter (Azure never echoes those back)
and its value must not come from the command line, where it would land in shell history and
``ps`` output: it comes from ``AZRUN_PARAM_<NAME>``, a ``--param-file`` or a prompt. Booleans
are sent as ``true`` / ``false``; PowerShell scripts should declare them ``[string]``, because
PowerShell does not bind the string ``"true"`` to a ``[bool]`` parameter.
"""

from __future__ import annotations

import difflib
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from azrun.errors import ConfigError

__all__ = [
    "SIDE_FILE_SUFFIX",
    "BoundParameters",
    "Manifest",
    "ParameterSpec",
    "parse_param_args",
    "read_param_file",
    "resolve_parameters",
    "side_file_for",
]

ParamValue = str | int | bool

SIDE_FILE_SUFFIX: Final = ".azrun.toml"
_START: Final = re.compile(r"^\s*#\s*---\s*azrun\s*---\s*$")
_END: Final = re.compile(r"^\s*#\s*---\s*end\s*---\s*$")
# Linux passes named parameters as environment variables, so names must be valid ones.
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT: Final = re.compile(r"^[+-]?[0-9]+$")
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})
_TYPES: Final = ("string", "int", "bool")
_TOP_KEYS: Final = ("description", "timeout", "parameters")
_PARAM_KEYS: Final = (
    "type",
    "description",
    "default",
    "required",
    "allowed",
    "pattern",
    "min",
    "max",
    "secret",
)
_HEADER_HINT: Final = "the header is TOML in '#' comment lines between '# --- azrun ---' and '# --- end ---'"


def _suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else an empty string."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if name.lower() in lowered:
        return f" (did you mean '{lowered[name.lower()]}'?)"
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    """One declared parameter and the rules its value must follow."""

    name: str
    type: str = "string"
    description: str = ""
    default: ParamValue | None = None
    required: bool = False
    allowed: tuple[ParamValue, ...] = ()
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    secret: bool = False

    @property
    def env_var(self) -> str:
        """The environment variable a secret value may come from."""
        return f"AZRUN_PARAM_{self.name.upper()}"

    def _shown(self, raw: object) -> str:
        """How a value appears in an error: never a secret's."""
        return self.name if self.secret else f"{self.name}={raw!r}"

    def convert(self, raw: str) -> ParamValue:
        """Turn a command-line string into a checked value, or raise :class:`ConfigError`."""
        value: ParamValue
        if self.type == "int":
            if not _INT.match(raw.strip()):
                raise ConfigError(f"parameter {self._shown(raw)} is not an integer", hint=self._hint())
            value = int(raw.strip())
        elif self.type == "bool":
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                raise ConfigError(f"parameter {self._shown(raw)} is not a boolean", hint="use true or false")
            value = word in _TRUE
        else:
            value = raw
        self.check(value)
        return value

    def check(self, value: ParamValue) -> None:
        """Apply ``allowed``, ``pattern`` and ``min`` / ``max`` to a typed value."""
        if self.allowed and value not in self.allowed:
            choices = ", ".join(str(a) for a in self.allowed)
            raise ConfigError(
                f"parameter {self._shown(value)} is not one of: {choices}",
                hint=self._hint() or f"allowed values: {choices}",
            )
        if self.pattern is not None and isinstance(value, str) and not re.fullmatch(self.pattern, value):
            raise ConfigError(
                f"parameter {self._shown(value)} does not match {self.pattern}",
                hint=self._hint() or "the whole value must match the pattern",
            )
        if isinstance(value, int) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(f"parameter {self._shown(value)} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ConfigError(f"parameter {self._shown(value)} is above the maximum {self.maximum}")

    def render(self, value: ParamValue) -> str:
        """The string Azure receives: ints in decimal, booleans as ``true`` / ``false``."""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def _hint(self) -> str | None:
        return f"{self.name}: {self.description}" if self.description else None


@dataclass(frozen=True, slots=True)
class BoundParameters:
    """Checked values ready for a :class:`azrun.models.RunSpec`; protected values never in a repr."""

    parameters: tuple[tuple[str, str], ...] = ()
    protected: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def protected_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.protected)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parameters a script declares; an empty manifest accepts anything unchecked."""

    parameters: tuple[ParameterSpec, ...] = ()
    description: str = ""
    timeout_s: int | None = None
    origin: str = ""  # "header", "side file" or "" when the script declares nothing

    @property
    def present(self) -> bool:
        return bool(self.origin)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def parameter(self, name: str) -> ParameterSpec | None:
        return next((p for p in self.parameters if p.name == name), None)

    @classmethod
    def parse(
        cls, script_text: str, side_file_text: str | None = None, *, script_name: str = "the script"
    ) -> Manifest:
        """Read the header of ``script_text`` or the side file's TOML (not both)."""
        header = _extract_header(script_text, script_name)
        if header is not None and side_file_text is not None:
            raise ConfigError(
                f"{script_name} has both a manifest header and a {SIDE_FILE_SUFFIX} side file",
                hint="keep one of them",
            )
        if header is not None:
            return _from_toml(header, "header", script_name)
        if side_file_text is not None:
            return _from_toml(side_file_text, "side file", f"{script_name}{SIDE_FILE_SUFFIX}")
        return cls()

    @classmethod
    def for_script(cls, path: Path) -> Manifest:
        """The manifest of a script file: its header, or ``<script>.azrun.toml`` beside it."""
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            side = side_file_for(path)
            side_text = side.read_text(encoding="utf-8") if side.is_file() else None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check the path") from exc
        return cls.parse(text, side_text, script_name=path.name)

    def bind(
        self, cli_params: Mapping[str, str], *, secret_values: Mapping[str, str] | None = None
    ) -> BoundParameters:
        """Check every value and split them into plain and protected parameters.

        Args:
            cli_params: values from the command line (``--param name=value``). A secret
                parameter here is an error: argv is visible to every user of the machine.
            secret_values: values from anywhere else (``AZRUN_PARAM_*``, ``--param-file``, a
                prompt); accepted for any declared parameter, argv wins for non-secret ones.

        Raises:
            ConfigError: unknown, missing or invalid parameter, or a secret given on argv.
        """
        others = dict(secret_values or {})
        if not self.present:
            return BoundParameters(parameters=tuple(cli_params.items()), protected=tuple(others.items()))
        for name in [*cli_params, *others]:
            if self.parameter(name) is None:
                raise ConfigError(
                    f"unknown parameter '{name}'{_suggest(name, self.names)}",
                    hint=f"declared parameters: {', '.join(self.names) or '(none)'}",
                )
        plain: list[tuple[str, str]] = []
        protected: list[tuple[str, str]] = []
        for spec in self.parameters:
            if spec.secret and spec.name in cli_params:
                raise ConfigError(
                    f"parameter '{spec.name}' is secret and cannot be given on the command line",
                    hint=f"set {spec.env_var}, use --param-file, or leave it out to be prompted",
                )
            raw = cli_params.get(spec.name, others.get(spec.name))
            value = self._value(spec, raw)
            if value is not None:
                (protected if spec.secret else plain).append((spec.name, spec.render(value)))
        return BoundParameters(parameters=tuple(plain), protected=tuple(protected))

    @staticmethod
    def _value(spec: ParameterSpec, raw: str | None) -> ParamValue | None:
        if raw is not None:
            return spec.convert(raw)
        if spec.default is not None:
            return spec.default
        if spec.required:
            where = (
                f"set {spec.env_var}, use --param-file, or run interactively to be prompted"
                if spec.secret
                else f"pass --param {spec.name}=<value>"
            )
            raise ConfigError(f"missing required parameter '{spec.name}'", hint=where)
        return None

    def secrets_from_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Values of secret parameters found in ``AZRUN_PARAM_<NAME>`` variables."""
        return {p.name: environ[p.env_var] for p in self.parameters if p.secret and p.env_var in environ}

    def missing_secrets(self, provided: Mapping[str, str]) -> tuple[ParameterSpec, ...]:
        """Required secret parameters with no value yet: the ones to prompt for."""
        return tuple(
            p
            for p in self.parameters
            if p.secret and p.required and p.default is None and p.name not in provided
        )


def side_file_for(path: Path) -> Path:
    """``patch.sh`` -> ``patch.sh.azrun.toml`` in the same directory."""
    return path.with_name(path.name + SIDE_FILE_SUFFIX)


def parse_param_args(items: Sequence[str]) -> dict[str, str]:
    """``["kb=KB5030211", "reboot=true"]`` -> a dict; the value may contain ``=``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--param {name or item!r} is not NAME=VALUE", hint="e.g. --param kb=KB5030211")
        if name in out:
            raise ConfigError(f"parameter '{name}' given twice", hint="pass each --param once")
        out[name] = value
    return out


def read_param_file(path: Path) -> dict[str, str]:
    """A TOML file of ``name = value`` lines (strings, ints, booleans), for secrets and long lists."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read parameter file {path}: {exc.strerror}", hint="check the path"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message quotes no values, only a position.
        raise ConfigError(
            f"parameter file {path} is not valid TOML: {exc}", hint='write name = "value" lines'
        ) from exc
    out: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str | int):
            out[name] = str(value)
        else:
            raise ConfigError(
                f"parameter '{name}' in {path} is a {type(value).__name__}",
                hint="values must be strings, integers or booleans",
            )
    return out


def resolve_parameters(
    manifest: Manifest,
    *,
    argv_params: Sequence[str] = (),
    param_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[ParameterSpec], str] | None = None,
) -> BoundParameters:
    """Gather values from every source and bind them; what ``azrun run`` does before dispatch.

    Precedence: ``--param`` (non-secret only) > ``--param-file`` > ``AZRUN_PARAM_*``; then
    ``prompt`` is asked for each required secret still missing (pass ``None`` when there is no
    terminal, and a missing secret is reported instead). Without a manifest nothing is checked,
    and values from the file are sent as protected parameters: azrun cannot tell which are secret.
    """
    cli = parse_param_args(argv_params)
    others: dict[str, str] = manifest.secrets_from_env(environ or {})
    if param_file is not None:
        others.update(read_param_file(param_file))
    if prompt is not None:
        for spec in manifest.missing_secrets(others):
            others[spec.name] = prompt(spec)
    return manifest.bind(cli, secret_values=others)


# -- parsing ---------------------------------------------------------------------------------
def _extract_header(script_text: str, script_name: str) -> str | None:
    """The TOML between the markers with the comment prefix removed, or ``None``."""
    lines = script_text.splitlines()
    start = next((i for i, line in enumerate(lines) if _START.match(line)), None)
    if start is None:
        return None
    body: list[str] = []
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if _END.match(line):
            return "\n".join(body)
        if _START.match(line):
            raise ConfigError(
                f"{script_name} line {number}: a second '# --- azrun ---' marker", hint=_HEADER_HINT
            )
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            raise ConfigError(
                f"{script_name} line {number}: not a comment inside the azrun header", hint=_HEADER_HINT
            )
        text = stripped[1:]
        body.append(text[1:] if text.startswith(" ") else text)
    raise ConfigError(f"{script_name}: the azrun header has no '# --- end ---' line", hint=_HEADER_HINT)


def _from_toml(text: str, origin: str, where: str) -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"the azrun manifest in {where} is not valid TOML: {exc}", hint=_HEADER_HINT
        ) from exc
    _reject_unknown(data, _TOP_KEYS, where)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0):
        raise ConfigError(
            f"{where}: timeout must be a positive number of seconds", hint="e.g. timeout = 1800"
        )
    params = data.get("parameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ConfigError(f"{where}: parameters must be tables", hint="write [parameters.<name>] sections")
    specs = tuple(_spec(name, body, where) for name, body in params.items())
    _reject_case_clashes(specs, where)
    return Manifest(parameters=specs, description=description, timeout_s=timeout, origin=origin)


def _reject_unknown(data: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key '{key}'{_suggest(key, known)}", hint=f"known keys: {', '.join(known)}"
            )


def _reject_case_clashes(specs: Sequence[ParameterSpec], where: str) -> None:
    seen: dict[str, str] = {}
    for spec in specs:
        other = seen.setdefault(spec.name.upper(), spec.name)
        if other != spec.name:
            raise ConfigError(
                f"{where}: parameters '{other}' and '{spec.name}' differ only in case",
                hint="they would share the environment variable " + spec.env_var,
            )


def _spec(name: str, body: dict[str, Any], where: str) -> ParameterSpec:
    """Build and self-check one parameter: a bad manifest fails before any value is read."""
    at = f"{where}: parameter '{name}'"
    if not _NAME.match(name):
        raise ConfigError(f"{at}: not a valid name", hint="letters, digits and _, not starting with a digit")
    _reject_unknown(body, _PARAM_KEYS, at)
    kind = body.get("type", "string")
    if kind not in _TYPES:
        raise ConfigError(
            f"{at}: unknown type {kind!r}{_suggest(str(kind), _TYPES)}", hint="types: string, int, bool"
        )
    spec = ParameterSpec(
        name=name,
        type=kind,
        description=_typed(body, "description", str, at) or "",
        required=bool(_typed(body, "required", bool, at)),
        secret=bool(_typed(body, "secret", bool, at)),
        allowed=_allowed(body, kind, at),
        pattern=_pattern(body, kind, at),
        minimum=_bound(body, "min", kind, at),
        maximum=_bound(body, "max", kind, at),
    )
    if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
        raise ConfigError(f"{at}: min is greater than max")
    return _with_default(spec, body.get("default"), at)


def _typed(body: Mapping[str, Any], key: str, kind: type, at: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{at}: {key} must be a {kind.__name__}")
    return value


def _matches_type(value: object, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


def _allowed(body: Mapping[str, Any], kind: str, at: str) -> tuple[ParamValue, ...]:
    allowed = body.get("allowed")
    if allowed is None:
        return ()
    if kind == "bool":
        raise ConfigError(f"{at}: allowed makes no sense for a bool", hint="drop 'allowed'")
    if not isinstance(allowed, list) or not allowed or not all(_matches_type(v, kind) for v in allowed):
        raise ConfigError(f"{at}: allowed must be a non-empty list of {kind} values")
    return tuple(allowed)


def _pattern(body: Mapping[str, Any], kind: str, at: str) -> str | None:
    pattern = body.get("pattern")
    if pattern is None:
        return None
    if kind != "string" or not isinstance(pattern, str):
        raise ConfigError(f"{at}: pattern is for string parameters and must be a string")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{at}: pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    return pattern


def _bound(body: Mapping[str, Any], key: str, kind: str, at: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if kind != "int" or not _matches_type(value, "int"):
        raise ConfigError(f"{at}: {key} is for int parameters and must be an integer")
    return int(value)


def _with_default(spec: ParameterSpec, default: object, at: str) -> ParameterSpec:
    if default is None:
        return spec
    if spec.secret:
        raise ConfigError(
            f"{at}: a secret parameter cannot have a default", hint="secrets never live in scripts"
        )
    if spec.required:
        raise ConfigError(
            f"{at}: 'required = true' and a default cannot go together", hint="drop one of them"
        )
    if not _matches_type(default, spec.type):
        raise ConfigError(f"{at}: default must be of type {spec.type}")
    assert isinstance(default, str | int)  # narrowed by _matches_type (bool is an int)
    try:
        spec.check(default)
    except ConfigError as exc:
        raise ConfigError(f"{at}: the default is invalid: {exc.message}") from exc
    return replace(spec, default=default)
