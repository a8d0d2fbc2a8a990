import json
import re
from pathlib import Path

import pytest

from sidrec.errors import SidrecError
from sidrec.io import atomic_dir, is_complete
from sidrec.manifest import Run


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
