"""``sidrec suggest``: each strategy's threshold on hand-made reports, the overlay it writes,
and the stage behaviour each suggested key changes (no suggested key is inert)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from sidrec.analysis.suggest import STRATEGIES, suggest
from sidrec.app.cli import main
from sidrec.app.pipeline import run_pipeline
from sidrec.core.config import load_config
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.sids import read_sid_dir, sid_summary
from sidrec.rq.stage import build_sids
from sidrec.sft.convert import build_examples


def _row(label: str, share: float, hr: float, rest: float) -> dict:
    return {
        "label": label,
        "users": int(share * 1000),
        "share_of_users": share,
        "share_of_failures": share,
        "failure_rate": 1 - hr,
        "HR@10": hr,
        "NDCG@10": hr / 2,
        "HR@10_rest": rest,
        "NDCG@10_rest": rest / 2,
    }


def _healthy() -> dict:
    """A report no strategy fires on."""
    level = {"level": "a", "utilization": 0.9, "entropy_pct": 0.9}
    return {
        "dataset": "synth:demo",
        "titles": True,
        "top_k": 10,
        "segments": {
            "popularity": [_row("cold", 0.05, 0.09, 0.1), _row("5-19", 0.95, 0.1, 0.09)],
            "history_length": [_row("1-2 items", 0.2, 0.1, 0.1)],
            "recency": [_row("recent", 0.5, 0.2, 0.1)],
        },
        "recommended": {"long_tail_share_recommended": 0.4, "long_tail_share_targets": 0.5},
        "sid_quality": {"shared_sids": 0, "levels": [level, level]},
        "training": None,
    }


def _trained(last: float, steps: int, best_step: int) -> dict:
    """The ``training`` part of a report: best valid loss 2.0, the last one ``last``."""
    return {
        "eval_loss_best": 2.0,
        "eval_loss_last": last,
        "steps": steps,
        "best_checkpoint": f"checkpoint-{best_step}",
    }


def _write(tmp_path: Path, report: dict) -> Path:
    path = tmp_path / "badcase_report.json"
    path.write_text(json.dumps(report))
    return path


def test_a_healthy_report_triggers_nothing(tmp_path: Path) -> None:
    result = suggest(_write(tmp_path, _healthy()), tmp_path / "o.yaml")
    assert result["chosen"] == [] and [s["name"] for s in result["strategies"]] == list(STRATEGIES)
    assert yaml.safe_load((tmp_path / "o.yaml").read_text()) == {"suggested_for": "synth:demo"}


@pytest.mark.parametrize(
    ("name", "edit", "changes"),
    [
        (
            "long_tail",
            lambda r: r["recommended"].update(long_tail_share_recommended=0.2),
            {"convert": {"popularity_balance": 0.5}},
        ),
        (
            "cold_start",
            lambda r: r["segments"]["popularity"].__setitem__(0, _row("cold", 0.05, 0.02, 0.1)),
            {
                "convert": {"tasks": {"title_to_sid": 2.0}},
                "model": {"sid_token_init": "title-mean"},
            },
        ),
        (
            "short_history",
            lambda r: r["segments"]["history_length"].__setitem__(
                0, _row("1-2 items", 0.2, 0.05, 0.1)
            ),
            {"convert": {"tasks": {"title_history_to_sid": 0.5}}},
        ),
        (
            "sid_quality",
            lambda r: r["sid_quality"]["levels"].__setitem__(
                0, {"level": "a", "utilization": 0.3, "entropy_pct": 0.5}
            ),
            {"sid": {"method": "rqkmeans-constrained"}},
        ),
        (
            "recency_bias",
            lambda r: r["segments"]["recency"].__setitem__(0, _row("recent", 0.5, 0.05, 0.1)),
            {"convert": {"recent_items": 3}},
        ),
        (
            "hyperparameter",
            lambda r: r.update(training=_trained(2.2, 50, 20)),
            {"sft": {"residual_dropout": 0.1, "embedding_dropout": 0.1, "select_by": "ndcg@10"}},
        ),
    ],
)
def test_each_strategy_fires_past_its_threshold(
    tmp_path: Path, name: str, edit: object, changes: dict
) -> None:
    report = _healthy()
    edit(report)
    result = suggest(_write(tmp_path, report), tmp_path / "o.yaml")
    assert result["chosen"] == [name]
    overlay = yaml.safe_load((tmp_path / "o.yaml").read_text())
    assert overlay == {**changes, "suggested_for": "synth:demo"}
    cfg = load_config(None, overlays=[tmp_path / "o.yaml"])  # the stages accept it as is
    assert cfg["suggested_for"] == "synth:demo"
    text = (tmp_path / "o.yaml").read_text()
    assert f"# {name} (chosen)" in text and "evidence" in text


def test_still_improving_asks_for_more_epochs_and_titles_gate(tmp_path: Path) -> None:
    report = _healthy()
    report["training"] = _trained(2.0, 50, 50)
    result = suggest(_write(tmp_path, report), tmp_path / "o.yaml")
    assert result["overlay"]["sft"] == {"epochs": 6.0}  # the defaults' 3 epochs, doubled
    model = tmp_path / "steps"
    model.mkdir()
    (model / "config.yaml").write_text("sft: {max_steps: 300}\n")  # a step budget wins
    report["training"]["model"] = str(model)
    result = suggest(_write(tmp_path, report), tmp_path / "o.yaml")
    assert result["overlay"]["sft"] == {"max_steps": 600}
    report = _healthy()
    report["titles"] = False  # no text: no title task, no title-mean init
    report["segments"]["popularity"][0] = _row("cold", 0.05, 0.0, 0.1)
    assert suggest(_write(tmp_path, report), tmp_path / "o.yaml")["chosen"] == []
    # titles, but a model whose vocabulary is SID tokens only cannot learn from them
    report["titles"] = True
    model = tmp_path / "sft"
    model.mkdir()
    (model / "config.yaml").write_text(
        "model: {name_or_path: tiny-qwen2, tiny_qwen2: {vocab: sid}}\n"
    )
    report["training"] = {**_trained(2.0, 50, 20), "model": str(model)}
    result = suggest(_write(tmp_path, report), tmp_path / "o.yaml")
    assert (
        result["chosen"] == [] and result["strategies"][1]["evidence"]["titles_readable"] is False
    )
    (model / "config.yaml").write_text("model: {name_or_path: tiny-qwen2}\n")
    assert suggest(_write(tmp_path, report), tmp_path / "o.yaml")["chosen"] == ["cold_start"]
    # whole-sequence SFT has no per-target examples to rebalance or shorten
    report = _healthy()
    report["recommended"]["long_tail_share_recommended"] = 0.0
    report["segments"]["recency"][0] = _row("recent", 0.5, 0.05, 0.1)
    report["training"] = {**_trained(2.0, 50, 20), "model": str(model)}
    assert suggest(_write(tmp_path, report), tmp_path / "o.yaml")["chosen"] == [
        "long_tail",
        "recency_bias",
    ]
    (model / "config.yaml").write_text("sft: {format: sequence}\n")
    result = suggest(_write(tmp_path, report), tmp_path / "o.yaml")
    assert result["chosen"] == [] and "sft.format=sequence" in str(result["strategies"][0])


def test_choosing_and_bad_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = _healthy()
    report["recommended"]["long_tail_share_recommended"] = 0.1
    path = _write(tmp_path, report)
    picked = suggest(path, tmp_path / "o.yaml", auto=False, choose=lambda v: ["recency_bias"])
    assert picked["chosen"] == ["recency_bias"]
    assert picked["overlay"] == {"convert": {"recent_items": 3}, "suggested_for": "synth:demo"}
    with pytest.raises(SidrecError, match="unknown strategies"):
        suggest(path, tmp_path / "o.yaml", auto=False, choose=lambda v: ["speed"])
    (tmp_path / "bad.json").write_text('{"segments": {}}')
    with pytest.raises(SidrecError, match="is not a badcase_report.json"):
        suggest(tmp_path / "bad.json", tmp_path / "o.yaml")
    # the command: --auto, or a terminal to choose in
    assert (
        main(["suggest", "--report", str(path), "--out", str(tmp_path / "c.yaml"), "--auto"]) == 0
    )
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["suggest", "--report", str(path), "--out", str(tmp_path / "d.yaml")]) == 2
    assert not (tmp_path / "d.yaml").exists()


def test_overlays_with_unknown_keys_or_another_dataset_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("convert:\n  popularity_balence: 0.5\n")
    with pytest.raises(
        SidrecError, match=r"bad.yaml: unknown config key 'convert.popularity_balence'"
    ):
        load_config(None, overlays=[bad])
    other = tmp_path / "other.yaml"
    other.write_text("suggested_for: letter:Beauty\n")
    cfg = load_config(
        None,
        [f"output_root={tmp_path}", "data.synth.n_items=150", "data.synth.n_users=60"],
        overlays=[other],
    )
    with pytest.raises(SidrecError, match="suggested for dataset 'letter:Beauty'"):
        run_pipeline(cfg, log=lambda _: None, until="data")


def _examples(small_run: dict, overrides: list[str]) -> pl.DataFrame:
    ds, manifest = read_dataset(small_run["data"])
    cfg = load_config(None, overrides)
    frames, _ = build_examples(
        ds, read_sid_dir(small_run["sid"]), cfg, 0, manifest["split"]["max_history"]
    )
    return frames["train"]


def test_the_convert_keys_change_the_examples(small_run: dict) -> None:
    ds, _ = read_dataset(small_run["data"])
    freq = np.bincount(ds.train["target"].to_numpy(), minlength=ds.items.height)
    sids = read_sid_dir(small_run["sid"]).sids
    item_of = {s: i for i, s in enumerate(sids)}
    only_main = ["convert.tasks.title_to_sid=0", "convert.tasks.sid_to_title=0"]

    def mean_popularity(frame: pl.DataFrame) -> float:
        main_rows = frame.filter(pl.col("task") == "sid_history")
        return float(np.mean([freq[item_of[c]] for c in main_rows["completion"]]))

    plain = _examples(small_run, only_main)
    balanced = _examples(small_run, [*only_main, "convert.popularity_balance=1.0"])
    assert balanced.height == plain.height
    assert mean_popularity(balanced) < 0.8 * mean_popularity(plain)
    recent = _examples(small_run, [*only_main, "convert.recent_items=2"])
    short = lambda f: int((f["history"].list.len() <= 2).sum())  # noqa: E731
    assert recent.height > plain.height and short(recent) > short(plain)
    assert recent["history"].list.len().max() == plain["history"].list.len().max()
    more = _examples(small_run, ["convert.tasks.title_to_sid=2.0"])
    base = _examples(small_run, [])
    count = lambda f, t: int((f["task"] == t).sum())  # noqa: E731
    assert count(more, "title_to_sid") == 2 * count(base, "title_to_sid")
    titled = _examples(small_run, ["convert.tasks.title_history_to_sid=0.5"])
    assert count(titled, "title_history_to_sid") > 0 == count(base, "title_history_to_sid")
    with pytest.raises(SidrecError, match="popularity_balance must be in"):
        _examples(small_run, ["convert.popularity_balance=2.0"])


def test_the_sid_keys_change_the_codes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # a skewed catalog: most items crowd one corner of the space
    emb = np.concatenate([rng.normal(0, 0.05, (300, 8)), rng.normal(3, 1, (60, 8))])
    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    np.save(emb_dir / "embeddings.npy", emb.astype(np.float32))
    (emb_dir / "manifest.json").write_text("{}")
    base = load_config(None, ["sid.levels=2", "sid.codebook_size=8"])["sid"]
    largest = {}
    for method in ("rqkmeans", "rqkmeans-constrained"):
        out = tmp_path / method
        build_sids(emb_dir, out, {"sid": {**copy.deepcopy(base), "method": method}, "seed": 0})
        table = read_sid_dir(out)
        largest[method] = sid_summary(table.codes, table.codebook_sizes)["levels"][0][
            "largest_code_share"
        ]
    assert largest["rqkmeans-constrained"] < largest["rqkmeans"]


def test_the_hyperparameter_overlay_changes_training(small_run: dict, tmp_path: Path) -> None:
    from conftest import TINY_SFT

    from sidrec.sft.convert import convert
    from sidrec.sft.train import train_sft

    report = _healthy()
    report["training"] = _trained(2.5, 20, 10)
    overlay = tmp_path / "o.yaml"
    suggest(_write(tmp_path, report), overlay)
    cfg = load_config(
        None,
        [*TINY_SFT, f"model.cache_dir={tmp_path / 'm'}", "sft.valid_users=16"],
        overlays=[overlay],
    )
    assert cfg["sft"]["residual_dropout"] == 0.1 and cfg["sft"]["select_by"] == "ndcg@10"
    convert(small_run["data"], small_run["sid"], tmp_path / "examples", cfg)
    manifest = train_sft(tmp_path / "examples", tmp_path / "sft", cfg)
    # the checkpoint is now chosen by validation NDCG@10 of constrained decoding
    assert manifest["select_by"] == "ndcg@10"
    log = read_json(tmp_path / "sft" / "train_log.json")
    assert any("eval_ndcg@10" in h for h in log)


def test_the_cold_start_overlay_starts_sid_tokens_at_their_titles(
    small_run: dict, tmp_path: Path
) -> None:
    import torch
    from conftest import TINY_SFT

    from sidrec.core.model_dir import load_sid_model
    from sidrec.sft.convert import convert
    from sidrec.sft.train import train_sft

    report = _healthy()
    report["segments"]["popularity"][0] = _row("cold", 0.05, 0.02, 0.1)
    overlay = tmp_path / "o.yaml"
    assert suggest(_write(tmp_path, report), overlay)["chosen"] == ["cold_start"]
    # no learning: the saved SID rows are their initial values
    frozen = [*TINY_SFT, f"model.cache_dir={tmp_path / 'm'}", "sft.learning_rate=0"]
    frozen += ["sft.max_steps=1", "sft.eval_steps=1", "sft.weight_decay=0"]
    spread = {}
    for name, overlays in (("plain", []), ("cold_start", [overlay])):
        cfg = load_config(None, frozen, overlays=overlays)
        convert(small_run["data"], small_run["sid"], tmp_path / name / "examples", cfg)
        train_sft(tmp_path / name / "examples", tmp_path / name / "sft", cfg)
        model, tok = load_sid_model(tmp_path / name / "sft", torch.device("cpu"), False)
        ids = [i for t, i in tok.get_vocab().items() if t.startswith("<a_")]
        rows = model.get_input_embeddings().weight[ids].detach()
        spread[name] = float(rows.std(0).mean())
    assert spread["plain"] < 1e-6 < spread["cold_start"]  # one shared row -> one per title


def test_changes_the_model_already_has_are_not_proposed(tmp_path: Path) -> None:
    model = tmp_path / "sft"
    model.mkdir()
    report = _healthy()
    report["training"] = {**_trained(2.2, 50, 20), "model": str(model)}  # overfit
    (model / "config.yaml").write_text(
        "sft: {residual_dropout: 0.1, embedding_dropout: 0.1, select_by: ndcg@10}\n"
    )
    result = suggest(_write(tmp_path, report), tmp_path / "o.yaml")
    assert result["overlay"]["sft"] == {"residual_dropout": 0.2, "embedding_dropout": 0.2}
    (model / "config.yaml").write_text(
        "sft: {residual_dropout: 0.5, embedding_dropout: 0.5, select_by: ndcg@10}\n"
    )
    result = suggest(_write(tmp_path, report), tmp_path / "o.yaml")
    hyper = result["strategies"][-1]
    assert result["chosen"] == [] and hyper["evidence"]["already_applied"] is True
