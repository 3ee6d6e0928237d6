"""A run report in a real browser: headless Chromium (Debian's package, installed by
``scripts/setup-browser`` when missing) opens the report of a run on the local Azure with mixed
states and checks what a person sees. A screenshot is kept under ``test-artifacts/``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from report_support import make_record, make_run, make_target

from azrun.fleet import Fleet, FleetOptions, PollPolicy
from azrun.models import RunSpec, TargetState
from azrun.report import acollect_report, render_html
from azrun.targets import Selector

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SECRET = "s3cr3t-Value-9f2c41"
SCRIPT = """h=$(hostname)
echo "hello from $h"
echo "token is $TOKEN"
seq 1 50
case "$h" in *02) echo "disk check failed on $h" >&2; exit 3;; esac
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path("/usr/bin/chromium").exists() or not Path("/usr/bin/chromedriver").exists():
        subprocess.run([str(ROOT / "scripts" / "setup-browser")], check=True, timeout=900)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


async def _run_and_report(env: dict[str, str], state_dir: Path) -> tuple[str, str, dict[str, TargetState]]:
    from azrun.clients import ClientFactory
    from azrun.output import OutputStore

    factory = ClientFactory.from_env()
    store = await OutputStore.open(container_url=env["AZRUN_OUTPUT_CONTAINER"], factory=factory,
                                   connection_string=env["AZRUN_STORAGE_CONNECTION_STRING"])
    spec = RunSpec(script=SCRIPT, script_name="check.sh", protected_parameters=(("TOKEN", SECRET),), timeout_s=60)
    try:
        async with Fleet(factory=factory, state_dir=state_dir, output=store,
                         default_subscriptions=(env["AZURE_SUBSCRIPTION_ID"],)) as fleet:
            result = await fleet.run(
                Selector.from_options(tags=["role=web"]), spec,
                options=FleetOptions.make(max_concurrency=2, max_errors=10,
                                          poll=PollPolicy(min_first_s=0.3, initial_guess_s=0.5, max_interval_s=1.0)),
            )
            # the default mask: the run's own fingerprints from the ledger (no secret in hand)
            data = await acollect_report(
                fleet.ledger, result.run_id, reader=lambda url: store.read_name(store.name_from_url(url)),
            )
    finally:
        await store.aclose()
        await factory.aclose()
    return result.run_id, render_html(data), {r.target.name: r.state for r in result.results}


async def test_a_person_sees_counts_bars_filters_and_output(
    local_azure: Any, azure_env: Callable[[Any], dict[str, str]], tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    run_id, page, states = await _run_and_report(azure_env(local_azure), tmp_path / "state")
    assert SECRET not in page, "a secret the script echoed reached the report"
    failed = sorted(name for name, s in states.items() if s is TargetState.FAILED)
    assert failed and any(s is TargetState.SUCCEEDED for s in states.values())
    assert any(s is TargetState.SKIPPED for s in states.values())

    path = tmp_path / "report.html"
    (ARTIFACTS / "report-mixed-states.html").parent.mkdir(exist_ok=True)
    (ARTIFACTS / "report-mixed-states.html").write_text(page, encoding="utf-8")
    path.write_text(page, encoding="utf-8")
    browser.get(path.as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")

    counts = {b.get_attribute("data-state"): int(b.find_element(By.CLASS_NAME, "n").text)
              for b in browser.find_elements(By.CSS_SELECTOR, "#counts .count")}
    expected: dict[str, int] = {}
    for s in states.values():
        expected[s.value] = expected.get(s.value, 0) + 1
    assert counts == expected
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline g.bar")) == len(states)
    assert browser.find_element(By.ID, "run-id").text == run_id

    Select(browser.find_element(By.ID, "state-filter")).select_by_value("Failed")
    rows = browser.find_elements(By.CSS_SELECTOR, "#targets tbody tr.target")
    assert sorted(r.find_element(By.CLASS_NAME, "name").text for r in rows) == failed
    assert {r.get_attribute("data-state") for r in rows} == {"Failed"}

    rows[0].click()
    out = browser.find_element(By.CSS_SELECTOR, "#targets tbody tr.output pre.stdout")
    assert f"hello from {failed[0]}" in out.text and "\n50" in out.text and SECRET not in out.text
    err = browser.find_element(By.CSS_SELECTOR, "#targets tbody tr.output pre.stderr")
    assert f"disk check failed on {failed[0]}" in err.text

    # the header and the throttle section: who ran it, where, and what Azure was asked
    summary = dict(zip([e.text for e in browser.find_elements(By.CSS_SELECTOR, "#summary dt")],
                       [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#summary dd")], strict=True))
    import socket

    assert socket.gethostname() in summary["ran by"] and "identity" in summary["ran by"]
    assert summary["waves"] == "none" and "check.sh" in summary["script"] and "TOKEN=****" in summary["parameters"]
    throttle = dict(zip([e.text for e in browser.find_elements(By.CSS_SELECTOR, "#throttle dt")],
                        [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#throttle dd")], strict=True))
    assert int(throttle["ARM requests"]) >= 2 * len(states) - 1  # a PUT and a GET per dispatched target at least
    assert "429 answers" in throttle and "time waiting for buckets" in throttle

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report-mixed-states.png"))
    assert SECRET not in browser.page_source


def test_a_thousand_targets_render_fast_and_stay_small(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    states = [TargetState.SUCCEEDED] * 950 + [TargetState.FAILED] * 30 + [TargetState.TIMED_OUT] * 20
    records = [
        make_record(i, make_target(f"vm-{i:04d}", rg=f"rg-{i % 7}"), s, exit_code=0 if s is TargetState.SUCCEEDED else None,
                dispatched=i * 0.1, started=i * 0.1 + 8, ended=i * 0.1 + 20 + (i % 13), stdout="")
        for i, s in enumerate(states)
    ]
    from azrun.report import build_report_data

    page = render_html(build_report_data(make_run(), records))
    path = tmp_path / "big.html"
    path.write_text(page, encoding="utf-8")
    size = path.stat().st_size
    begin = time.perf_counter()
    browser.get(path.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    seconds = time.perf_counter() - begin
    bars = len(browser.find_elements(By.CSS_SELECTOR, "#timeline g.bar"))
    print(f"1,000-target report: {size / 1024:.0f} KiB, rendered in {seconds:.2f} s")
    assert bars == 1000
    assert size < 1_000_000, f"{size} bytes"
    assert seconds < 10, f"rendered in {seconds:.1f} s"
