"""``report.html``: the bad-case report as one self-contained page (charts inlined as data
URIs, no scripts or styles fetched), for a browser or a review."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from sidrec.analysis.plots import PLOTS

CAPTIONS = {
    "failure_patterns": "Share of users and share of failures per segment label",
    "failure_rate": "Failure rate per segment label",
    "hr_by_segment": "HR@K inside each label against the rest",
    "sid_quality": "SID quality of the evaluated index",
    "rank_distribution": "Where the target is in the recommendation list",
    "decoding_levels": "How far the best beam follows the target's SID (misses)",
}
# after the page loads, the body says how many charts decoded (read by tests and by eye)
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.querySelectorAll("img")];
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.charts = ok + "/" + imgs.length;
  const status = document.getElementById("charts-status");
  status.textContent = ok + " of " + imgs.length + " charts loaded";
});
</script>"""
STYLE = """<style>
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.case { border-left: 3px solid #c33; padding-left: 0.8em; margin-bottom: 1em; }
.muted { color: #777; }
pre { white-space: pre-wrap; }
</style>"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _value(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else _e(x)


def _segments(report: dict[str, Any]) -> str:
    k = report["top_k"]
    parts = []
    for name, rows in report["segments"].items():
        parts.append(f"<h3>{_e(name)}</h3><p class='muted'>{_e(report['definitions'][name])}</p>")
        parts.append(
            _table(
                [
                    "label",
                    "users",
                    "share of users",
                    "share of failures",
                    "failure rate",
                    f"HR@{k}",
                    f"HR@{k} rest",
                    f"NDCG@{k}",
                    f"NDCG@{k} rest",
                ],
                [
                    [
                        r["label"],
                        r["users"],
                        _pct(r["share_of_users"]),
                        _pct(r["share_of_failures"]),
                        _pct(r["failure_rate"]),
                        _num(r[f"HR@{k}"]),
                        _num(r[f"HR@{k}_rest"]),
                        _num(r[f"NDCG@{k}"]),
                        _num(r[f"NDCG@{k}_rest"]),
                    ]
                    for r in rows
                ],
            )
        )
    for name, why in report["segments_not_computed"].items():
        parts.append(f"<p class='muted'>{_e(name)}: not computed ({_e(why)})</p>")
    return "".join(parts)


def _cases(report: dict[str, Any]) -> str:
    parts = []
    for case in report["examples"]:
        hist = "; ".join(f"{h['title']} ({h['item']})" for h in case["history"][-8:])
        recs = "".join(f"<li>{_e(r['title'])} ({r['item']})</li>" for r in case["recommended"])
        rank = case["target_rank"] or "not in the list"
        parts.append(
            f"<div class='case'><b>user {_e(case['user_id'])}</b><br>"
            f"history (last 8): {_e(hist)}<br>"
            f"target: <b>{_e(case['target']['title'])}</b> ({case['target']['item']}), "
            f"rank {_e(rank)}<br>recommended instead:<ol>{recs}</ol></div>"
        )
    return "".join(parts)


def write_html(report: dict[str, Any], charts: Path, path: Path, summary: str) -> None:
    """Write ``report.html`` at ``path`` from the report, its chart directory and the text
    summary."""
    images = []
    for name in PLOTS:
        data = base64.b64encode((charts / f"{name}.png").read_bytes()).decode()
        images.append(
            f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(CAPTIONS[name])}</figcaption></figure>"
        )
    rec = report["recommended"]
    page = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>sidrec bad-case report: {_e(report['evaluation'])}</title>{STYLE}</head><body>",
        f"<h1>Bad-case report</h1><p>{_e(report['evaluation'])}</p>",
        f"<pre>{_e(summary)}</pre>",
        "<p id='charts-status' class='muted'>charts not checked</p>",
        "<h2>Segments</h2>",
        _segments(report),
        "<h2>Decoding</h2>",
        _table(["target position", "users"], list(report["decoding"]["target_position"].items())),
        _table(
            ["misses by depth", "users"],
            list(report["decoding"].get("misses_by_depth", {}).items()),
        ),
        "<h2>What is recommended</h2>",
        _table(["measure", "value"], [[n, _value(v)] for n, v in rec.items()]),
        "<h2>Charts</h2>",
        *images,
        "<h2>Bad cases</h2>",
        _cases(report),
        CHECK,
        "</body></html>",
    ]
    path.write_text("\n".join(page), encoding="utf-8")
