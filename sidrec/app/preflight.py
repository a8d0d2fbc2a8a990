"""``sidrec preflight``: what a profile needs, checked before any work starts.

Python version, free disk under ``output_root`` (``preflight.min_free_gb``), a GPU and its
memory (``preflight.min_gpu_memory_gb``; 0 = runs on CPU), the Hugging Face Hub where a model
the profile names is neither offline, local nor cached (with the offline alternatives named),
and the raw-data host where the data stage downloads. Each check is ``ok``, ``warn`` or
``fail``; one ``fail`` stops ``pipeline_0.5b.sh`` before it starts.
"""

from __future__ import annotations

import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidrec.core.encoder import OFFLINE_MODELS as OFFLINE_EMBEDDERS
from sidrec.core.errors import InputError
from sidrec.data.amazon18 import DOWNLOAD_URL, raw_files
from sidrec.sft.models import OFFLINE_MODELS

MIN_PYTHON = (3, 11)
HUB = "https://huggingface.co"
TIMEOUT_S = 5.0
OFFLINE_HINT = (
    "offline instead: --profile demo, or model.name_or_path=smollm2-135m (or tiny-qwen2) and "
    "embed.model=all-minilm-l6-v2"
)


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=TIMEOUT_S)
    except OSError:
        return False
    return True


def _needs_hub(name: str) -> bool:
    """Whether loading model ``name`` needs the hub: not offline, not a local path, not in the
    local Hugging Face cache."""
    if name in OFFLINE_MODELS or name in OFFLINE_EMBEDDERS or Path(name).expanduser().exists():
        return False
    from huggingface_hub import try_to_load_from_cache

    return not isinstance(try_to_load_from_cache(name, "config.json"), str)


def _gpu(need_gb: float) -> Check:
    import torch

    if not torch.cuda.is_available():
        if need_gb > 0:
            return Check("gpu", "fail", f"no CUDA GPU; this profile needs {need_gb:g} GB of one")
        return Check("gpu", "ok", "none found; this profile runs on CPU")
    props = torch.cuda.get_device_properties(0)
    have = props.total_memory / 2**30
    found = f"{torch.cuda.device_count()} x {props.name}, {have:.0f} GB"
    if have < need_gb:
        return Check(
            "gpu",
            "fail",
            f"{found}; this profile needs {need_gb:g} GB: lower sft.per_device_batch_size or "
            "sft.max_length, or set sft.gradient_checkpointing=true",
        )
    return Check("gpu", "ok", found)


def preflight(cfg: dict[str, Any]) -> list[Check]:
    """Every check for the resolved config ``cfg``."""
    p = cfg["preflight"]
    checks = []
    version = ".".join(map(str, sys.version_info[:3]))
    ok_python = sys.version_info[:2] >= MIN_PYTHON
    want = ".".join(map(str, MIN_PYTHON))
    checks.append(Check("python", "ok" if ok_python else "fail", f"{version} (needs >= {want})"))
    root = Path(cfg["output_root"]).expanduser().resolve()
    existing = next(d for d in (root, *root.parents) if d.exists())
    free = shutil.disk_usage(existing).free / 2**30
    enough = free >= p["min_free_gb"]
    checks.append(
        Check(
            "disk",
            "ok" if enough else "fail",
            f"{free:.1f} GB free at {existing} (needs {p['min_free_gb']:g} GB)",
        )
    )
    checks.append(_gpu(p["min_gpu_memory_gb"]))
    hub = [m for m in (cfg["model"]["name_or_path"], cfg["embed"]["model"]) if _needs_hub(m)]
    if cfg["sid"]["method"] == "imported":
        hub = [m for m in hub if m != cfg["embed"]["model"]]  # nothing is embedded
    if hub:
        up = _reachable(HUB)
        detail = f"{', '.join(hub)} from {HUB}: " + ("reachable" if up else "unreachable; ")
        checks.append(Check("hub", "ok" if up else "fail", detail + ("" if up else OFFLINE_HINT)))
    data = cfg["data"]
    a18 = data["amazon18"]
    raw = Path(a18["raw_dir"] or ".").expanduser()
    try:
        have_raw = bool(raw_files(raw, a18["dataset"]))
    except InputError:
        have_raw = False
    if data["source"] == "amazon18" and a18["download"] and not have_raw:
        up = _reachable(DOWNLOAD_URL)
        detail = f"raw files from {DOWNLOAD_URL}: " + ("reachable" if up else "unreachable")
        if not up:
            name = a18["dataset"]
            detail += f"; put {name}.json.gz and meta_{name}.json.gz in {raw}"
        checks.append(Check("data download", "ok" if up else "fail", detail))
    return checks


def format_checks(checks: list[Check]) -> str:
    return "\n".join(f"{c.status:<5} {c.name:<14} {c.detail}" for c in checks)
