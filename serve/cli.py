"""``sidrec serve``: a thin layer over :mod:`sidrec.serve.service`, imported when the command
runs."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from sidrec.core.config import add_config_args, model_config
from sidrec.core.errors import SidrecError, require_file
from sidrec.core.io import MANIFEST, read_json

FLAGS = ("registry", "redis_url", "host", "port", "max_batch", "max_wait_ms", "num_beams")


def histories(data: Path | None, model: Path | None) -> dict[str, list[int]]:
    """User id -> item ids from a dataset directory's sequences (default: the model's training
    data, when it is still there)."""
    import polars as pl

    if data is None:
        manifest = Path(model) / MANIFEST
        found = read_json(manifest).get("inputs", {}).get("data") if manifest.exists() else None
        if not found or not (Path(found) / "sequences.parquet").exists():
            return {}
        data = Path(found)
    seqs = pl.read_parquet(require_file(Path(data) / "sequences.parquet", "user sequences"))
    return dict(zip(seqs["user_id"].to_list(), seqs["item_ids"].to_list(), strict=True))


def state_histories(state: Path) -> dict[str, list[int]]:
    """Every user an update state has seen, with the latest history it holds for each (the
    base model's training data, then the state's histories, which a day's replace)."""
    import polars as pl

    from sidrec.core.state import history_files

    out: dict[str, list[int]] = {}
    for file in history_files(state):
        seqs = pl.read_parquet(file)
        out.update(zip(seqs["user_id"].to_list(), seqs["item_ids"].to_list(), strict=True))
    return out


def _state_recommender(cfg: dict[str, Any], state: Path) -> tuple[Any, Path, Path]:
    """The recommender of what ``state`` serves, its SID directory and its base model."""
    from sidrec.core.state import registered_catalog, serving
    from sidrec.serve.recommend import Recommender

    point = serving(state)
    base, kind = registered_catalog(state)
    if kind != cfg["serve"]["registry"]:
        raise SidrecError(
            f"{state} shares its item ids with a {kind} registry (update.registry): serve "
            f"it with --registry {kind}"
        )
    catalog = (point["items"], point["sid"])
    rec = Recommender(point["model"], head=cfg["decoding"]["head"], catalog=catalog)
    return rec, point["sid"], base


def load_service(
    cfg: dict[str, Any], model: Path | None, state: Path | None, data: Path | None
) -> Any:
    """The :class:`~sidrec.serve.service.Service` for ``sidrec serve``'s arguments; refuses an
    unreachable Redis unless ``serve.registry`` is ``memory``. With ``state``, the service
    reloads what the state serves whenever ``state.json`` changes."""
    import torch

    from sidrec.core.state import STATE_FILE
    from sidrec.serve.recommend import Recommender
    from sidrec.serve.registry import RegistryUnavailable, open_registry
    from sidrec.serve.service import Service

    s = cfg["serve"]
    if s["threads"] > 0:
        torch.set_num_threads(s["threads"])
    if state is not None:
        rec, sid_dir, base = _state_recommender(cfg, state)
    elif model is not None:
        rec = Recommender(model, head=cfg["decoding"]["head"])
        sid_dir, base = Path(model) / "sids", Path(model)
    else:
        raise SidrecError("give --model DIR (or --state DIR of sidrec update)")
    registry, record = open_registry(cfg, base, state)
    try:
        registry.ping()
    except RegistryUnavailable as e:
        raise SidrecError(
            f"{e}: start Redis (e.g. `redis-server --port 6379 --appendonly yes`) or "
            "serve one replica without it (--registry memory)"
        ) from None
    if state is None:
        return Service(rec, sid_dir, registry, cfg, histories(data, rec.model_dir), record)

    def loader() -> tuple[Any, dict[str, list[int]]]:
        fresh = _state_recommender(cfg, state)[0]
        return fresh, state_histories(state) if data is None else histories(data, None)

    users = state_histories(state) if data is None else histories(data, None)
    return Service(rec, sid_dir, registry, cfg, users, record, loader, state / STATE_FILE)


def server(cfg: dict[str, Any], service: Any) -> Any:
    """The uvicorn server of ``service`` on ``serve.host``:``serve.port``."""
    import uvicorn

    from sidrec.serve.service import ACCESS, create_app

    s = cfg["serve"]
    if s["access_log"] and not ACCESS.handlers:  # one JSON line per request, on stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ACCESS.addHandler(handler)
        ACCESS.setLevel(logging.INFO)
        ACCESS.propagate = False
    config = uvicorn.Config(create_app(service), s["host"], s["port"], log_level="warning")
    return uvicorn.Server(config)


def _serve(a: argparse.Namespace) -> None:

    flags = {k: getattr(a, k) for k in FLAGS if getattr(a, k) is not None}
    over = [f"serve.{k}={json.dumps(v)}" for k, v in flags.items()]
    if a.model is None and a.state is None:
        raise SidrecError("give --model DIR (or --state DIR of sidrec update)")
    model = a.model
    if model is None:
        from sidrec.core.state import serving

        model = serving(a.state)["model"]
    cfg = model_config(model, a.config, [*over, *a.overrides], a.overlay)
    service = load_service(cfg, a.model, a.state, a.data)
    s = cfg["serve"]
    print(
        f"sidrec serve: {len(service.rec.titles):,} items, registry {s['registry']}, "
        f"http://{s['host']}:{s['port']}",
        flush=True,
    )
    server(cfg, service).run()


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec serve``."""
    p = sub.add_parser(
        "serve",
        help="serve recommendations and register new items over HTTP",
        description="POST /recommend, POST /items, GET /health, GET /metrics (docs/serving.md)",
    )
    p.add_argument("--model", type=Path, help="an sft (or rl) output")
    p.add_argument("--state", type=Path, help="or: serve what sidrec update promoted")
    p.add_argument("--data", type=Path, help="a dataset directory: histories of user ids")
    p.add_argument("--registry", choices=["redis", "memory"])
    p.add_argument("--redis-url", help="default redis://127.0.0.1:6379/0")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--max-batch", type=int, help="micro-batch size limit (1 = off)")
    p.add_argument("--max-wait-ms", type=float, help="how long a batch waits for requests")
    p.add_argument("--num-beams", type=int, help="beams per request (the largest k)")
    add_config_args(p, "a profile (default: the model's own config)")
    p.set_defaults(func=_serve)
