"""The one way to load config: packaged defaults <- a YAML profile <- ``key=value`` overrides.

Every key must exist in ``defaults.yaml``; an unknown key is rejected with the nearest known name,
and a value must have the type of its default (any type where the default is null).
"""

from __future__ import annotations

import argparse
import copy
import difflib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from sidrec.core.errors import InputError, SidrecError, require_file

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
# keys that also take a value of another type than their default's
ALSO_ACCEPTS: dict[str, type] = {"sft.lora.target_modules": list}


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))


def defaults() -> dict[str, Any]:
    """A fresh copy of the packaged defaults."""
    return copy.deepcopy(_defaults())


def _flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in dict.items(tree):
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys.extend(_flat_keys(v, f"{prefix}{k}."))
    return keys


def _unknown(key: str, source: str) -> SidrecError:
    near = difflib.get_close_matches(key, _flat_keys(_defaults()), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return SidrecError(f"{source}: unknown config key {key!r}{hint}")


def _typed(key: str, default: Any, value: Any, source: str) -> Any:
    if default is None or value is None:
        return value
    if key in ALSO_ACCEPTS and isinstance(value, ALSO_ACCEPTS[key]):
        return value
    ok = isinstance(value, bool) == isinstance(default, bool) and (
        isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
    )
    if not ok:
        raise SidrecError(
            f"{source}: {key} expects {type(default).__name__} (like {default!r}), got {value!r}"
        )
    return float(value) if isinstance(default, float) else value


def _merge(base: dict[str, Any], new: dict[str, Any], prefix: str, source: str) -> None:
    for k, v in new.items():
        key = prefix + str(k)
        if k not in base:
            raise _unknown(key, source)
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise SidrecError(f"{source}: {key} is a section; expected a mapping, got {v!r}")
            _merge(base[k], v, key + ".", source)
        else:
            base[k] = _typed(key, base[k], v, source)


def _read_profile(path: str | Path) -> dict[str, Any]:
    path = require_file(path, "config file")
    try:
        profile = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(
            path,
            f"invalid YAML: {getattr(e, 'problem', e)}",
            row=mark.line + 1 if mark else None,
            row_label="line",
        ) from None
    if not isinstance(profile, dict):
        raise InputError(path, "expected a YAML mapping of config keys")
    return profile


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    overlays: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """Resolve a config.

    Args:
        path: a YAML profile (e.g. ``configs/demo.yaml``), or None for the defaults alone.
        overrides: ``dotted.key=value`` strings; values are parsed as YAML (``3``, ``true``).
        overlays: YAML files applied over the profile, in order, before the overrides (e.g.
            what ``sidrec suggest`` writes).

    Example:
        >>> load_config(None, ["data.synth.n_items=50"])["data"]["synth"]["n_items"]
        50
    """
    cfg = defaults()
    for layer in ([path] if path is not None else []) + list(overlays):
        _merge(cfg, _read_profile(layer), "", str(layer))
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise SidrecError(f"override {item!r}: expected key=value, e.g. seed=7")
        *parents, leaf = key.split(".")
        nested: dict[str, Any] = {leaf: yaml.safe_load(raw)}
        for p in reversed(parents):
            nested = {p: nested}
        _merge(cfg, nested, "", f"override {item!r}")
    return cfg


OVERWRITE_HELP = "replace a complete output"


def add_config_args(
    p: argparse.ArgumentParser,
    profile: str,
    required: bool = False,
    overrides: bool = True,
    overwrite: str | None = None,
) -> None:
    """The flags the commands that read config share: ``--config`` (``profile`` says what the
    profile supplies), repeatable ``--overlay FILE``, ``key=value`` overrides (unless
    ``overrides`` is False) and, with its help text, ``--overwrite``. :func:`command_config`
    reads them."""
    if overwrite is not None:
        p.add_argument("--overwrite", action="store_true", help=overwrite)
    p.add_argument("--config", type=Path, required=required, help=profile)
    p.add_argument(
        "--overlay",
        type=Path,
        action="append",
        metavar="FILE",
        help="config applied over --config, e.g. a `sidrec suggest` output (repeatable)",
    )
    if overrides:
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def command_config(a: Any, overrides: Iterable[str] | None = None) -> dict[str, Any]:
    """The config of a parsed ``sidrec`` command: its ``--config`` profile, its ``--overlay``
    files, then ``overrides`` (default: its ``key=value`` arguments)."""
    given = a.overrides if overrides is None else overrides
    return load_config(a.config, given, a.overlay or ())


def stage_path(cfg: dict[str, Any], name: str) -> Path:
    """Where stage ``name`` reads or writes: ``paths.<name>``, or by default
    ``<output_root>/<run_name>/<name>``."""
    given = cfg["paths"].get(name)
    return Path(given).expanduser() if given else Path(cfg["output_root"]) / cfg["run_name"] / name


def dotted(cfg: dict[str, Any], key: str) -> Any:
    """``cfg[a][b]`` for the dotted ``key`` ``a.b``; None where it does not exist."""
    for part in key.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


FAMILIES = ("lm", "tree")


def model_family(cfg: dict[str, Any]) -> str:
    """``model.family``: ``lm`` (a causal LM decoded by constrained beam search) or ``tree``
    (:mod:`sidrec.core.tree_model`); anything else is refused."""
    family = cfg["model"]["family"]
    if family not in FAMILIES:
        raise SidrecError(f"model.family must be one of {FAMILIES}, got {family!r}")
    return family


def model_reads_text(cfg: dict[str, Any]) -> bool:
    """Whether the configured model's vocabulary holds words, so title tasks can train (not
    the tree family, nor ``tiny-qwen2`` with ``model.tiny_qwen2.vocab=sid``: SID tokens only)."""
    m = cfg["model"]
    sid_only = m["name_or_path"] == "tiny-qwen2" and m["tiny_qwen2"]["vocab"] == "sid"
    return model_family(cfg) == "lm" and not sid_only


def leaf_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of every value in ``tree`` that is not itself a section."""
    out = []
    for k, v in dict.items(tree):
        if isinstance(v, dict):
            out.extend(leaf_keys(v, f"{prefix}{k}."))
        else:
            out.append(prefix + str(k))
    return out


def plain(tree: Any) -> Any:
    """``tree`` as plain dicts and lists (a :class:`ReadTracker` unwrapped, nothing recorded)."""
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in dict.items(tree)}
    if isinstance(tree, list):
        return [plain(v) for v in tree]
    return tree


class ReadTracker(dict):
    """A resolved config that records which keys the code reads (``reads``: dotted names).

    Reading a value records its key; iterating a section (``dict(s)``, ``**s``, ``s.items()``)
    records every key under it. It backs the check that every key in ``defaults.yaml`` is read
    by the code that owns it; records written to disk go through :func:`plain`.
    """

    def __init__(self, tree: dict[str, Any], prefix: str = "", reads: set[str] | None = None):
        super().__init__(tree)
        self.prefix = prefix
        self.reads: set[str] = set() if reads is None else reads
        for k, v in dict.items(self):
            if isinstance(v, dict):
                dict.__setitem__(self, k, ReadTracker(v, f"{prefix}{k}.", self.reads))

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        if not isinstance(value, dict):
            self.reads.add(self.prefix + str(key))
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def _read_all(self) -> None:
        self.reads.update(leaf_keys(self, self.prefix))

    def __iter__(self):  # noqa: ANN204
        self._read_all()
        return dict.__iter__(self)

    def keys(self):  # noqa: ANN201
        self._read_all()
        return dict.keys(self)

    def items(self):  # noqa: ANN201
        self._read_all()
        return dict.items(self)

    def values(self):  # noqa: ANN201
        self._read_all()
        return dict.values(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadTracker:
        """A copy that records nothing by being made, and whose reads count as this one's
        (``copy.deepcopy`` would otherwise iterate every section and mark every key read)."""
        return ReadTracker(plain(self), self.prefix, self.reads)


def model_config(
    model: Path, profile: Path | None, overrides: list[str], overlays: list[Path] | None = None
) -> dict[str, Any]:
    """The config of a command over a trained model: ``profile``, or by default the config the
    model was trained with (its ``config.yaml``; its ``serve`` and ``update`` sections are
    today's defaults, not what was recorded), then ``overlays`` and ``overrides``. Either way
    ``embed`` is the model's own, so new items are embedded as its SIDs were."""
    own = Path(model) / "config.yaml"
    if profile is not None or not own.exists():
        cfg = load_config(profile, overrides, overlays or ())
    else:
        cfg = load_config(own, overrides, overlays or ())
        fresh = load_config(None, overrides, overlays or ())
        cfg["serve"], cfg["update"] = fresh["serve"], fresh["update"]
    if own.exists():
        cfg["embed"] = load_config(own)["embed"]
    return cfg
