"""``sidrec preflight``: each check passes or fails for the reason it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sidrec.app.preflight as pf
from sidrec.app.cli import main
from sidrec.core.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _checks(tmp_path: Path, *overrides: str) -> dict[str, pf.Check]:
    cfg = load_config(REPO / "configs" / "demo.yaml", [f"output_root={tmp_path}", *overrides])
    return {c.name: c for c in pf.preflight(cfg)}


def test_the_demo_profile_passes_on_this_machine(tmp_path: Path) -> None:
    checks = _checks(tmp_path / "not" / "yet")  # the nearest existing folder is measured
    assert {c.status for c in checks.values()} == {"ok"}
    assert set(checks) == {"python", "disk", "gpu"}  # offline models, no download
    assert str(tmp_path) in checks["disk"].detail


def test_each_failure_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _checks(tmp_path, "preflight.min_free_gb=1000000")["disk"].status == "fail"
    if not torch.cuda.is_available():
        gpu = _checks(tmp_path, "preflight.min_gpu_memory_gb=22")["gpu"]
        assert gpu.status == "fail" and "needs 22 GB" in gpu.detail
    monkeypatch.setattr(pf, "_reachable", lambda url: False)
    hub = _checks(tmp_path, "model.name_or_path=someone/not-cached-anywhere")["hub"]
    assert hub.status == "fail" and "someone/not-cached-anywhere" in hub.detail
    assert "--profile demo" in hub.detail and "all-minilm-l6-v2" in hub.detail
    raw = tmp_path / "raw"
    raw.mkdir()
    a18 = [
        "data.source=amazon18",
        f"data.amazon18.raw_dir={raw}",
        "data.amazon18.download=true",
    ]
    download = _checks(tmp_path, *a18)["data download"]
    assert download.status == "fail" and "Industrial_and_Scientific.json.gz" in download.detail
    # with the raw files there, nothing needs downloading
    (raw / "Industrial_and_Scientific.json.gz").write_bytes(b"")
    (raw / "meta_Industrial_and_Scientific.json.gz").write_bytes(b"")
    assert "data download" not in _checks(tmp_path, *a18)


def test_the_command_exits_2_on_a_failed_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["preflight", "--config", str(REPO / "configs" / "demo.yaml"), f"output_root={tmp_path}"]
    assert main(args) == 0
    assert "ok    python" in capsys.readouterr().out
    assert main([*args, "preflight.min_free_gb=1000000"]) == 2
    assert "preflight failed: disk" in capsys.readouterr().err
