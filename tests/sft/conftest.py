"""A small synthetic dataset with unique SIDs (3 levels x 8 codes), shared by the SFT tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sidrec.data.stage import synth, write_imported_sids
from sidrec.sids import SidTable


def random_sids(n_items: int, seed: int = 0, levels: int = 3, k: int = 8) -> SidTable:
    rng = np.random.default_rng(seed)
    picked = rng.choice(k**levels, size=n_items, replace=False)
    codes = [[int(x) // k ** (levels - 1 - lv) % k for lv in range(levels)] for x in picked]
    return SidTable(codes, [k] * levels)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``data`` and ``sid`` directories: 120 items, 150 users, leave-one-out."""
    root = tmp_path_factory.mktemp("sft_run")
    synth(root / "data", n_items=120, n_users=150, seed=0)
    write_imported_sids(root / "sid", random_sids(120), "test", {})
    return {"data": root / "data", "sid": root / "sid", "root": root}
