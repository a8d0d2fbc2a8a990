"""``sidrec data ...``: a thin command-line layer over :mod:`sidrec.data.stage`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sidrec.core.config import defaults
from sidrec.core.dataset import read_dataset
from sidrec.data import stage
from sidrec.data.stats import dataset_stats, format_stats


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace a complete output")


def _add_synth(cmds: argparse._SubParsersAction, d: dict[str, Any]) -> None:
    """``data synth``: the demo dataset."""
    p = cmds.add_parser("synth", help="generate the demo dataset (no network)")
    _common(p)
    p.add_argument("--n-items", type=int, default=d["synth"]["n_items"])
    p.add_argument("--n-users", type=int, default=d["synth"]["n_users"])
    p.add_argument("--seed", type=int, default=defaults()["seed"])
    p.add_argument("--split", choices=["loo", "temporal"], default=d["split"])
    p.add_argument("--max-history", type=int, default=d["max_history"])
    p.set_defaults(
        func=lambda a: stage.synth(
            a.out, a.n_items, a.n_users, a.seed, a.split, a.max_history, a.overwrite
        )
    )


def _add_amazon18(cmds: argparse._SubParsersAction, d: dict[str, Any]) -> None:
    """``data amazon18``: Amazon Reviews 2018 raw files."""
    a18 = d["amazon18"]
    p = cmds.add_parser("amazon18", help="build from Amazon Reviews 2018 raw files")
    _common(p)
    p.add_argument("--dataset", required=True, help="category, e.g. Industrial_and_Scientific")
    p.add_argument("--raw-dir", type=Path, required=True)
    p.add_argument("--download", action="store_true", help="fetch missing raw files first")
    for key in (
        "user_k",
        "item_k",
        "st_year",
        "st_month",
        "ed_year",
        "ed_month",
        "max_title_words",
    ):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=a18[key])
    p.add_argument("--split", choices=["temporal", "loo"], default="temporal")
    p.add_argument("--max-history", type=int, default=10)
    p.set_defaults(
        func=lambda a: stage.amazon18(
            a.out,
            a.raw_dir,
            a.dataset,
            a.split,
            a.max_history,
            a.download,
            a.overwrite,
            user_k=a.user_k,
            item_k=a.item_k,
            st_year=a.st_year,
            st_month=a.st_month,
            ed_year=a.ed_year,
            ed_month=a.ed_month,
            max_title_words=a.max_title_words,
        )
    )


def _add_minionerec(cmds: argparse._SubParsersAction, d: dict[str, Any]) -> None:
    """``data import-minionerec``: MiniOneRec's processed files."""
    p = cmds.add_parser("import-minionerec", help="import MiniOneRec's processed files")
    _common(p)
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--sid-out", type=Path, help="also write the shipped SIDs as a SID directory")
    p.add_argument(
        "--split",
        choices=["temporal", "loo"],
        default="temporal",
        help="temporal: MiniOneRec's own split (default); loo: leave-one-out over the sequences",
    )
    p.add_argument("--max-history", type=int, default=10)
    p.set_defaults(
        func=lambda a: stage.import_minionerec_dir(
            a.out, a.src, a.dataset, a.sid_out, a.split, a.max_history, a.overwrite
        )
    )


def _add_letter(cmds: argparse._SubParsersAction, d: dict[str, Any]) -> None:
    """``data import-letter``: LC-Rec / LETTER files."""
    p = cmds.add_parser("import-letter", help="import LC-Rec/LETTER files (leave-one-out)")
    _common(p)
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--titles", type=Path, help='item titles, {"id": "title"}')
    p.add_argument("--asins", type=Path, help="item_id<TAB>asin map with a header line")
    p.add_argument("--max-history", type=int, default=d["max_history"])
    p.add_argument("--sid-out", type=Path, help="also write the shipped SIDs as a SID directory")
    p.set_defaults(
        func=lambda a: stage.import_letter_dir(
            a.out, a.src, a.dataset, a.titles, a.asins, a.max_history, a.sid_out, a.overwrite
        )
    )


def _add_interactions(cmds: argparse._SubParsersAction, d: dict[str, Any]) -> None:
    """``data import-interactions``: your own interactions and items files."""
    it = d["interactions"]
    p = cmds.add_parser(
        "import-interactions",
        help="build from your own interactions and items files (CSV, TSV, JSON lines, parquet)",
        description="Your catalog: an interactions file (user, item, time) and an items file "
        "(item, title, optional description, brand, categories), joined, checked, k-core "
        "filtered and split like Amazon's files.",
    )
    _common(p)
    p.add_argument("--interactions", type=Path, required=True, help="user, item, time rows")
    p.add_argument("--items", type=Path, required=True, help="one row per item with its text")
    for key in ("user_col", "item_col", "time_col", "title_col"):
        p.add_argument("--" + key.replace("_", "-"), default=it[key], help=f"default {it[key]}")
    for key in ("description_col", "brand_col", "category_col"):
        p.add_argument("--" + key.replace("_", "-"), help="optional")
    p.add_argument("--user-k", type=int, default=it["user_k"])
    p.add_argument("--item-k", type=int, default=it["item_k"])
    p.add_argument(
        "--window",
        type=int,
        nargs=4,
        metavar=("ST_YEAR", "ST_MONTH", "ED_YEAR", "ED_MONTH"),
        help="keep events in these months (default: all)",
    )
    p.add_argument("--split", choices=["temporal", "loo"], default="temporal")
    p.add_argument("--max-history", type=int, default=10)
    p.set_defaults(
        func=lambda a: stage.import_interactions(
            a.out,
            a.interactions,
            a.items,
            a.split,
            a.max_history,
            a.window,
            a.overwrite,
            **{
                k: getattr(a, k)
                for k in (
                    "user_col",
                    "item_col",
                    "time_col",
                    "title_col",
                    "description_col",
                    "brand_col",
                    "category_col",
                    "user_k",
                    "item_k",
                )
            },
        )
    )


def _add_export_and_stats(cmds: argparse._SubParsersAction, d: dict[str, Any]) -> None:
    """``data export-minionerec`` and ``data stats``."""
    p = cmds.add_parser("export-minionerec", help="write a dataset + SIDs in MiniOneRec's layout")
    _common(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--sid", type=Path, required=True)
    p.set_defaults(func=lambda a: stage.export_minionerec_dir(a.data, a.sid, a.out, a.overwrite))

    p = cmds.add_parser("stats", help="print counts, sequence lengths and popularity skew")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_stats)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``sidrec data`` and its subcommands (``d``: the ``data`` defaults)."""
    d = defaults()["data"]
    data = sub.add_parser("data", help="build, import, export and inspect datasets")
    cmds = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    for add in (
        _add_synth,
        _add_amazon18,
        _add_minionerec,
        _add_letter,
        _add_interactions,
        _add_export_and_stats,
    ):
        add(cmds, d)


def _stats(a: argparse.Namespace) -> None:
    ds, manifest = read_dataset(a.data)
    stats = dataset_stats(ds)
    if a.json:
        print(json.dumps(stats, indent=2))
    else:
        print(
            format_stats(
                stats,
                f"{a.data} ({manifest.get('source')}, "
                f"{manifest.get('split', {}).get('protocol')} split)",
            )
        )
