"""``sidrec baseline two-tower``: the sampled softmax with log Q equals its hand-written form,
faiss's approximate indexes find what exact search finds on random vectors, HitRate@K up to
200 on a hand-made case, and a trained model's index is saved, reloadable, and refused when
its size or dimension does not match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from sidrec.app.cli import main
from sidrec.baselines.two_tower import (
    INDEX_FILE,
    TwoTower,
    _loss,
    ann_recall,
    build_index,
    load_index,
    search,
    train_two_tower,
)
from sidrec.core.config import load_config
from sidrec.core.errors import SidrecError
from sidrec.core.io import read_json
from sidrec.core.metrics import hr_ndcg, target_ranks

SETTINGS = {"nlist": 50, "nprobe": 10, "hnsw_m": 32, "hnsw_ef_search": 128}


def test_loss_is_the_log_q_corrected_softmax() -> None:
    torch.manual_seed(0)
    model = TwoTower(torch.randn(6, 4), dim=8, hidden=8)
    seq = torch.tensor([[0, 1, 2], [3, 4, 5]])
    target = torch.tensor([5, 0])
    log_freq = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.1, 0.1, 0.2]))
    sampler = torch.full((6,), 1 / 6)
    torch.manual_seed(1)
    got = _loss(model, seq, target, log_freq, sampler, 3, 0.5)
    torch.manual_seed(1)
    negatives = torch.multinomial(sampler, 3, replacement=True)
    cand = torch.cat([target, negatives])
    logits = model.users(seq) @ model.items(cand + 1).T / 0.5
    logits -= torch.cat([log_freq[target], torch.full((3,), float(np.log(1 / 6)))])
    for r in range(2):  # the row's own target met again among the candidates is no negative
        for c in range(5):
            if c != r and cand[c] == target[r]:
                logits[r, c] = float("-inf")
    want = torch.nn.functional.cross_entropy(logits, torch.arange(2))
    torch.testing.assert_close(got, want)


def test_approximate_indexes_recall_the_exact_top_k() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(5000, 32)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    queries = rng.normal(size=(200, 32)).astype(np.float32)
    exact, scores = search(build_index(items, {**SETTINGS, "index": "flat"}, 0), queries, 50)
    want = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :50]
    assert (exact[:, :10] == want[:, :10]).mean() > 0.99 and np.all(np.diff(scores) <= 1e-6)
    # IVF: recall grows with the cells searched and is exact when all 50 are
    ivf = []
    for nprobe in (10, 25, 50):
        index = build_index(items, {**SETTINGS, "index": "ivf", "nprobe": nprobe}, 0)
        ivf.append(ann_recall(search(index, queries, 50)[0], exact, [10, 50]))
    assert ivf[0]["recall@10"] < ivf[1]["recall@10"] < ivf[2]["recall@10"] == 1.0, ivf
    assert ivf[1]["recall@10"] >= 0.9 and ivf[2]["recall@50"] == 1.0
    found, _ = search(build_index(items, {**SETTINGS, "index": "hnsw"}, 0), queries, 50)
    hnsw = ann_recall(found, exact, [10, 50])
    assert hnsw["recall@10"] >= 0.99 and hnsw["recall@50"] >= 0.99, hnsw
    assert ann_recall(np.array([[1, 2, 3]]), np.array([[1, 4, 3]]), [1, 3]) == pytest.approx(
        {"recall@1": 1.0, "recall@3": 2 / 3}
    )
    with pytest.raises(SidrecError, match="two_tower.nlist"):
        build_index(items[:10], {**SETTINGS, "index": "ivf"}, 0)
    with pytest.raises(SidrecError, match="two_tower.index"):
        build_index(items, {**SETTINGS, "index": "lsh"}, 0)


def test_hit_rate_up_to_200_by_hand() -> None:
    # targets at rank 1, 150 and beyond 200 of 200 retrieved items
    ranked = np.tile(np.arange(200), (3, 1))
    ranks = target_ranks(ranked, np.array([0, 149, 999]))
    got = hr_ndcg(ranks, [1, 100, 200])
    assert got["HR@1"] == pytest.approx(1 / 3) and got["HR@100"] == pytest.approx(1 / 3)
    assert got["HR@200"] == pytest.approx(2 / 3)
    assert got["NDCG@200"] == pytest.approx((1 + 1 / np.log2(151)) / 3)


def test_two_tower_trains_indexes_and_reloads(small_run: dict, tmp_path: Path) -> None:
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(
        emb / "embeddings.npy", np.random.default_rng(0).normal(size=(120, 16)).astype(np.float32)
    )
    tiny = ["two_tower.dim=16", "two_tower.hidden=16", "two_tower.epochs=3", "two_tower.top_k=100"]
    tiny += ["two_tower.num_negatives=16", "evaluate.max_users=40", f"output_root={tmp_path}"]
    cfg = load_config(None, tiny)
    results = train_two_tower(small_run["data"], emb, tmp_path / "tt", cfg)
    assert results["method"] == "two_tower" and results["users"] == 40
    assert results["ks"] == [1, 3, 5, 10, 20, 50, 100]
    assert set(results["index_recall_of_exact"]) == {"recall@10", "recall@50"}
    log = read_json(tmp_path / "tt" / "train_log.json")
    assert len(log) == 3 and log[-1]["train_loss"] < log[0]["train_loss"]
    pred = pl.read_parquet(tmp_path / "tt" / "predictions.parquet")
    items = np.array(pred["ranked_items"].to_list())
    assert items.shape == (40, 100) and items.min() >= 0 and items.max() < 120
    assert all(len(set(r)) == 100 for r in items.tolist())
    index = load_index(tmp_path / "tt", 120, 16)
    vectors = np.load(tmp_path / "tt" / "item_vectors.npy")
    assert index.ntotal == 120 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    with pytest.raises(
        SidrecError, match=f"{INDEX_FILE}: holds 120 vectors of dimension 16; expected 121"
    ):
        load_index(tmp_path / "tt", 121, 16)
    with pytest.raises(SidrecError, match="expected 120 items of dimension 32"):
        load_index(tmp_path / "tt", 120, 32)
    # the command line, exact search, uniform negatives
    args = ["baseline", "two-tower", "--data", str(small_run["data"]), "--emb", str(emb)]
    args += [
        "--out",
        str(tmp_path / "cli"),
        *tiny,
        "two_tower.index=flat",
        "two_tower.negatives=uniform",
    ]
    assert main(args) == 0
    exact = read_json(tmp_path / "cli" / "results.json")
    assert exact["index_recall_of_exact"]["recall@10"] == 1.0
    assert exact["metrics_exact"] == exact["metrics"]
    assert set(results["metrics_exact"]) == set(results["metrics"])
    np.save(emb / "embeddings.npy", np.zeros((7, 16), dtype=np.float32))
    with pytest.raises(SidrecError, match="has 7 rows for the dataset's 120 items"):
        train_two_tower(small_run["data"], emb, tmp_path / "bad", cfg)
