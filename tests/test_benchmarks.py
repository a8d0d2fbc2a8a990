"""The benchmark scripts run end to end and print what docs/benchmarks.md describes (slow, but
for the improvement loop on a tiny demo)."""

import importlib.util
from pathlib import Path

import pytest
from conftest import TINY_QWEN2, tiny_demo

from sidrec.analysis.suggest import STRATEGIES
from sidrec.app.cli import main
from sidrec.core.io import read_json
from sidrec.core.ledger import read_ledger

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _load(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sid_quality_benchmark(minionerec_src: Path, tmp_path: Path) -> None:
    bench = _load("sid_quality")
    result = bench.run(
        minionerec_src,
        [
            "embed.model=all-minilm-l6-v2",
            "embed.max_seq_length=32",
            f"embed.cache_dir={tmp_path}",
            "sid.epochs=2",
        ],
    )
    assert set(result["results"]) == {*bench.METHODS, "minionerec_shipped"}
    for method in bench.METHODS:
        assert result["results"][method]["collision_rate_after_dedup"] == 0
    shipped = result["results"]["minionerec_shipped"]
    assert shipped["shared_sids"] == 15 and shipped["levels"][0]["used"] == 48
    assert result["machine"]["cpus"] and "embed_model" in result["settings"]


@pytest.mark.slow
def test_decode_speed_benchmark(minionerec_src: Path) -> None:
    bench = _load("decode_speed")
    index = minionerec_src / "index" / "Industrial_and_Scientific.index.json"
    result = bench.run(repeats=1, catalogs={"industrial_3686": index}, models=["tiny"])
    assert len(result["results"]) == 4  # beams 20, 50 x batch 8, 32; the masks agreed
    for row in result["results"]:
        assert row["items"] == 3686
        for vocab in ("sid-only", "qwen2.5"):
            assert row[vocab]["speedup_vs_per_beam_dict"] > 1
            search = row[vocab]["search_tiny"]  # every method returned catalog SIDs only
            assert set(search["seconds"]) == set(bench.METHODS)
            assert all(v > 0 for v in search["seconds"].values())
            for head in ("full", "restricted"):
                assert 0 < search[f"ours_{head}_constraint_share_of_steps"] < 1
                assert search[f"ours_{head}_ms_per_step"] > 0


@pytest.mark.slow
def test_scale_benchmark() -> None:
    bench = _load("scale")
    result = bench.run(sizes=(3000, 6000), methods=("rqkmeans", "rqkmeans-constrained"))
    assert len(result["results"]) == 4
    for row in result["results"]:
        assert row["distinct_sids"] == row["items"] and row["assigned_distinct"]
        assert row["sid_build"]["seconds"] > 0 and row["prefix_index"]["peak_mb"] > 0
        assert row["constraint_ms_per_step"] > 0
        assert row["sid_assign_1000_new"]["seconds"] > 0
        exact = row["tree_exact_scoring"]
        assert exact["sums_to_one"] and exact["ms_per_batch"] > 0 and exact["parameters"] > 0
    assert set(result["ratios"]) == {"rqkmeans", "rqkmeans-constrained"}


@pytest.mark.slow
def test_rl_speed_benchmark(tmp_path: Path) -> None:
    bench = _load("rl_speed")
    tiny = [*tiny_demo(tmp_path), *TINY_QWEN2, "sft.max_steps=4", "sft.eval_steps=2"]
    result = bench.run(steps=2, prompts=2, overrides=tiny)
    for rollout in ("ours_beam_search", "generate_sid_constraint"):
        row = result[rollout]
        assert row["rollout_seconds"] > 0 and row["update_seconds"] > 0
        assert 0 < row["rollout_share_of_step"] < 1 and row["reward_seconds"] >= 0
    assert result["settings"]["num_generations"] == 16 and result["rollout_speedup"] > 0


def test_improve_loop_benchmark(tmp_path: Path) -> None:
    bench = _load("improve_loop")
    # 4 steps of a still-improving model: the hyperparameter strategy asks for twice the steps
    tiny = [*tiny_demo(tmp_path), *TINY_QWEN2, "sft.max_steps=4", "sft.eval_steps=2"]
    tiny += ["rl.enabled=false", "evaluate.max_users=40", "evaluate.num_beams=10"]
    result = bench.run(REPO / "configs" / "demo.yaml", tiny, log=lambda _: None)
    assert "hyperparameter" in result["chosen"]
    assert result["changes"]["sft"]["max_steps"] == 8
    assert list(result["strategies"]) == list(STRATEGIES) and len(STRATEGIES) == 6
    base, new = result["baseline"], result["suggested"]
    assert base["users"] == new["users"] == 40
    assert new["evaluation"] == str(tmp_path / "demo-suggested" / "evaluate")
    sft_log = read_json(tmp_path / "demo-suggested" / "sft" / "train_log.json")
    assert max(h.get("step", 0) for h in sft_log) == 8  # the overlay reached training
    for metric, d in result["paired_difference"].items():
        delta = new["metrics"][metric] - base["metrics"][metric]
        assert abs(d["difference"] - delta) < 1e-4
        assert d["ci95_low"] <= d["difference"] <= d["ci95_high"]
    assert (tmp_path / "demo-suggested" / "compare" / "comparison.png").is_file()
    assert (tmp_path / "demo" / "analyze" / "report.html").is_file()
    assert set(base["baselines"]) == {"popularity", "item_to_item"}


def test_restricted_head_benchmark(tiny_model: dict) -> None:
    bench = _load("restricted_head")
    result = bench.run(
        tiny_model["model"], tiny_model["data"], ["evaluate.max_users=40", "evaluate.num_beams=10"]
    )
    assert result["users"] == 40 and result["num_beams"] == 10
    assert 0 <= result["same_all_beams"] <= result["same_top10_order"] <= result["same_top10_set"]
    assert result["same_top10_set"] <= 1 and result["speedup_restricted"] > 0
    full, restricted = result["metrics"]["full"], result["metrics"]["restricted"]
    for m, d in result["difference_restricted_minus_full"].items():
        assert d == pytest.approx(restricted[m] - full[m], abs=2e-5)
    mass = result["mass"]
    depth = len(mass["sid_tokens"])
    assert depth >= 2 and len(mass["step_columns"]) == depth
    # the SID tokens hold the step's columns: at least as much mass on them
    pairs = zip(mass["step_columns"], mass["sid_tokens"], strict=True)
    assert all(0 <= c <= s <= 1 + 1e-6 for c, s in pairs)


@pytest.mark.slow
def test_incremental_benchmark(tmp_path: Path) -> None:
    bench = _load("incremental")
    tiny = ["model.tiny_qwen2.num_hidden_layers=1", "sft.eval_steps=20", "update.replay_valid=50"]
    result = bench.run(
        tmp_path, days=3, new_per_day=10, corrupt_day=2, base_epochs=1, overrides=tiny
    )
    ledger = result["ledger"]
    assert [r["day"] for r in ledger] == ["day-1", "day-2", "day-3"]
    assert [int(r["items"]) for r in ledger] == [1980, 1990, 2000]
    for row in ledger:
        promoted = float(row["new"]) >= float(row["old"]) - 0.005
        assert row["decision"] == ("promoted" if promoted else "rejected")
    assert [a["arrived_on"] for a in result["new_items_in_next_day_top10"]] == [1, 2]


@pytest.mark.slow
def test_serve_load_benchmark(demo_model: dict) -> None:
    bench = _load("serve_load")
    # the demo catalog has 8 codes per prefix: 20 distinct items fit where 100 would not
    result = bench.run(demo_model["model"], seconds=8, clients=8, share=0.2, distinct=20)
    failed = {k: v for k, v in result["results"].items() if not v["ok"]}
    assert result["ok"] and not failed, failed
    for mode in ("load_on", "load_off"):
        r = result["results"][mode]
        assert r["registered"] > 0 and r["ids_handed_out_twice"] == r["sids_handed_out_twice"] == 0
        assert set(r["latency_ms"]["recommend"]) == {"p50", "p95", "p99"}
    assert result["results"]["duplicates"]["items"] == 20


def test_beauty_classic_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``benchmarks/beauty.py --classic`` on the demo profile shrunk to seconds: one table with
    SASRec and its four variants, two-tower (HNSW and exact), the generative model and its
    DeepFM re-ranking, each with R@5/10, N@5/10 and training minutes; a second run reuses all."""
    bench = _load("beauty")
    tiny = [*tiny_demo(tmp_path), *TINY_QWEN2, "sft.max_steps=6", "sft.eval_steps=3"]
    tiny += ["sft.valid_users=16", "convert.max_valid_examples=16", "evaluate.num_beams=10"]
    tiny += ["sasrec.epochs=2", "sasrec.hidden=16", "two_tower.epochs=2", "two_tower.dim=16"]
    tiny += ["rank.epochs=2", "rank.valid_share=0.3", "rl.enabled=false"]
    result = bench.run(REPO / "configs" / "demo.yaml", tiny, classic=True)
    rows = result["classic"]["rows"]
    variants = [f"SASRec {v}" for v in bench.CLASSIC_VARIANTS]
    assert list(rows) == [
        "SASRec",
        *variants,
        "two-tower, HNSW index",
        "two-tower, exact search",
        "generative (sidrec SFT)",
        "generative re-ranked by DeepFM",
    ]
    for name, row in rows.items():
        assert all(0 <= row[k] <= 1 for k in ("R@5", "R@10", "N@5", "N@10")), name
        assert row["N@10"] <= row["R@10"] and row["train_minutes"] >= 0, name
    assert rows["SASRec rope"]["settings"]["position"] == "rope"
    ranked = rows["generative re-ranked by DeepFM"]
    assert 0 <= ranked["auc"]["test"] <= 1 and ranked["train_pairs"] > 0
    assert rows["generative (sidrec SFT)"]["vs_published"]["R@10"] in ("below", "within", "above")
    assert (tmp_path / "demo" / "evaluate-valid" / "results.json").is_file()
    assert read_json(tmp_path / "demo" / "rank" / "results.json")["retriever"] == "sidrec"
    again = bench.run(REPO / "configs" / "demo.yaml", tiny, classic=True)
    assert again["classic"]["rows"] == rows
    # the ledger holds every model once (the reused second run adds none); compare lists them
    assert main(["compare", "--ledger", str(tmp_path / "experiments.csv")]) == 0
    shown = capsys.readouterr().out
    models = ["sft:tiny-qwen2", "sasrec", "two_tower", "deepfm:sidrec"]
    models += ["sasrec:norm=rms", "sasrec:position=rope", "sasrec:mlp=gated"]
    models += ["sasrec:moe_experts=4"]
    assert all(m in shown for m in models), shown
    assert len(read_ledger(tmp_path / "experiments.csv")) == 9  # with the valid-split beams


def test_gpu_check_runs_its_parts_on_cpu(
    minionerec_src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports decode_speed beside it
    bench = _load("gpu_check")
    valid = minionerec_src / "valid" / bench.INDUSTRIAL_VALID.name
    lengths = bench.industrial_lengths(valid)
    assert len(lengths) == 4532  # one example per Industrial valid row
    assert lengths.min() >= bench.INSTRUCTION + 3 + 3 + 1  # at least one history item
    assert lengths.max() <= bench.INSTRUCTION + 3 * 10 + 3 + 1  # at most 10
    monkeypatch.setattr(bench, "INDUSTRIAL_VALID", valid)
    out = tmp_path / "gpu.json"
    args = ["--parts", "sft", "decode", "--model", "tiny", "--batch", "2", "--steps", "1"]
    bench.main([*args, "--beams", "5", "--users", "2", "--out", str(out)])
    report = read_json(out)
    assert report["device"] == "cpu" and report["sft"]["tokens_per_second"] > 0
    assert report["sft"]["peak_gpu_mb"] is None and not report["sft"]["bf16"]
    for head in ("full", "restricted"):  # whole_search checked every SID is in the catalog
        assert report["decode"][f"ours_{head}_ms_per_step"] > 0
    assert "smollm2" not in report


def test_beauty_rl_report_for_the_tree_family(tmp_path: Path) -> None:
    """``benchmarks/beauty.py --rl`` on the demo profile's tree model shrunk to seconds: the
    SFT and SFT+RL rows, paired intervals at 10 and 20, the goal computed from them."""
    bench = _load("beauty")
    tiny = [*tiny_demo(tmp_path), "tree.epochs=2", "tree.hidden=16", "swanlab.mode=disabled"]
    tiny += ["rl.max_steps=4", "rl.eval_steps=2", "rl.save_steps=2", "rl.num_generations=4"]
    tiny += ["rl.per_device_batch_size=32", "rl.learning_rate=0.01"]
    report = bench.run(REPO / "configs" / "demo.yaml", tiny, rl=True, sasrec=False)["rl"]
    assert set(report["change_ci95"]) == {"R@10", "N@10", "R@20", "N@20"}
    for k, ci in report["change_ci95"].items():
        assert ci["ci95_low"] <= ci["difference"] <= ci["ci95_high"], k
    gain = report["sft_rl"]["NDCG@10"] / report["sft"]["NDCG@10"] - 1
    assert report["ndcg10_relative_gain"] == pytest.approx(gain, abs=1e-3)
    assert report["steps"] == 4 and report["valid_ndcg10_best"] >= report["valid_ndcg10_first"]
    met = (
        report["ndcg10_relative_gain"] >= 0.03
        and report["change_ci95"]["N@10"]["ci95_low"] > 0
        and min(report["change_ci95"][k]["ci95_high"] for k in ("R@10", "R@20")) >= 0
    )
    assert report["goal"]["met"] == met and report["goal"]["under_45_minutes"]
