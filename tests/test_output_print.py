"""The CLI's line printers: ``[target] line`` and JSON lines (no I/O)."""

from __future__ import annotations

import io
import json

import pytest

from azrun.cli._print import JsonPrinter, OutputMode, StreamPrinter, make_sink
from azrun.models import Target, TargetKind


def _target(name: str = "vm-web-01", rg: str = "rg", sub: str = "s") -> Target:
    return Target(
        resource_id=f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}",
        name=name, kind=TargetKind.VM, subscription_id=sub, resource_group=rg, location="westeurope",
        os="linux", power_state="running", vm_name=name,
    )  # fmt: skip


def test_stream_printer_plain() -> None:
    out = io.StringIO()
    printer = StreamPrinter(out)
    printer(_target(), "stdout", "hello")
    printer(_target(), "stderr", "boom")
    assert out.getvalue() == "[vm-web-01] hello\n[vm-web-01] (stderr) boom\n"


def test_stream_printer_shows_the_last_state_of_redrawn_lines_and_resets_colours() -> None:
    printer = StreamPrinter(io.StringIO())
    assert printer.format(_target(), "stdout", "10%\r50%\r100%") == "[vm-web-01] 100%"
    assert printer.format(_target(), "stdout", "\x1b[32mgreen") == "[vm-web-01] \x1b[32mgreen\x1b[0m"


def test_stream_printer_colours_when_asked() -> None:
    out = io.StringIO()
    StreamPrinter(out, color=True)(_target(), "stderr", "boom")
    text = out.getvalue()
    assert "\x1b[" in text and "[vm-web-01]" in text and text.endswith("\x1b[0m\n")
    a, b = StreamPrinter(color=True), _target("vm-db-02")
    assert a.format(_target(), "stdout", "x", color=True) != a.format(b, "stdout", "x", color=True)


def test_json_printer() -> None:
    out = io.StringIO()
    JsonPrinter(out)(_target(), "stderr", 'ünï "q"')
    assert json.loads(out.getvalue()) == {
        "target": "vm-web-01", "id": _target().resource_id, "stream": "stderr", "line": 'ünï "q"',
    }


def test_make_sink_by_mode() -> None:
    assert isinstance(make_sink("stream"), StreamPrinter)
    assert isinstance(make_sink(OutputMode.JSON), JsonPrinter)
    assert make_sink("summary") is None and make_sink("quiet") is None
    with pytest.raises(ValueError):
        make_sink("loud")
