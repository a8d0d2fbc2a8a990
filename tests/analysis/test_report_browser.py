"""``report.html`` in a real browser: headless Chromium (Debian's package, installed here when
missing and this is root) loads the page and every chart decodes (``make test-browser``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import BROWSER_FLAGS as FLAGS
from conftest import chromium

from sidrec.analysis.analyze import analyze
from sidrec.analysis.plots import PLOTS
from sidrec.evaluate.generative import evaluate_model


@pytest.mark.browser
def test_report_html_loads_every_chart(tiny_model: dict, tmp_path: Path) -> None:
    browser = chromium()
    evaluation = tmp_path / "evaluate"
    evaluate_model(tiny_model["model"], tiny_model["data"], None, evaluation, tiny_model["cfg"])
    analyze(evaluation, tmp_path / "analysis")
    page = (tmp_path / "analysis" / "report.html").resolve()
    profile = ["--user-data-dir=" + str(tmp_path / "profile"), "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [browser, *FLAGS, *profile, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-charts="(\d+)/(\d+)"', dom.stdout)
    assert found, dom.stdout[:2000]
    assert found.groups() == (str(len(PLOTS)), str(len(PLOTS)))
    assert f"{len(PLOTS)} of {len(PLOTS)} charts loaded" in dom.stdout
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            browser,
            *FLAGS,
            *profile,
            f"--screenshot={shot}",
            "--window-size=1280,3000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG", done.stderr[-2000:]
