import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sidrec.core.errors import SidrecError
from sidrec.core.io import atomic_dir, is_complete, read_json, write_json
from sidrec.core.manifest import Run


def _finish(tmp: Path) -> None:
    (tmp / "x.txt").write_text("x")
    Run("test", {"a": 1}, {}, seed=0).finish(tmp, {"n": 1})


def test_failed_block_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".out.lock"]  # the lock file stays


def test_complete_output_has_config_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        _finish(tmp)
    assert is_complete(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "test" and manifest["counts"] == {"n": 1}
    assert manifest["seed"] == 0 and manifest["sidrec_version"]
    assert manifest["started"] <= manifest["ended"]
    if (Path(__file__).parents[1] / ".git").exists():  # a checkout records its commit
        assert re.fullmatch(r"[0-9a-f]{40}", manifest["git_commit"])
    assert (out / "config.yaml").read_text().strip() == "a: 1"


def test_stale_temporary_dirs_are_removed_on_rerun(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = tmp_path / ".out.tmp-99999"
    stale.mkdir()
    (stale / "partial").write_text("p")
    with atomic_dir(out) as tmp:
        _finish(tmp)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_complete_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        _finish(tmp)
    with pytest.raises(SidrecError, match="already complete; pass --overwrite"):
        with atomic_dir(out):
            pass
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "y.txt").write_text("y")
        Run("test2", {}, {}, seed=None).finish(tmp, {})
    assert (out / "y.txt").exists() and not (out / "x.txt").exists()


def test_foreign_directory_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(SidrecError, match="not a sidrec output"):
        with atomic_dir(out, overwrite=True):
            pass
    assert (out / "notes.txt").read_text() == "precious"


def test_a_live_writer_holds_the_output(tmp_path: Path) -> None:
    """While another process writes an output (its lock held), a second writer is refused at
    once and the first one's temporary directory is left alone; once that process is gone
    (killed: the OS frees its lock) the output can be written."""
    out = tmp_path / "out"
    live = tmp_path / ".out.tmp-live"
    live.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sidrec.core.io import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(SidrecError, match="another sidrec process is writing it"):
        with atomic_dir(out):
            pass
    assert live.is_dir()  # a live run's files are never cleaned up
    holder.kill()
    holder.wait()
    with atomic_dir(out) as tmp:
        _finish(tmp)
    assert is_complete(out) and not live.exists()


def test_overwrite_swaps_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        _finish(tmp)
    seen = []
    real = os.rename

    def watch(a: object, b: object) -> None:  # a two-rename replace would move out away first
        seen.append((Path(a).name, Path(b).name))
        real(a, b)

    monkeypatch.setattr(os, "rename", watch)
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "y.txt").write_text("y")
        Run("test2", {}, {}, seed=None).finish(tmp, {})
    assert seen == [] and (out / "y.txt").exists() and not (out / "x.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_published_files_are_flushed_to_disk_before_they_appear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what a rename publishes must survive a power loss: every file and folder is fsynced
    # before the rename, and the parent folder's entry after it
    synced: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(b"x" * 10)
        write_json(tmp / "manifest.json", {"a": 1})
        synced.clear()
    names = [Path(p).name for p in synced]
    assert {"weights.bin", "manifest.json", "sub"} <= set(names)
    assert synced[-1] == str(tmp_path)  # the parent's entry, after the rename
    synced.clear()
    write_json(tmp_path / "state.json", {"b": 2})
    assert len(synced) == 2 and synced[1] == str(tmp_path)
    assert Path(synced[0]).name.startswith("state.json.") and synced[0].endswith(".tmp")
    assert not list(tmp_path.glob("*.tmp"))  # renamed into place
    assert read_json(tmp_path / "state.json") == {"b": 2}
