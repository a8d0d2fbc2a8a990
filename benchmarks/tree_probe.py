"""Probe for issue 29: an item-level encoder with an autoregressive SID head, scored exactly.

Each history item enters a SASRec-style causal transformer once, as its item-id embedding
plus the embeddings of its SID codes. The head is the SID trie: at level l the model picks the
next code among the children of the prefix so far, with logits h . (W_l[code] + N_l[node]) +
b_l[node] normalised over the siblings, so p(SID | history) is the product over levels and
sums to one over the catalog. Training minimises -log p(next item's SID) at every position
(the loss SASRec has, with the tree softmax for the flat one). Every SID of the catalog is
scored exactly (one segment log-softmax per level and a gather): no beam search, no invalid
SID. Optionally a trained SASRec's item distribution is distilled (``--distill W``).

    python benchmarks/tree_probe.py [--minutes M] [--out FILE] [--hidden 64] ...

Prints one JSON object: settings, the validation curve, test HR/NDCG@5/10 with history left
out and kept, over all test users, beside the SASRec trained in the same run (same split).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sidrec.baselines.sasrec import _length_grouped_batches, _windows
from sidrec.core.dataset import read_dataset
from sidrec.core.manifest import git_commit, machine
from sidrec.core.metrics import hr_ndcg, target_ranks
from sidrec.core.sasrec_model import SASRec, _init, pad_left
from sidrec.core.sequences import query_rows, user_sequences
from sidrec.core.sids import read_sid_dir
from sidrec.data.stage import import_letter_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


class Trie:
    """Per level, every trie node's parent (int64 [n_l]) and code (int64 [n_l]), and each
    SID's node at each level (int64 [n_sids, L]); SIDs are the distinct code lists."""

    def __init__(self, codes: list[list[int]]) -> None:
        sids = sorted({tuple(c) for c in codes})
        index = {s: i for i, s in enumerate(sids)}
        self.sid_of_item = np.array([index[tuple(c)] for c in codes], dtype=np.int64)
        self.levels = max(len(s) for s in sids)
        if any(len(s) != self.levels for s in sids):
            raise SystemExit("the probe needs SIDs of one length")
        self.parent, self.code, node = [], [], np.zeros((len(sids), self.levels), np.int64)
        prev = np.zeros(len(sids), np.int64)
        for lv in range(self.levels):
            keys = np.array([(prev[s], sids[s][lv]) for s in range(len(sids))])
            uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
            self.parent.append(uniq[:, 0])
            self.code.append(uniq[:, 1])
            node[:, lv] = inverse.reshape(-1)
            prev = node[:, lv]
        self.node = node
        self.sizes = [int(max(c.max() + 1, 1)) for c in self.code]
        # per level >= 1: each parent's children (int64 [n_parents, widest], -1 padding) and
        # each node's place among its siblings
        self.kids, self.slot = [None], [np.zeros(len(self.parent[0]), np.int64)]
        for lv in range(1, self.levels):
            parent = self.parent[lv]
            counts = np.bincount(parent, minlength=len(self.parent[lv - 1]))
            kids = np.full((len(counts), counts.max()), -1, np.int64)
            slot = np.zeros(len(parent), np.int64)
            fill = np.zeros(len(counts), np.int64)
            for n, par in enumerate(parent):
                kids[par, fill[par]], slot[n] = n, fill[par]
                fill[par] += 1
            self.kids.append(kids)
            self.slot.append(slot)


class TreeSID(nn.Module):
    """SASRec's encoder over item-id + SID-code input embeddings, and the trie softmax head."""

    def __init__(self, n_items: int, item_codes: np.ndarray, trie: Trie, a: argparse.Namespace):
        super().__init__()
        self.encoder = SASRec(
            n_items, a.hidden, a.layers, a.heads, a.dropout, a.max_len, position=a.position
        )
        h = a.hidden
        self.register_buffer("item_codes", torch.as_tensor(item_codes))  # (n_items + 1, L)
        self.code_in = nn.ModuleList(nn.Embedding(k + 1, h, padding_idx=0) for k in trie.sizes)
        self.code_out = nn.ModuleList(nn.Embedding(k, h) for k in trie.sizes)
        self.node_out = nn.ModuleList(nn.Embedding(len(p), h) for p in trie.parent)
        self.node_bias = nn.ParameterList(nn.Parameter(torch.zeros(len(p))) for p in trie.parent)
        for lv, (p, c) in enumerate(zip(trie.parent, trie.code, strict=True)):
            self.register_buffer(f"parent{lv}", torch.as_tensor(p))
            self.register_buffer(f"code{lv}", torch.as_tensor(c))
        self.register_buffer("sid_node", torch.as_tensor(trie.node))  # (n_sids, L)
        for lv in range(1, trie.levels):
            self.register_buffer(f"kids{lv}", torch.as_tensor(trie.kids[lv]))
            self.register_buffer(f"slot{lv}", torch.as_tensor(trie.slot[lv]))
        self.levels = trie.levels
        for m in (*self.code_in, *self.code_out, *self.node_out):
            _init(m)
        self.id_scale = a.id_scale
        self.node_emb = a.node_emb
        self.head_dropout = nn.Dropout(a.head_dropout)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, H) of left-padded item-token sequences (B, T)."""
        enc = self.encoder
        codes = self.item_codes[seq]  # (B, T, L), 0 = padding
        extra = sum(emb(codes[..., lv]) for lv, emb in enumerate(self.code_in))
        return enc(seq, enc.item(seq) * self.id_scale + extra)

    def node_vectors(self, lv: int) -> torch.Tensor:
        """The output vector of every node of level ``lv``: (n_l, H)."""
        w = self.code_out[lv].weight[getattr(self, f"code{lv}")]
        return w + self.node_out[lv].weight if self.node_emb else w

    def level_logp(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Per level, log p(node | its parent, h) for every node of the level: (N, n_l)."""
        out = []
        for lv in range(self.levels):
            parent = getattr(self, f"parent{lv}")
            w = self.node_vectors(lv)
            logits = h @ w.T + self.node_bias[lv]  # (N, n_l)
            n_par = int(parent.max()) + 1
            idx = parent[None].expand_as(logits)
            top = torch.full((h.shape[0], n_par), -1e30, device=h.device)
            top = top.scatter_reduce(1, idx, logits.detach(), "amax", include_self=True)
            shifted = logits - top.gather(1, idx)
            total = torch.zeros(h.shape[0], n_par, device=h.device).scatter_add(
                1, idx, shifted.exp()
            )
            out.append(shifted - total.log().gather(1, idx))
        return out

    def sid_logp(self, h: torch.Tensor) -> torch.Tensor:
        """log p(SID | h) of every SID: (N, n_sids)."""
        logps = self.level_logp(h)
        return sum(lp[:, self.sid_node[:, lv]] for lv, lp in enumerate(logps))


def _tree_loss(model: TreeSID, h: torch.Tensor, target_sid: torch.Tensor) -> torch.Tensor:
    """Mean -log p(target SID | h) over rows h (N, H): per level, a softmax over the target's
    siblings only (the children of its prefix)."""
    nodes = model.sid_node[target_sid]  # (N, L)
    logits = h @ model.node_vectors(0).T + model.node_bias[0]
    loss = nn.functional.cross_entropy(logits, nodes[:, 0])
    for lv in range(1, model.levels):
        sib = getattr(model, f"kids{lv}")[nodes[:, lv - 1]]  # (N, F)
        safe = sib.clamp(min=0)
        w = model.node_vectors(lv)[safe]  # (N, F, H)
        logits = (w @ h[:, :, None]).squeeze(-1) + model.node_bias[lv][safe]
        logits = logits.masked_fill(sib < 0, float("-inf"))
        loss = loss + nn.functional.cross_entropy(logits, getattr(model, f"slot{lv}")[nodes[:, lv]])
    return loss


def _distill_loss(
    model: TreeSID,
    h: torch.Tensor,
    teacher: torch.Tensor,
    sid_of_item: torch.Tensor,
    target_sid: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy to a teacher's item distribution (N, n_items) where the tree is uncertain:
    its mass per first-level node against p(first code | h), and its mass per second-level node
    among the target's siblings against p(second code | target's first code, h)."""
    nodes0 = model.sid_node[sid_of_item, 0]  # (n_items,)
    nodes1 = model.sid_node[sid_of_item, 1]
    q0 = torch.zeros(h.shape[0], len(model.node_bias[0])).index_add_(1, nodes0, teacher)
    logp0 = (h @ model.node_vectors(0).T + model.node_bias[0]).log_softmax(-1)
    loss = -(q0 * logp0).sum(1).mean()
    q1 = torch.zeros(h.shape[0], len(model.node_bias[1])).index_add_(1, nodes1, teacher)
    sib = model.kids1[model.sid_node[target_sid, 0]]  # (N, F)
    safe = sib.clamp(min=0)
    q = q1.gather(1, safe).masked_fill(sib < 0, 0.0)
    q = q / q.sum(1, keepdim=True).clamp(min=1e-12)
    w = model.node_vectors(1)[safe]
    logits = (w @ h[:, :, None]).squeeze(-1) + model.node_bias[1][safe]
    logp1 = logits.masked_fill(sib < 0, float("-inf")).log_softmax(-1)
    return loss - (q * logp1.masked_fill(sib < 0, 0.0)).sum(1).mean()


def train_epoch(model, opt, windows, sid_of_item, a, rng, teacher=None) -> float:
    model.train()
    total, count = 0.0, 0
    for batch in _length_grouped_batches(windows, a.batch_size, rng):
        part = [windows[i] for i in batch]
        width = max(len(x) for x, _ in part)
        seq = pad_left([x for x, _ in part], width)
        target = torch.full((len(part), width), -100, dtype=torch.long)
        for r, (_, t) in enumerate(part):
            target[r, width - len(t) :] = torch.as_tensor(t)
        keep = target >= 0
        h = model.head_dropout(model.encode(seq)[keep])
        loss = _tree_loss(model, h, sid_of_item[target[keep]])
        if teacher is not None and a.distill > 0:
            with torch.no_grad():
                th = teacher(seq)[keep]
                tp = (teacher.scores(th) / a.temperature).softmax(-1)  # (N, n_items)
            loss = (1 - a.distill) * loss + a.distill * _distill_loss(
                model, h, tp, sid_of_item, sid_of_item[target[keep]]
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * int(keep.sum())
        count += int(keep.sum())
    return total / max(count, 1)


@torch.no_grad()
def rank(model, histories, sid_of_item, rep_item, a, k=50, exclude=False) -> np.ndarray:
    """Top-k items per history (N, k) by exact SID log-probability (a SID's items tie; the
    smallest item id stands for it, as in the papers' rule)."""
    model.eval()
    out = []
    for b in range(0, len(histories), a.eval_batch):
        hists = histories[b : b + a.eval_batch]
        seq = pad_left([[i + 1 for i in h[-a.max_len :]] for h in hists], a.max_len)
        h = model.encode(seq)[:, -1]
        s = model.sid_logp(h)[:, sid_of_item]  # (B, n_items) via each item's SID
        s[:, rep_item < 0] = float("-inf")  # only one item per SID
        if exclude:
            rows = [r for r, hh in enumerate(hists) for _ in hh]
            s[rows, [i for hh in hists for i in hh]] = float("-inf")
        out.append(s.topk(k, dim=1).indices.numpy())
    return np.concatenate(out)


def evaluate(model, rows, sid_of_item, rep_item, a, exclude) -> dict[str, float]:
    hist = rows["history"].to_list()
    top = rank(model, hist, sid_of_item, rep_item, a, 10, exclude)
    return hr_ndcg(target_ranks(top, rows["target"].to_numpy()), [5, 10])


def _sasrec_teacher(ds, a, windows, rng) -> SASRec | None:
    if a.distill <= 0:
        return None
    from sidrec.baselines.sasrec import rank_items
    from sidrec.baselines.sasrec import train_epoch as sas_epoch

    t = SASRec(ds.items.height, 64, 2, 2, 0.5, a.max_len)
    saved = a.work / f"teacher-{a.seed}-{a.teacher_epochs}.pt"
    if saved.exists():  # the same teacher, trained by an earlier run
        t.load_state_dict(torch.load(saved, weights_only=True))
        return t.eval()
    opt = torch.optim.AdamW(t.parameters(), lr=1e-3)
    valid = query_rows(ds, "valid", a.valid_users, 0)
    best, state, wait = -1.0, None, 0
    for _ in range(a.teacher_epochs):
        sas_epoch(t, opt, windows, 128, rng)
        top, _ = rank_items(t, valid["history"].to_list(), 10, a.max_len, 512, True)
        n10 = hr_ndcg(target_ranks(top, valid["target"].to_numpy()), [10])["NDCG@10"]
        if n10 > best:
            best, state, wait = n10, {k: v.clone() for k, v in t.state_dict().items()}, 0
        else:
            wait += 1
            if wait >= 10:
                break
    t.load_state_dict(state)
    torch.save(state, saved)
    t.eval()
    print(f"teacher valid N@10 {best:.4f}", file=sys.stderr)
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "tree_probe")
    p.add_argument("--out", type=Path)
    p.add_argument("--minutes", type=float, default=30.0, help="training budget")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--position", default="learned")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--id-scale", type=float, default=1.0, help="0 = codes only on the input")
    p.add_argument(
        "--no-node-emb", dest="node_emb", action="store_false", help="code embeddings only"
    )
    p.add_argument("--head-dropout", type=float, default=0.0)
    p.add_argument("--distill", type=float, default=0.0, help="weight of SASRec's soft targets")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--teacher-epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument("--valid-users", type=int, default=5000)
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    data, sid = a.work / "data", a.work / "sid"
    if not (data / "manifest.json").exists():
        letter, titles = SHARED / "letter_amazon14", SHARED / "letter_beauty_titles"
        import_letter_dir(
            data,
            letter,
            "Beauty",
            titles / "Beauty.titles.json",
            titles / "Beauty.item2asin.tsv",
            20,
            sid,
            overwrite=True,
        )
    ds, _ = read_dataset(data)
    table = read_sid_dir(sid)
    trie = Trie(table.codes)
    n = ds.items.height
    item_codes = np.zeros((n + 1, trie.levels), np.int64)
    item_codes[1:] = np.array(table.codes) + 1
    sid_of_item = torch.as_tensor(trie.sid_of_item)
    rep_item = np.full(n, -1)
    first = {}
    for i, s in enumerate(trie.sid_of_item.tolist()):
        first.setdefault(s, i)
    rep_item[list(first.values())] = 1
    windows = _windows(user_sequences(ds), a.max_len)
    teacher = _sasrec_teacher(ds, a, windows, rng)
    model = TreeSID(n, item_codes, trie, a)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    valid = query_rows(ds, "valid", a.valid_users, 0)
    curve, best, state, wait = [], -1.0, None, 0
    started = time.time()
    epoch = 0
    while time.time() - started < a.minutes * 60:
        epoch += 1
        loss = train_epoch(model, opt, windows, sid_of_item, a, rng, teacher)
        m = evaluate(model, valid, sid_of_item, rep_item, a, True)
        curve.append(
            {
                "epoch": epoch,
                "loss": round(loss, 4),
                "minutes": round((time.time() - started) / 60, 2),
                **{k: round(v, 4) for k, v in m.items()},
            }
        )
        print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
        if m["NDCG@10"] > best:
            best, wait = m["NDCG@10"], 0
            state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            wait += 1
            if wait >= a.patience:
                break
    minutes = (time.time() - started) / 60
    model.load_state_dict(state)
    test = ds.test
    result = {
        "probe": "tree_sid",
        "settings": vars(a) | {"work": str(a.work), "out": str(a.out)},
        "train_minutes": round(minutes, 1),
        "epochs": epoch,
        "curve": curve,
        "valid_best_ndcg10": best,
        "test_history_left_out": evaluate(model, test, sid_of_item, rep_item, a, True),
        "test_history_kept": evaluate(model, test, sid_of_item, rep_item, a, False),
        "test_users": test.height,
        "machine": machine(),
        "commit": git_commit(),
    }
    if teacher is not None:  # SASRec trained in the same run, on the same split
        from sidrec.baselines.sasrec import rank_items

        for name, exclude in (("left_out", True), ("kept", False)):
            top, _ = rank_items(teacher, test["history"].to_list(), 10, a.max_len, 512, exclude)
            ranks = target_ranks(top, test["target"].to_numpy())
            result[f"sasrec_test_history_{name}"] = hr_ndcg(ranks, [5, 10])
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
