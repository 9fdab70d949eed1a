"""Sanity checks of kohonen_vq.reference against small cases computed by hand from the paper's equations."""
from __future__ import annotations

import math

import pytest
import torch

from kohonen_vq import reference as ref


def test_grid_coordinates_first_axis_fastest() -> None:
    expected = [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]
    assert ref.grid_coordinates((3, 2)).tolist() == expected
    assert ref.grid_coordinates((4,)).tolist() == [[0], [1], [2], [3]]
    assert ref.grid_coordinates((2, 1, 2)).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 1], [1, 0, 1]]


def test_hard_3x3_grid() -> None:
    # Eq. 15 with t = 2, tau = 0.5: neighbours weigh 1/(1 + 1) = 0.5. Codes: 0 1 2 / 3 4 5 / 6 7 8.
    a = ref.neighbourhood_matrix((3, 3), "hard", step=2, shrink=0.5)
    h = 0.5
    assert a[4].tolist() == [h, h, h, h, 1, h, h, h, h]  # the centre sees all eight surrounding nodes
    assert a[0].tolist() == [1, h, 0, h, h, 0, 0, 0, 0]  # a corner sees three
    assert a[1].tolist() == [h, 1, h, h, h, h, 0, 0, 0]  # an edge node sees five
    assert torch.equal(a, a.T)


def test_hard_1d_has_two_neighbours() -> None:
    a = ref.neighbourhood_matrix((4,), "hard", step=0)
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    assert torch.equal(a, expected)


def test_hard_3d_is_chebyshev_distance_one() -> None:
    a = ref.neighbourhood_matrix((3, 3, 3), "hard", step=1, shrink=1.0)
    centre = 13  # (1, 1, 1): all 26 other nodes are neighbours
    assert a[centre].sum().item() == pytest.approx(1 + 26 * 0.5)
    assert a[0].count_nonzero().item() == 8  # corner (0, 0, 0): the 2x2x2 box


def test_gaussian_eq16() -> None:
    a = ref.neighbourhood_matrix((3,), "gaussian", step=0)
    assert a[0].tolist() == pytest.approx([1, math.exp(-1), math.exp(-4)])
    # sigma(t)^2 = sigma^2 / (1 + tau t) = 4 / 2
    a = ref.neighbourhood_matrix((3,), "gaussian", step=1, shrink=1.0, sigma=2.0)
    assert a[0].tolist() == pytest.approx([1, math.exp(-0.5), math.exp(-2)])
    a = ref.neighbourhood_matrix((2, 2), "gaussian", step=0)
    assert a[0, 3].item() == pytest.approx(math.exp(-2))  # diagonal neighbour, squared distance 2


def test_exponential_authors_kernel() -> None:
    a = ref.neighbourhood_matrix((3,), "exponential", step=0, base=10.0)
    assert a[0].tolist() == pytest.approx([1, math.exp(-0.1), math.exp(-0.2)])
    a = ref.neighbourhood_matrix((2, 2), "exponential", step=3, shrink=1.0, base=10.0)
    assert a[0, 3].item() == pytest.approx(math.exp(-math.sqrt(2) * 4 / 10))


def test_none_is_identity() -> None:
    assert torch.equal(ref.neighbourhood_matrix((4, 2), "none", step=5), torch.eye(8))


def test_unknown_neighbourhood() -> None:
    with pytest.raises(ValueError, match="unknown neighbourhood 'box'"):
        ref.neighbourhood_matrix((4,), "box", step=0)


@pytest.mark.parametrize("kind", ["hard", "gaussian", "exponential"])
def test_neighbourhood_properties(kind: str) -> None:
    a = ref.neighbourhood_matrix((5, 3), kind, step=2)
    assert torch.equal(a, a.T)
    assert torch.all(a.diagonal() == 1)
    assert torch.all((a >= 0) & (a <= 1))
    # Shrinking: A^(t) tends to the identity (Remark A.1 as t -> infinity).
    far = ref.neighbourhood_matrix((5, 3), kind, step=10**7, shrink=1.0)
    assert torch.allclose(far, torch.eye(15), atol=1e-6)


def test_laplace_smooth() -> None:
    out = ref.laplace_smooth(torch.tensor([0.0, 1.0, 3.0]), eps=0.5)
    # (N + eps) / (total + K eps) * total = [0.5, 1.5, 3.5] / 5.5 * 4
    assert out.tolist() == pytest.approx([0.5 / 5.5 * 4, 1.5 / 5.5 * 4, 3.5 / 5.5 * 4])
    assert out.sum().item() == pytest.approx(4.0)


def test_assign_ties_to_lowest_index() -> None:
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    x = torch.tensor([[0.9, 0.1], [0.0, 1.0], [0.5, 0.0]])
    indices, sqdist = ref.assign(x, codebook)
    # Row 1 is at squared distance 1 from codes 0 and 2; row 2 at 0.25 from codes 0 and 1.
    assert indices.tolist() == [1, 0, 0]
    assert sqdist.tolist() == pytest.approx([0.02, 1.0, 0.25])


def test_cluster_stats() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    sums, counts = ref.cluster_stats(x, torch.tensor([2, 0, 2]), num_codes=4)
    assert sums.tolist() == [[3, 4], [0, 0], [6, 8], [0, 0]]
    assert counts.tolist() == [1, 0, 2, 0]


@pytest.mark.parametrize("update_empty", [True, False])
@pytest.mark.parametrize("init_count", [0.0, 1.0])
def test_none_neighbourhood_is_ema_vq(update_empty: bool, init_count: float) -> None:
    # Remark 2.1: with A = I, Eqs. 9-11 are EMA-VQ, Eqs. 6-8 (with METHOD.md §2 smoothing / Update-0).
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, generator=gen)
    n = torch.full((6,), init_count)
    sums = torch.randn(6, 3, generator=gen)
    counts = torch.tensor([2.0, 0, 1, 0, 4, 1])
    gamma, eps = 0.9, 1e-3
    new_w, new_m, new_n = ref.som_update(w, w, n, sums, counts, grid=(6,), neighbourhood="none", step=3,
                                         decay=gamma, eps=eps, update_empty=update_empty)
    m_ema = gamma * w + (1 - gamma) * sums  # Eq. 6
    n_ema = gamma * n + (1 - gamma) * counts  # Eq. 7
    if update_empty:
        n_ema = (n_ema + eps) / (n_ema.sum() + 6 * eps) * n_ema.sum()
        w_ema = m_ema / n_ema[:, None]  # Eq. 8
    else:
        hit = counts > 0
        n_ema = torch.where(hit, n_ema, n)
        m_ema = torch.where(hit[:, None], m_ema, w)
        w_ema = torch.where(hit[:, None], m_ema / n_ema[:, None], w)
    torch.testing.assert_close(new_n, n_ema)
    torch.testing.assert_close(new_m, m_ema)
    torch.testing.assert_close(new_w, w_ema)


@pytest.mark.parametrize(
    "update_empty, expected_w, expected_m, expected_n",
    [
        # A = tridiag(1) at t = 0: c' = [2, 2, 0], S' = [2, 2, 0]; N = [1.5, 1.5, 0.5] (total 3.5) is
        # smoothed with eps = 0.5 to (N + 0.5) / 5 * 3.5.
        (True, [1 / 1.4, 6 / 1.4, 10 / 0.7], [1.0, 6.0, 10.0], [1.4, 1.4, 0.7]),
        # Code 2 has no weighted writes and keeps N = 1, m = w = 20; the others are not smoothed.
        (False, [1 / 1.5, 6 / 1.5, 20.0], [1.0, 6.0, 20.0], [1.5, 1.5, 1.0]),
    ],
)
def test_ksom_hard_1d_by_hand(update_empty: bool, expected_w: list[float], expected_m: list[float],
                              expected_n: list[float]) -> None:
    w = torch.tensor([[0.0], [10.0], [20.0]])
    sums, counts = torch.tensor([[2.0], [0.0], [0.0]]), torch.tensor([2.0, 0.0, 0.0])
    new_w, new_m, new_n = ref.som_update(w, w, torch.ones(3), sums, counts, grid=(3,), neighbourhood="hard",
                                         step=0, decay=0.5, eps=0.5, update_empty=update_empty)
    assert new_w.squeeze(1).tolist() == pytest.approx(expected_w)
    assert new_m.squeeze(1).tolist() == pytest.approx(expected_m)
    assert new_n.tolist() == pytest.approx(expected_n)


def test_zero_counts_keep_codebook_under_smoothing() -> None:
    # N^(0) = 0 and an empty batch: the smoothed total stays 0, so w = m / N is never formed.
    w = torch.randn(4, 2)
    new_w, _, new_n = ref.som_update(w, w, torch.zeros(4), torch.zeros(4, 2), torch.zeros(4), grid=(4,))
    assert torch.equal(new_w, w)
    assert torch.equal(new_n, torch.zeros(4))
