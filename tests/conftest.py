"""Shared fixtures: paths to the real benchmark data (skipped with a reason where absent), and
a small synthetic dataset with unique SIDs (3 levels x 8 codes) for the SFT and evaluation
tests."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidrec.core.sids import SidTable
from sidrec.data.stage import synth, write_imported_sids

# ../shared/data beside the checkout, or wherever SIDREC_SHARED_DATA points
SHARED_DATA = Path(
    os.environ.get("SIDREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def shared_data(name: str) -> Path:
    """The folder ``../shared/data/<name>``, or skip the test when this machine lacks it."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real benchmark data {path} is not on this machine")
    return path


@pytest.fixture(scope="session")
def minionerec_src() -> Path:
    return shared_data("minionerec_amazon18")


@pytest.fixture(scope="session")
def letter_src() -> Path:
    return shared_data("letter_amazon14")


@pytest.fixture(scope="session")
def beauty_titles() -> Path:
    return shared_data("letter_beauty_titles")


def random_sids(n_items: int, seed: int = 0, levels: int = 3, k: int = 8) -> SidTable:
    rng = np.random.default_rng(seed)
    picked = rng.choice(k**levels, size=n_items, replace=False)
    codes = [[int(x) // k ** (levels - 1 - lv) % k for lv in range(levels)] for x in picked]
    return SidTable(codes, [k] * levels)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``data`` and ``sid`` directories: 120 items, 150 users, leave-one-out."""
    root = tmp_path_factory.mktemp("sft_run")
    synth(root / "data", n_items=120, n_users=150, seed=0)
    write_imported_sids(root / "sid", random_sids(120), "test", {})
    return {"data": root / "data", "sid": root / "sid", "root": root}


# a 1-layer Qwen2 with Qwen2's tokenizer, no dashboard; the LM family with GRPO after SFT
# (configs/demo.yaml ships the tree family)
TINY_QWEN2 = [
    "model.family=lm",
    "rl.enabled=true",
    "model.name_or_path=tiny-qwen2",
    "model.tiny_qwen2.hidden_size=32",
    "model.tiny_qwen2.intermediate_size=64",
    "model.tiny_qwen2.num_hidden_layers=1",
    "model.tiny_qwen2.num_attention_heads=2",
    "model.tiny_qwen2.num_key_value_heads=1",
    "swanlab.mode=disabled",
]


def tiny_demo(root: Path) -> list[str]:
    """Overrides that shrink configs/demo.yaml's data and SIDs to seconds, writing under
    ``root``."""
    return [
        f"output_root={root}",
        f"model.cache_dir={root / 'models'}",
        "data.synth.n_items=150",
        "data.synth.n_users=120",
        "embed.max_seq_length=32",
        "sid.codebook_size=8",
    ]


def two_process_env() -> dict[str, str]:
    """The environment in which a launch script (scripts/*.sh) runs two CPU processes with
    torchrun over gloo, this interpreter's environment first on PATH."""
    return {
        **os.environ,
        "LAUNCHER": "torchrun",
        "NPROC": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


# that model, a few SFT steps, small evaluations
TINY_SFT = [
    *TINY_QWEN2,
    "convert.max_valid_examples=32",
    "sft.max_steps=20",
    "sft.eval_steps=10",
    "sft.global_batch_size=16",
    "sft.per_device_batch_size=16",
    "sft.learning_rate=0.003",
    "evaluate.num_beams=10",
    "evaluate.batch_size=16",
    "evaluate.max_users=40",
]


@pytest.fixture(scope="session")
def tiny_model(small_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``small_run`` plus ``model``: a tiny SFT model trained on it, and its ``cfg``."""
    from sidrec.core.config import load_config
    from sidrec.sft.convert import convert
    from sidrec.sft.train import train_sft

    root = tmp_path_factory.mktemp("tiny_model")
    cfg = load_config(
        None, [*TINY_SFT, f"model.cache_dir={root / 'models'}", f"output_root={root}"]
    )
    convert(small_run["data"], small_run["sid"], root / "examples", cfg)
    train_sft(root / "examples", root / "sft", cfg)
    return {**small_run, "model": root / "sft", "cfg": cfg}


def timestamp(year: int, month: int, day: int = 15) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


def write_gz(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def write_amazon18_raw(tmp_path: Path, name: str) -> Path:
    """Amazon 2018 raw files for category ``name`` in ``tmp_path``: 6 users x 6 items (all in
    2017), plus: one user and one item that only pass 3-core
    before the k-core cascade, an event outside the window, a duplicate event, and items whose
    titles must be dropped."""
    reviews, meta = [], []
    for u in range(6):
        for k, i in enumerate(range(6)):
            reviews.append(
                {
                    "reviewerID": f"U{u}",
                    "asin": f"A{(i + u) % 6}",
                    "unixReviewTime": timestamp(2017, 1 + k),
                    "overall": 5.0,
                }
            )
    reviews.append(dict(reviews[0]))  # exact duplicate event
    reviews.append(
        {"reviewerID": "U0", "asin": "A1", "unixReviewTime": timestamp(2015, 1)}
    )  # outside
    # U6 has 3 events on A0..A1 and "RARE"; RARE has only U6 and U5 -> falls below 3 once U6 goes
    for k, a in enumerate(["A0", "A1", "RARE"]):
        reviews.append({"reviewerID": "U6", "asin": a, "unixReviewTime": timestamp(2018, 1 + k)})
    reviews.append({"reviewerID": "U5", "asin": "RARE", "unixReviewTime": timestamp(2018, 6)})
    reviews.append({"reviewerID": "U5", "asin": "HTML", "unixReviewTime": timestamp(2018, 7)})
    for i in range(6):
        meta.append(
            {
                "asin": f"A{i}",
                "title": f"Widget &amp; Gadget {i}",
                "description": [f"<b>Great</b> widget {i}"],
                "brand": "Acme",
                "category": ["Tools", "Widgets"],
            }
        )
    meta.append({"asin": "RARE", "title": "Rare Widget"})
    meta.append({"asin": "HTML", "title": "<span>Bad</span> title"})
    meta.append({"asin": "A0", "title": "duplicate metadata row"})
    write_gz(tmp_path / f"{name}.json.gz", reviews)
    write_gz(tmp_path / f"meta_{name}.json.gz", meta)
    return tmp_path


BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def debian_tool(package: str, *names: str) -> str:
    """The path of a program (``names``, default the package's name), installed from Debian's
    ``package`` with apt-get when missing and this is root (else the test is skipped)."""
    names = names or (package,)
    found = next((p for n in names if (p := shutil.which(n))), None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{package} is not installed and this is not a root Debian machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], env=env, check=True, capture_output=True
    )
    return shutil.which(names[0]) or pytest.fail(f"apt-get installed no {names[0]} binary")


def chromium() -> str:
    """Debian's chromium (installed when missing and root, else skip)."""
    return debian_tool("chromium", "chromium", "chromium-browser")


def free_port() -> int:
    """A TCP port free on loopback now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: Path, port: int) -> subprocess.Popen:
    """Debian's redis-server on loopback ``port``, its append-only file in ``workdir`` (a
    restart on the same directory keeps the data), answering pings when this returns."""
    import time

    import redis

    binary = debian_tool("redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not answer on port {port}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this test session (installed from Debian when missing and root)."""
    port = free_port()
    proc = start_redis(tmp_path_factory.mktemp("redis"), port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's redis-server, emptied for this test."""
    import redis

    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """configs/demo.yaml shrunk to seconds through SFT: real text embeddings, a frozen
    quantizer (3 levels x 8 codes over 150 items), a tiny model trained a few steps. Holds the
    pipeline's ``outputs`` and its ``cfg``."""
    from sidrec.app.pipeline import run_pipeline
    from sidrec.core.config import load_config

    root = tmp_path_factory.mktemp("demo_model")
    overrides = [
        *tiny_demo(root),
        *TINY_QWEN2,
        "sft.max_steps=6",
        "sft.eval_steps=3",
        "sft.valid_users=16",
        "convert.max_valid_examples=16",
        "evaluate.num_beams=10",
    ]
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", overrides)
    outputs = run_pipeline(cfg, log=lambda _: None, until="sft")
    return {"outputs": outputs, "cfg": cfg, "model": outputs["sft"], "root": root}
