import numpy as np
import pytest
import torch

from sidrec.core.errors import SidrecError
from sidrec.core.quantizer import Arch, Method, RQModel, encode, sinkhorn_assign
from sidrec.rq.dedup import append_tokens, reassign_last_level
from sidrec.rq.quantize import fit_residual, reconstruction_error


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(12, 16))
    return (centers[rng.integers(12, size=600)] + 0.3 * rng.normal(size=(600, 16))).astype(
        np.float32
    )


@pytest.mark.parametrize("method", list(Method))
def test_fit_is_deterministic_and_shaped(x: np.ndarray, method: Method) -> None:
    a = fit_residual(x, method, levels=3, codebook_size=16, seed=5)
    b = fit_residual(x, method, levels=3, codebook_size=16, seed=5)
    assert a.codes.shape == (600, 3) and a.codebooks.shape == (3, 16, 16)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.codebooks, b.codebooks)
    assert a.codes.min() >= 0 and a.codes.max() < 16


def test_more_levels_reconstruct_better(x: np.ndarray) -> None:
    q = fit_residual(x, Method.RQKMEANS, levels=3, codebook_size=16, seed=0)
    errors = [reconstruction_error(x, q.codes[:, :k], q.codebooks[:k]) for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2] > 0


def test_encode_reproduces_unconstrained_codes(x: np.ndarray) -> None:
    q = fit_residual(x, Method.RQKMEANS, levels=2, codebook_size=16, seed=0)
    assert np.array_equal(encode(x, q.codebooks), q.codes)


def test_constrained_clusters_respect_the_slack(x: np.ndarray) -> None:
    q = fit_residual(x, Method.CONSTRAINED, levels=2, codebook_size=16, seed=0, slack=0.2)
    for level in range(2):
        sizes = np.bincount(q.codes[:, level], minlength=16)
        assert sizes.min() >= np.floor(600 / 16 * 0.8) and sizes.max() <= np.ceil(600 / 16 * 1.2)


def test_bad_sizes_are_rejected(x: np.ndarray) -> None:
    with pytest.raises(SidrecError, match="codebook_size 1000 is larger than the 600 items"):
        fit_residual(x, Method.RQKMEANS, 2, 1000, 0)


def test_large_catalogs_switch_to_sinkhorn_balancing(
    x: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = fit_residual(x, Method.RQKMEANS, 1, 16, 0)
    q = fit_residual(x, Method.CONSTRAINED, 1, 16, 0, constrained_max_items=100)
    assert "using Sinkhorn-balanced k-means" in capsys.readouterr().err
    spread = [np.bincount(c.codes[:, 0], minlength=16).std() for c in (plain, q)]
    assert spread[1] < 0.5 * spread[0]  # far more even than plain k-means


def test_sinkhorn_on_a_sample_balances_every_item_chunk_by_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past SINKHORN_SAMPLE items the potentials come from a sample and every item is assigned
    with them in chunks: clusters stay near N/K, and chunking does not change a label."""
    from sidrec.rq import quantize

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(3000, 8)) + 3 * (rng.random((3000, 1)) < 0.2)).astype(np.float32)
    monkeypatch.setattr(quantize, "SINKHORN_SAMPLE", 600)
    monkeypatch.setattr(quantize, "CHUNK", 700)
    q = fit_residual(x, Method.CONSTRAINED, 1, 10, 0, constrained_max_items=100)
    sizes = np.bincount(q.codes[:, 0], minlength=10)
    assert sizes.min() >= 0.75 * 300 and sizes.max() <= 1.25 * 300
    centroids = q.codebooks[0]
    log_v = rng.normal(size=10)
    chunked = quantize.balanced_labels(x, centroids, log_v, 0.5)
    monkeypatch.setattr(quantize, "CHUNK", 10_000)
    assert np.array_equal(chunked, quantize.balanced_labels(x, centroids, log_v, 0.5))


def test_sinkhorn_assign_balances_a_skewed_problem() -> None:
    rng = np.random.default_rng(0)
    dist = rng.random((400, 4)) + np.array([0.0, 1.0, 1.0, 1.0])  # everyone prefers cluster 0
    sizes = np.bincount(sinkhorn_assign(dist), minlength=4)
    assert np.argmin(dist, axis=1).tolist().count(0) == 400
    assert sizes.min() >= 80 and sizes.max() <= 120


def test_append_tokens_only_where_needed() -> None:
    out = append_tokens([[1, 2], [3, 4], [1, 2], [1, 2]])
    assert out == [[1, 2, 0], [3, 4], [1, 2, 1], [1, 2, 2]]


def test_reassign_moves_all_but_the_closest_to_free_codes() -> None:
    book = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)  # K=4 last-level codes
    codes = np.array([[0, 1], [0, 1], [0, 1], [0, 3], [2, 1]])
    residual = np.array([[1.4], [1.05], [0.2], [3.0], [1.0]], dtype=np.float32)
    out = reassign_last_level(codes, residual, book)
    assert out[1] == [0, 1]  # closest to code 1 keeps it
    assert out[0] == [0, 2]  # next nearest free code (3 is taken by item 3)
    assert out[2] == [0, 0]
    assert out[3] == [0, 3] and out[4] == [2, 1]
    assert len({tuple(c) for c in out}) == 5


def test_reassign_falls_back_to_append_when_a_prefix_is_full() -> None:
    book = np.array([[0.0], [1.0]], dtype=np.float32)
    codes = np.array([[0, 0], [0, 0], [0, 0]])
    out = reassign_last_level(codes, np.zeros((3, 1), dtype=np.float32), book)
    assert len({tuple(c) for c in out}) == 3
    assert sorted(len(c) for c in out) == [2, 3, 3]
    assert not any(tuple(a) == tuple(b[: len(a)]) for a in out for b in out if a is not b)


def test_new_items_avoid_fixed_sids() -> None:
    book = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    fixed = [[0, 1], [0, 2]]
    # a new item on an existing SID moves to the nearest code nobody holds
    out = reassign_last_level(np.array([[0, 1]]), np.array([[1.2]], dtype=np.float32), book, fixed)
    assert out == [[0, 0]]
    # with the prefix full, it cannot take an existing SID and there is no room: a clear error
    with pytest.raises(SidrecError, match="rebuild the SIDs"):
        reassign_last_level(
            np.array([[0, 1]]), np.zeros((1, 1), np.float32), book, [*fixed, [0, 0]]
        )
    # a full prefix: join the nearest group that already carries extra tokens
    out = reassign_last_level(
        np.array([[0, 2]]),
        np.array([[2.0]], np.float32),
        book,
        [[0, 0], [0, 1, 0], [0, 1, 1], [0, 2]],
    )
    assert out == [[0, 1, 2]]
    # where the existing items already carry extra tokens, a new one takes the next token
    assert append_tokens([[5, 5]], fixed=[[5, 5, 0], [5, 5, 1]]) == [[5, 5, 2]]


def test_rqkmeans_plus_starts_at_the_identity(x: np.ndarray) -> None:
    model = RQModel(Arch("rqkmeans-plus", 16, 32, 16, 2, 4))
    xt = torch.from_numpy(x)
    assert torch.equal(model.encoder(xt), xt) and torch.equal(model.decoder(xt), xt)
