import json
import subprocess
import sys
from pathlib import Path

import pytest

import sidrec.core.dataset as dataset_mod
from sidrec.app.cli import main
from sidrec.app.pipeline import StageRun, format_summary, run_pipeline
from sidrec.core.config import load_config
from sidrec.core.errors import SidrecError
from sidrec.core.io import is_complete

SMALL = [
    "data.synth.n_items=200",
    "data.synth.n_users=150",
    "embed.model=all-minilm-l6-v2",
    "embed.max_seq_length=32",
    "sid.codebook_size=16",
]


def test_data_synth_command_writes_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d"
    assert main(["data", "synth", "--out", str(out), "--n-items", "200", "--n-users", "100"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["items"] == 200 and counts["users"] == 100
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"] == {"protocol": "loo", "max_history": 20}
    assert manifest["seed"] == 42 and (out / "config.yaml").exists()
    # re-running a complete output needs --overwrite
    assert main(["data", "synth", "--out", str(out), "--n-items", "200", "--n-users", "100"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_user_errors_print_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "stats", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sidrec: error: ") and "dataset directory does not exist" in err
    assert "Traceback" not in err


def test_pipeline_resumes_and_rebuilds_on_change(tmp_path: Path) -> None:
    cfg = load_config(None, [f"output_root={tmp_path}", *SMALL])
    logs: list[str] = []
    outputs = run_pipeline(cfg, log=logs.append, until="sid")
    assert list(outputs) == ["data", "embeddings", "sid"]
    assert all(is_complete(p) for p in outputs.values())
    assert [m.split()[1] for m in logs if m.startswith("[")] == ["building"] * 3
    logs.clear()
    run_pipeline(cfg, log=logs.append, until="sid")
    assert [m.split()[1] for m in logs if m.startswith("[")] == ["complete"] * 3
    logs.clear()
    # a run by an older sidrec, which lacked a key that now has a default, is still unchanged
    stored = outputs["sid"] / "manifest.json"
    old = json.loads(stored.read_text())
    del old["pipeline"]["sid"]["kmeans_iters"]
    stored.write_text(json.dumps(old))
    run_pipeline(cfg, log=logs.append, until="sid")
    assert [m.split()[1] for m in logs if m.startswith("[")] == ["complete"] * 3
    logs.clear()
    # a changed SID setting rebuilds only the SID stage
    run_pipeline(
        load_config(None, [f"output_root={tmp_path}", *SMALL, "sid.levels=2"]),
        log=logs.append,
        until="sid",
    )
    assert [m.split()[1] for m in logs if m.startswith("[")] == ["complete", "complete", "building"]
    logs.clear()
    # a changed seed rebuilds the data and everything after it
    run_pipeline(
        load_config(None, [f"output_root={tmp_path}", *SMALL, "seed=1"]),
        log=logs.append,
        until="sid",
    )
    assert [m.split()[1] for m in logs if m.startswith("[")] == ["building"] * 3
    logs.clear()
    # each stage judges its own output: an embedding directory rebuilt by hand makes the SIDs
    # built from the old one out of date, though no SID setting changed
    cfg1 = load_config(None, [f"output_root={tmp_path}", *SMALL, "seed=1"])
    from sidrec.rq.embed import embed_dataset

    embed_dataset(outputs["data"], outputs["embeddings"], cfg1, overwrite=True)
    run_pipeline(cfg1, log=logs.append, until="sid")
    assert [m.split()[1] for m in logs if m.startswith("[")] == [
        "complete",
        "building",  # made outside the pipeline: nothing says with which settings
        "building",
    ]


def test_pipeline_bounds_choices_and_summary(tmp_path: Path) -> None:
    cfg = load_config(None, [f"output_root={tmp_path}", *SMALL])
    with pytest.raises(SidrecError, match="earlier.*--from"):
        run_pipeline(cfg, log=lambda _: None, start="sid", until="sid")
    with pytest.raises(SidrecError, match="--from sid comes after --to data"):
        run_pipeline(cfg, log=lambda _: None, start="sid", until="data")
    with pytest.raises(SidrecError, match="--to must be one of"):
        run_pipeline(cfg, log=lambda _: None, until="sids")
    asked: list[tuple[str, str]] = []

    def choose(stage: str, state: str, out: Path) -> str:
        asked.append((stage, state))
        return {"data": "run", "embeddings": "run", "sid": "stop"}[stage]

    runs: list[StageRun] = []
    outputs = run_pipeline(cfg, log=lambda _: None, choose=choose, runs=runs)
    assert asked == [("data", "stale"), ("embeddings", "stale"), ("sid", "stale")]
    assert list(outputs) == ["data", "embeddings"] and not (tmp_path / "demo" / "sid").exists()
    assert [(r.name, r.action) for r in runs] == [("data", "built"), ("embeddings", "built")]
    # --from sid: the earlier stages are used as they are, even with other settings
    other = load_config(None, [f"output_root={tmp_path}", *SMALL, "embed.max_seq_length=16"])
    logs: list[str] = []
    runs = []
    run_pipeline(other, log=logs.append, start="sid", until="sid", runs=runs)
    assert [m for m in logs if m.startswith("[embeddings]")] == [
        f"[embeddings] used as it is: {tmp_path / 'demo' / 'embeddings'}"
    ]
    assert [(r.name, r.action) for r in runs] == [
        ("data", "reused"),
        ("embeddings", "reused"),
        ("sid", "built"),
    ]
    assert runs[0].seconds is not None  # the recorded run's time
    # skip leaves a stage alone; an unknown answer is refused
    runs = []
    run_pipeline(cfg, log=lambda _: None, until="sid", choose=lambda *a: "skip", runs=runs)
    assert [r.action for r in runs] == ["skipped"] * 3
    with pytest.raises(SidrecError, match="one of"):
        run_pipeline(cfg, log=lambda _: None, choose=lambda *a: "maybe")
    table = format_summary(runs)
    assert table.splitlines()[0].split() == ["stage", "did", "seconds", "output"]
    assert "skipped" in table and "model" not in table  # no evaluation, no metrics table


def test_interrupted_stage_leaves_nothing_complete_and_reruns_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(None, [f"output_root={tmp_path}", *SMALL])

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_mod.Run, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, log=lambda _: None, until="sid")
    data_dir = tmp_path / "demo" / "data"
    assert not data_dir.exists()
    monkeypatch.undo()
    logs: list[str] = []
    run_pipeline(cfg, log=logs.append, until="sid")
    assert logs[0].startswith("[data] building") and is_complete(data_dir)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir() if p.suffix != ".lock") == [
        "data",
        "embeddings",
        "sid",
    ]


def test_installed_entry_point() -> None:
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "sidrec"), "data", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in (
        "synth",
        "amazon18",
        "import-minionerec",
        "import-letter",
        "export-minionerec",
        "stats",
    ):
        assert cmd in done.stdout
