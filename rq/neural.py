"""Trained residual quantizers (torch): RQ-VAE and RQ-Kmeans+.

Both are an encoder, ``levels`` codebooks applied to the encoder's output residual by residual,
and a decoder, trained on reconstruction plus the RQ codebook and commitment losses with
straight-through gradients.

- ``rqvae``: MLP encoder to a small latent (``latent_dim``) and MLP decoder back; codebooks
  initialised by residual k-means on the untrained encoder's latents; optionally a
  Sinkhorn-balanced last level when coding.
- ``rqkmeans-plus``: encoder ``z = x + MLP(x)`` and decoder ``x' = q + MLP(q)`` whose last layers
  start at zero, so training starts exactly at the balanced RQ-Kmeans solution (codebooks from
  ``rqkmeans-constrained`` on x) and only moves where that lowers the loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sidrec.core.errors import SidrecError
from sidrec.core.quantizer import Arch, Method, RQModel
from sidrec.rq.quantize import fit_residual


def _usage(codes: torch.Tensor, k: int) -> list[float]:
    return [float((torch.bincount(c, minlength=k) > 0).float().mean()) for c in codes.T]


def train_quantizer(
    x: np.ndarray, cfg: dict[str, Any], seed: int, log_path: Path | None = None
) -> tuple[RQModel, list[dict[str, Any]]]:
    """Train an RQ-VAE or RQ-Kmeans+ (``cfg`` = the ``sid`` section) on x [N, D].

    Returns the trained model (on the CPU, in eval mode) and the per-epoch log: loss terms and
    per-level codebook utilization.
    """
    if cfg["epochs"] < 1 or cfg["batch_size"] < 1:
        raise SidrecError(
            f"{cfg['method']} trains: sid.epochs and sid.batch_size must be at least 1, got "
            f"{cfg['epochs']} and {cfg['batch_size']}"
        )
    torch.manual_seed(seed)
    method = Method(cfg["method"])
    plus = method is Method.PLUS
    arch = Arch(
        method.value,
        x.shape[1],
        cfg["hidden_dim"],
        x.shape[1] if plus else cfg["latent_dim"],
        cfg["levels"],
        cfg["codebook_size"],
    )
    model = RQModel(arch)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        z0 = model.encoder(xt).numpy()
    init = fit_residual(
        z0,
        Method.CONSTRAINED if plus else Method.RQKMEANS,
        arch.levels,
        arch.codebook_size,
        seed,
        cfg["kmeans_iters"],
        cfg["constrained_slack"],
        cfg["constrained_max_items"],
    )
    with torch.no_grad():
        model.codebooks.copy_(torch.from_numpy(init.codebooks))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    xt = xt.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    gen = torch.Generator().manual_seed(seed)
    log: list[dict[str, Any]] = []
    bar = tqdm(range(cfg["epochs"]), desc=f"train {method.value}", mininterval=2)
    for epoch in bar:
        model.train()
        sums = {"recon": 0.0, "quant": 0.0}
        all_codes = []
        for batch in torch.randperm(len(xt), generator=gen).split(cfg["batch_size"]):
            xb = xt[batch.to(device)]
            zq, codes, quant = model.quantize(model.encoder(xb), cfg["commitment_beta"])
            recon = ((model.decoder(zq) - xb) ** 2).mean()
            opt.zero_grad()
            (recon + quant).backward()
            opt.step()
            sums["recon"] += recon.item() * len(batch)
            sums["quant"] += quant.item() * len(batch)
            all_codes.append(codes)
        entry = {
            "epoch": epoch + 1,
            **{k: v / len(xt) for k, v in sums.items()},
            "utilization": _usage(torch.cat(all_codes), arch.codebook_size),
        }
        log.append(entry)
        bar.set_postfix(recon=f"{entry['recon']:.4f}", quant=f"{entry['quant']:.4f}")
    if log_path is not None:
        log_path.write_text(json.dumps(log, indent=1) + "\n")
    return model.cpu().eval(), log
