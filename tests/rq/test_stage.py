import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sidrec.app.cli import main
from sidrec.core.config import load_config
from sidrec.core.encoder import encode_texts, item_texts
from sidrec.core.errors import InputError, SidrecError
from sidrec.core.sids import read_sid_dir
from sidrec.data.stage import import_minionerec_dir, synth
from sidrec.rq.embed import embed_dataset
from sidrec.rq.stage import assign_sids, build_sids, report_sids

EMBED = load_config(None, ["embed.model=all-minilm-l6-v2", "embed.max_seq_length=64"])["embed"]
SID = {**load_config()["sid"], "epochs": 5}
METHODS = ["rqkmeans", "rqkmeans-constrained", "rqkmeans-plus", "rqvae"]


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embcache")


@pytest.fixture(scope="session")
def demo_emb(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    root = tmp_path_factory.mktemp("demo")
    synth(root / "data", n_items=600, n_users=300, seed=0)
    embed_dataset(root / "data", root / "emb", {"embed": {**EMBED, "cache_dir": str(cache)}})
    return root / "emb"


@pytest.fixture(scope="session")
def industrial_emb(
    minionerec_src: Path, tmp_path_factory: pytest.TempPathFactory, cache: Path
) -> Path:
    root = tmp_path_factory.mktemp("industrial")
    import_minionerec_dir(root / "data", minionerec_src, "Industrial_and_Scientific")
    embed_dataset(root / "data", root / "emb", {"embed": {**EMBED, "cache_dir": str(cache)}})
    return root / "emb"


def _sids(out: Path) -> list[str]:
    return pl.read_parquet(out / "sids.parquet")["sid"].to_list()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dedup", ["reassign", "append"])
def test_demo_sids_are_unique_and_deterministic(
    demo_emb: Path, tmp_path: Path, method: str, dedup: str
) -> None:
    cfg = {**SID, "method": method, "dedup": dedup, "codebook_size": 32}
    report = build_sids(demo_emb, tmp_path / "a", {"sid": cfg, "seed": 1})
    build_sids(demo_emb, tmp_path / "b", {"sid": cfg, "seed": 1})
    sids = _sids(tmp_path / "a")
    assert len(sids) == 600 and len(set(sids)) == 600
    assert report["collision_rate"] == 0 and report["collision_rate_before_dedup"] > 0
    assert sids == _sids(tmp_path / "b")
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert len({"".join(v) for v in index.values()}) == 600
    assert (tmp_path / "a" / "code_usage.png").stat().st_size > 1000
    latent = 32 if method == "rqvae" else 384
    assert np.load(tmp_path / "a" / "codebooks.npz")["codebooks"].shape == (3, 32, latent)
    trained = method in ("rqkmeans-plus", "rqvae")
    assert (tmp_path / "a" / "quantizer.pt").exists() == trained
    if trained:
        log = json.loads((tmp_path / "a" / "train_log.json").read_text())
        assert len(log) == 5 and len(log[-1]["utilization"]) == 3
        assert log[-1]["recon"] < log[0]["recon"]


@pytest.mark.parametrize("method", METHODS)
def test_industrial_sids_are_unique_and_balanced(
    industrial_emb: Path, tmp_path: Path, method: str
) -> None:
    report = build_sids(
        industrial_emb, tmp_path / "s", {"sid": {**SID, "method": method}, "seed": 0}
    )
    assert report["items"] == 3686 and report["distinct_sids"] == 3686
    assert report["collision_rate"] == 0
    first = report["levels"][0]
    if method in ("rqkmeans-constrained", "rqkmeans-plus"):  # the goal for balanced methods
        assert first["utilization"] >= 0.9 and first["entropy_pct"] >= 0.95
    assert read_sid_dir(tmp_path / "s").codes == [
        [int(t[3:-1]) for t in v]
        for v in json.loads((tmp_path / "s" / "index.json").read_text()).values()
    ]


def test_minionerec_index_scores_as_shipped(minionerec_src: Path, tmp_path: Path) -> None:
    index = minionerec_src / "index" / "Industrial_and_Scientific.index.json"
    report, table = report_sids(index=index, png=tmp_path / "u.png")
    assert report["shared_sids"] == 15 and report["levels"][0]["used"] == 48
    assert "48/256" in table and (tmp_path / "u.png").exists()


def test_embedding_cache_and_text_fallbacks(demo_emb: Path, cache: Path, tmp_path: Path) -> None:
    again = embed_dataset(
        demo_emb.parent / "data", tmp_path / "e", {"embed": {**EMBED, "cache_dir": str(cache)}}
    )
    assert again["counts"]["cache_hits"] == 600
    assert np.array_equal(
        np.load(tmp_path / "e" / "embeddings.npy"), np.load(demo_emb / "embeddings.npy")
    )
    items = pl.DataFrame(
        {"title": ["A", ""], "description": ["", ""], "brand": ["", "Acme"], "categories": [[], []]}
    )
    assert item_texts(items, "{title}. {description}", 50) == (["A", "Acme"], 1)
    with pytest.raises(SidrecError, match=r"unknown item fields \['price'\]"):
        item_texts(items, "{price}", 50)


def test_embedding_cache_survives_corruption_and_concurrent_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file per model setting: a corrupt one is rebuilt with a warning; a run that wrote
    while another was encoding keeps its entries (the second merges under the lock)."""
    cache = tmp_path / "cache"
    args = ("all-minilm-l6-v2", 8, 32, True, "cpu", cache)
    first, _ = encode_texts(["red pen", "blue pen"], *args)
    (file,) = cache.glob("*.npz")
    file.write_bytes(b"PK\x03\x04 torn write")
    with pytest.warns(UserWarning, match="is unreadable .* rebuilding it"):
        again, hits = encode_texts(["red pen", "blue pen"], *args)
    assert hits == 0 and np.allclose(again, first, atol=1e-6)
    assert encode_texts(["red pen", "blue pen"], *args)[1] == 2  # readable again
    # while this run encodes "green pen", another run adds "black pen" to the cache
    from sentence_transformers import SentenceTransformer

    real = SentenceTransformer.encode
    calls = []

    def meanwhile(self: SentenceTransformer, texts: list[str], **kw: object) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            encode_texts(["black pen"], *args)
        return real(self, texts, **kw)

    monkeypatch.setattr(SentenceTransformer, "encode", meanwhile)
    encode_texts(["green pen"], *args)
    monkeypatch.undo()
    _, hits = encode_texts(["red pen", "blue pen", "green pen", "black pen"], *args)
    assert hits == 4  # no run lost another's entries


def test_bad_embeddings_are_named(demo_emb: Path, tmp_path: Path) -> None:
    emb = np.load(demo_emb / "embeddings.npy")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, emb[:10])
    with pytest.raises(InputError, match=r"wrong\.npy: expected shape \[600, D\]"):
        embed_dataset(demo_emb.parent / "data", tmp_path / "o", {"embed": EMBED}, from_npy=wrong)
    emb = emb.copy()
    emb[7, 3] = np.nan
    np.save(wrong, emb)
    with pytest.raises(InputError, match="1 rows hold NaN or inf \\(first: item 7\\)"):
        embed_dataset(demo_emb.parent / "data", tmp_path / "o", {"embed": EMBED}, from_npy=wrong)
    with pytest.raises(SidrecError, match="sid.epochs and sid.batch_size must be at least 1"):
        build_sids(
            demo_emb, tmp_path / "s", {"sid": {**SID, "method": "rqvae", "epochs": 0}, "seed": 0}
        )
    with pytest.raises(SidrecError, match="sid.method must be one of"):
        build_sids(demo_emb, tmp_path / "s", {"sid": {**SID, "method": "kmeans"}, "seed": 0})
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_sid_commands(demo_emb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sid"
    assert (
        main(
            [
                "sid",
                "build",
                "--emb",
                str(demo_emb),
                "--out",
                str(out),
                "--levels",
                "2",
                "--codebook-size",
                "64",
                "sid.kmeans_iters=5",
            ]
        )
        == 0
    )
    assert "used/K" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["levels"][1]["codebook_size"] == 64
    assert main(["sid", "report", "--sid", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["distinct_sids"] == 600


@pytest.mark.parametrize("method", ["rqkmeans-constrained", "rqvae"])
def test_assign_new_items_keeps_existing_sids(demo_emb: Path, tmp_path: Path, method: str) -> None:
    emb = np.load(demo_emb / "embeddings.npy")
    old = tmp_path / "old_emb"
    old.mkdir()
    np.save(old / "embeddings.npy", emb[:540])  # 10% of the catalog held out
    cfg = {**SID, "method": method, "codebook_size": 16, "levels": 2}
    build_sids(old, tmp_path / "sid", {"sid": cfg, "seed": 0})
    report = assign_sids(tmp_path / "sid", demo_emb, tmp_path / "grown")
    before, after = _sids(tmp_path / "sid"), _sids(tmp_path / "grown")
    assert after[:540] == before
    assert len(after) == 600 and len(set(after)) == 600
    assert report["assigned_items"] == 60 and report["collision_rate"] == 0
    # no SID is a prefix of another, so constrained decoding can always tell items apart
    assert not any(a != b and b.startswith(a) for a in after for b in after)
    with pytest.raises(InputError, match="expected more than the 600 items"):
        assign_sids(tmp_path / "grown", demo_emb, tmp_path / "again")


def test_sid_assign_command(demo_emb: Path, tmp_path: Path) -> None:
    old = tmp_path / "old_emb"
    old.mkdir()
    np.save(old / "embeddings.npy", np.load(demo_emb / "embeddings.npy")[:500])
    build_sids(old, tmp_path / "sid", {"sid": {**SID, "codebook_size": 16}, "seed": 0})
    assert (
        main(
            [
                "sid",
                "assign",
                "--sid",
                str(tmp_path / "sid"),
                "--emb",
                str(demo_emb),
                "--out",
                str(tmp_path / "grown"),
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "grown" / "manifest.json").read_text())
    assert manifest["counts"]["new_items"] == 100
