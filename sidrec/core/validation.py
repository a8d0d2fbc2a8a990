"""Validation by ranking quality, for every training stage: on each evaluation the model
decodes a seeded sample of validation users with the constrained beam search ``evaluate``
uses, and HR@K / NDCG@K join the trainer's metrics (``eval_hr@10``, ``eval_ndcg@10``, ...),
so that the best checkpoint and early stopping can follow ``ndcg@10`` instead of the loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from sidrec.core.decoding import PrefixIndex, auto_batch_size, beam_search, check_batch_size
from sidrec.core.errors import SidrecError
from sidrec.core.metrics import cutoffs, hr_ndcg, target_ranks

SELECT_BY = ("loss", "ndcg@10")


def metric_for_best(select_by: str) -> tuple[str, bool]:
    """The trainer's ``metric_for_best_model`` and ``greater_is_better`` for a
    ``select_by`` setting (``loss`` or ``ndcg@10``)."""
    if select_by not in SELECT_BY:
        raise SidrecError(f"select_by must be one of {SELECT_BY}, got {select_by!r}")
    return ("eval_loss", False) if select_by == "loss" else ("eval_ndcg@10", True)


class RankingValidation(TrainerCallback):
    """Adds HR@K / NDCG@K of constrained beam search on ``prompts`` to each evaluation.

    Args:
        index: the catalog's prefix index, on the model's device.
        prompts: token ids of each validation user's prompt, encoded as in evaluation.
        targets: (N,) the SID index of each user's target.
        num_beams: K, the beams (and recommendations) per user.
        pad_token_id: the padding token.
        batch_size: users decoded together, or ``auto`` (found at the first evaluation, within
            ``auto_seconds`` a batch on CPU: :func:`sidrec.core.decoding.auto_batch_size`).
        head: the decoding head (``decoding.head``).

    Set ``trainer`` after building the trainer, so the metrics are also logged (console,
    ``train_log.json``, SwanLab).
    """

    def __init__(
        self,
        index: PrefixIndex,
        prompts: Sequence[Sequence[int]],
        targets: np.ndarray,
        num_beams: int,
        pad_token_id: int,
        batch_size: int | str = 32,
        head: str = "full",
        auto_seconds: float = 10.0,
    ) -> None:
        if num_beams < 10:
            raise SidrecError(f"validation by NDCG@10 needs at least 10 beams, got {num_beams}")
        self.index, self.prompts, self.targets = index, list(prompts), np.asarray(targets)
        check_batch_size(batch_size)
        self.k, self.pad, self.batch_size, self.head = num_beams, pad_token_id, batch_size, head
        self.auto_seconds = auto_seconds
        self.trainer: Trainer | None = None

    def ranking_metrics(self, model: Any) -> dict[str, float]:
        """``hr@K`` and ``ndcg@K`` of ``model`` on the validation users."""
        was_training = model.training
        model.eval()
        try:
            if self.batch_size == "auto":
                self.batch_size = auto_batch_size(
                    model, self.index, self.prompts, self.k, self.pad, self.head, self.auto_seconds
                )
            found = [
                beam_search(
                    model,
                    self.index,
                    self.prompts[b : b + self.batch_size],
                    self.k,
                    self.pad,
                    self.head,
                )[0]
                .cpu()
                .numpy()
                for b in range(0, len(self.prompts), self.batch_size)
            ]
        finally:
            model.train(was_training)
        ranks = target_ranks(np.concatenate(found), self.targets)
        return {k.lower(): v for k, v in hr_ndcg(ranks, cutoffs(self.k)).items()}

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):  # noqa: ANN001, ANN201
        if model is None or metrics is None:
            return
        with torch.inference_mode():
            found = {f"eval_{k}": v for k, v in self.ranking_metrics(model).items()}
        metrics.update(found)
        if self.trainer is not None:
            self.trainer.log(found)
