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


def test_logs_help_says_the_two_streams_share_no_clock(capsys: pytest.CaptureFixture[str]) -> None:
    from azrun.cli import main

    assert main(["logs", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "no shared clock" in text and "(stdout) or (stderr)" in text and "--idle-timeout" in text


def test_namesakes_get_distinct_stable_prefixes() -> None:
    from azrun.cli._print import Labels

    a, b = _target("vm-x", rg="rg-a"), _target("vm-x", rg="rg-b")
    c = _target("vm-x", rg="RG-A", sub="t")  # same rg name in another subscription
    upfront = Labels([a, b, _target("vm-y")])
    assert (upfront(a), upfront(b), upfront(_target("vm-y"))) == ("rg-a/vm-x", "rg-b/vm-x", "vm-y")
    note = io.StringIO()
    lazy = Labels(note=note)
    assert lazy(a) == "vm-x" and lazy(b) == "rg-b/vm-x" and lazy(a) == "vm-x"  # never changes once given
    assert lazy(c) == "t/RG-A/vm-x" and note.getvalue().count("more than one machine is named vm-x") == 2
    # the same machine with an upper-cased resource group (a Flexible member) is not a namesake
    same = _target("vm-x", rg="RG-A")
    assert lazy(
        Target(**{**{f: getattr(same, f) for f in same.__dataclass_fields__}, "resource_id": a.resource_id.upper()})
    ) == "vm-x"
    printer = StreamPrinter(io.StringIO(), labels=upfront, tag_stdout=True)
    assert printer.format(a, "stdout", "hi") == "[rg-a/vm-x] (stdout) hi"
    assert printer.format(b, "azrun", "--- marker ---") == "[rg-b/vm-x] --- marker ---"
