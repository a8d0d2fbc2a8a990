"""``sidrec rank``: AUC and group AUC equal hand-computed values, the pair features say what
they mean on a hand-made catalog, re-ranking orders by probability, both models learn to find
the target among a retriever's candidates on the demo data (through the command line too),
the sweep reads the ranker's probabilities as they are, and mismatched inputs are refused."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from sidrec.analysis.compare import load_evaluation
from sidrec.app.cli import main
from sidrec.baselines.ranker import (
    FIELDS,
    NUMBERS,
    Candidates,
    item_context,
    pair_features,
    rerank,
    train_ranker,
)
from sidrec.baselines.sasrec import train_sasrec
from sidrec.core.config import load_config, stage_path
from sidrec.core.dataset import read_dataset
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.ledger import read_ledger
from sidrec.core.metrics import auc, group_auc
from sidrec.evaluate.generative import evaluate_model
from sidrec.evaluate.sweep import read_predictions


def test_auc_and_group_auc_by_hand() -> None:
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.8, 0.8, 0.4, 0.5, 0.1])
    # positive 0.8 beats 0.5 and 0.1 and ties 0.8 (half): 2.5; positive 0.4 beats 0.1: 1
    assert auc(labels, scores) == pytest.approx(3.5 / 6)
    assert auc(labels, -scores) == pytest.approx(1 - 3.5 / 6)
    # user a: its positive first (1.0); user b: its positive below one of two negatives (0.5);
    # user c: no negative, left out
    groups = np.array([0, 0, 1, 1, 1, 2])
    labels = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.9, 0.2, 0.7, 0.5, 0.1, 0.3])
    assert group_auc(groups, labels, scores) == pytest.approx(0.75)
    with pytest.raises(SidrecError, match="positives and negatives, got 0 and 2"):
        auc(np.array([0, 0]), np.array([0.1, 0.2]))


def test_rerank_orders_by_probability_and_keeps_empty_slots_last() -> None:
    items = np.array([[4, 5, 6, -1], [7, 8, 9, 1]])
    row, pos = np.array([0, 0, 0, 1, 1, 1, 1]), np.array([0, 1, 2, 0, 1, 2, 3])
    probs = np.array([0.1, 0.9, 0.1, 0.2, 0.2, 0.6, 0.0])
    ranked, scores = rerank(items, row, pos, probs)
    assert ranked.tolist() == [[5, 4, 6, -1], [9, 7, 8, 1]]  # ties keep the retriever's order
    np.testing.assert_allclose(scores, [[0.9, 0.1, 0.1, 0.0], [0.6, 0.2, 0.2, 0.0]])


def test_pair_features_on_a_hand_made_catalog(small_run: dict) -> None:
    ds, _ = read_dataset(small_run["data"])
    text = np.eye(ds.items.height, 8, dtype=np.float32) + 0.01
    ctx = item_context(ds, text)
    train = ds.train.filter(pl.col("history").list.len() > 0)
    last, target = train["history"][0][-1], train["target"][0]
    follows = int(((train["history"].list.last() == last) & (train["target"] == target)).sum())
    # row 0: history [last] ranks [target, last, -] with scores [2, 1, -inf]; row 1: no
    # history, an empty list
    rows = pl.DataFrame({"user_id": ["u", "v"], "history": [[last], []], "target": [target, 0]})
    items = np.array([[target, last, -1], [-1, -1, -1]])
    cand = Candidates(Path("x"), rows, items, np.array([[2.0, 1.0, -np.inf], [-np.inf] * 3]), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = pair_features(cand, ctx, 101)
    assert np.isfinite(p.numbers).all()
    assert p.fields.shape == (2, len(FIELDS)) and p.numbers.shape == (2, len(NUMBERS))
    num = dict(zip(NUMBERS, p.numbers.T, strict=True))
    field = dict(zip(FIELDS, p.fields.T, strict=True))
    assert p.label.tolist() == [1.0, float(target == last)] and p.row.tolist() == [0, 0]
    assert field["item"].tolist() == [target + 1, last + 1] and field["last_item"][0] == last + 1
    assert field["retriever_rank"].tolist() == [0, 1]
    assert num["score_minus_best"].tolist() == pytest.approx([0.0, -1.0])
    e = np.exp([0.0, -1.0])
    assert num["score_share"].tolist() == pytest.approx((e / e.sum()).tolist(), rel=1e-6)
    assert num["log_transitions_from_last"][0] == pytest.approx(np.log1p(follows))
    assert num["in_history"].tolist() == [float(target == last), 1.0]
    assert num["text_cosine_last"][1] == pytest.approx(1.0)  # the last item itself
    assert num["history_category_share"][1] == pytest.approx(1.0 if ctx.category[last] > 0 else 0.0)
    assert np.all(p.crosses >= 0) and np.all(p.crosses < 101)


@pytest.fixture(scope="module")
def candidates(demo_model: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo's tiny SFT model evaluated on 120 valid and the test users (20 beams), and
    SASRec trained once for each split's candidates (the same seed trains the same model)."""
    root = tmp_path_factory.mktemp("rank")
    cfg, outputs = demo_model["cfg"], demo_model["outputs"]
    found = {"root": root, "cfg": cfg, "outputs": outputs}
    for split in ("valid", "test"):
        c = copy.deepcopy(cfg)
        c["swanlab"]["mode"] = "disabled"
        c["evaluate"] |= {"split": split, "num_beams": 20, "max_users": 0}
        c["sasrec"] |= {"epochs": 8, "hidden": 32, "top_k": 20}
        found[f"gen_{split}"] = root / f"gen-{split}"
        evaluate_model(outputs["sft"], outputs["data"], None, found[f"gen_{split}"], c)
        found[f"sasrec_{split}"] = root / f"sasrec-{split}"
        train_sasrec(outputs["data"], found[f"sasrec_{split}"], c)
    return found


def test_deepfm_reranks_sasrec_candidates_from_the_command_line(candidates: dict) -> None:
    c, out = candidates, candidates["root"] / "deepfm"
    # one SASRec model gave both splits' candidates
    logs = [read_json(c[f"sasrec_{s}"] / "train_log.json") for s in ("valid", "test")]
    assert logs[0] == logs[1]
    args = ["rank", "--data", str(c["outputs"]["data"]), "--out", str(out)]
    args += ["--train-candidates", str(c["sasrec_valid"]), "--candidates", str(c["sasrec_test"])]
    args += ["--emb", str(c["outputs"]["embeddings"])]
    args += [f"output_root={c['cfg']['output_root']}", "swanlab.mode=disabled", "rank.epochs=15"]
    assert main(args) == 0
    res = read_json(out / "results.json")
    retr = read_json(c["sasrec_test"] / "results.json")
    assert res["method"] == "deepfm" and res["retriever"] == "sasrec"
    assert res["score_kind"] == "probability" and res["features"]["text"] is True
    assert res["users"] == retr["users"] and res["ks"] == [1, 3, 5, 10, 20]
    # the re-ranked lists hold the retriever's items, so HR@20 cannot change
    assert res["metrics"]["HR@20"] == pytest.approx(retr["metrics"]["HR@20"])
    assert res["retriever_metrics"]["HR@10"] == pytest.approx(retr["metrics"]["HR@10"])
    # it learned: the held-out and test AUC beat chance
    assert res["auc"]["valid"] > 0.6 and res["auc"]["test"] > 0.6, res["auc"]
    pred = pl.read_parquet(out / "predictions.parquet")
    theirs = pl.read_parquet(c["sasrec_test"] / "predictions.parquet")
    for a, b in zip(pred["ranked_items"].to_list(), theirs["ranked_items"].to_list(), strict=True):
        assert sorted(a) == sorted(b)
    probs = np.array(pred["scores"].to_list())
    assert np.all((probs >= 0) & (probs <= 1)) and np.all(np.diff(probs, axis=1) <= 0)
    # the sweep shows items whose probability passes the threshold, not a softmax share
    _, _, shown = read_predictions(out)
    np.testing.assert_allclose(shown, probs, rtol=1e-6)
    assert main(["sweep", "--eval", str(out), "--topk-list", "5", "--threshold-list", "0.5"]) == 0
    # analyze and compare read it like any evaluation; the ledger lists it
    assert len(load_evaluation(out).ranks) == res["users"]
    ledger = read_ledger(Path(c["cfg"]["output_root"]) / "experiments.csv")
    assert "deepfm:sasrec" in ledger["model"].to_list()


def test_wide_deep_reranks_generative_beams(candidates: dict) -> None:
    c = candidates
    cfg = load_config(
        None,
        [
            f"output_root={c['root'] / 'wd-root'}",
            "swanlab.mode=disabled",
            "rank.model=wide_deep",
            "rank.epochs=10",
            "rank.valid_share=0.3",
        ],
    )
    res = train_ranker(c["outputs"]["data"], c["gen_valid"], c["gen_test"], c["root"] / "wd", cfg)
    assert res["method"] == "wide_deep" and res["retriever"] == "sidrec"
    assert res["features"]["crosses"] and res["features"]["text"] is False
    assert res["metrics"]["HR@20"] == pytest.approx(res["retriever_metrics"]["HR@20"])
    assert 0.0 <= res["auc"]["test"] <= 1.0
    log = read_json(c["root"] / "wd" / "train_log.json")
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    # the wide part learned weights for the crosses it saw (they start at zero)
    state = torch.load(c["root"] / "wd" / "ranker.pt")
    assert (state["wide_crosses.weight"] != 0).sum() > 0 and "wide_crosses.weight" in state


def test_mismatched_inputs_are_refused(candidates: dict, small_run: dict, tmp_path: Path) -> None:
    c = candidates
    cfg = load_config(None, [f"output_root={tmp_path}", "swanlab.mode=disabled"])
    data = c["outputs"]["data"]
    # predictions from another dataset
    with pytest.raises(SidrecError, match="another dataset"):
        train_ranker(small_run["data"], c["sasrec_valid"], c["sasrec_test"], tmp_path / "a", cfg)
    # the same split twice, and two retrievers
    with pytest.raises(SidrecError, match="both the test split"):
        train_ranker(data, c["sasrec_test"], c["gen_test"], tmp_path / "b", cfg)
    with pytest.raises(SidrecError, match="one retriever"):
        train_ranker(data, c["sasrec_valid"], c["gen_test"], tmp_path / "c", cfg)
    # a predictions file whose target differs from the dataset's, row named
    forged = tmp_path / "forged"
    shutil.copytree(c["sasrec_test"], forged)
    (forged / "manifest.json").unlink()
    pred = pl.read_parquet(forged / "predictions.parquet")
    pred = pred.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.col("target") + 1)
        .otherwise(pl.col("target"))
        .alias("target")
    )
    pred.write_parquet(forged / "predictions.parquet")
    with pytest.raises(SidrecError, match=r"predictions.parquet, row 3: user .* another dataset"):
        train_ranker(data, c["sasrec_valid"], forged, tmp_path / "d", cfg)
    # text embeddings of another catalog
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "embeddings.npy", np.zeros((7, 4), dtype=np.float32))
    with pytest.raises(SidrecError, match=r"embeddings.npy: expected shape \[150, D\]"):
        train_ranker(data, c["sasrec_valid"], c["sasrec_test"], tmp_path / "f", cfg, emb)
    for bad, msg in (("rank.model=gbdt", "rank.model must be"), ("rank.valid_share=1.0", "valid_")):
        bad_cfg = load_config(None, [f"output_root={tmp_path}", bad])
        with pytest.raises(SidrecError, match=msg):
            train_ranker(data, c["sasrec_valid"], c["sasrec_test"], tmp_path / "e", bad_cfg)
    assert json.loads((c["sasrec_test"] / "results.json").read_text())["split"] == "test"
    assert stage_path(cfg, "rank").name == "rank"
