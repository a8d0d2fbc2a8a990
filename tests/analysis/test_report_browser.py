"""``report.html`` in a real browser: headless Chromium (Debian's package, installed here when
missing and this is root) loads the page and every chart decodes (``make test-browser``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sidrec.analysis.analyze import analyze
from sidrec.analysis.plots import PLOTS
from sidrec.evaluate.generative import evaluate_model

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and this is not a root Debian machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=True, capture_output=True
    )
    return shutil.which("chromium") or pytest.fail("apt-get installed no chromium binary")


@pytest.mark.browser
def test_report_html_loads_every_chart(tiny_model: dict, tmp_path: Path) -> None:
    browser = _chromium()
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
