"""kohonen_vq.topography against hand-computed cases: neighbour pairs, U-matrix, decoded-neighbour ratio,
latent perturbation."""
from __future__ import annotations

import pytest
import torch

from kohonen_vq.grid import indices_to_coords
from kohonen_vq.topography import decoded_neighbour_ratio, grid_neighbour_pairs, perturbed_indices, u_matrix


# Code k of grid (3, 2) sits at (k mod 3, k div 3):   0 1 2
#                                                     3 4 5
def test_grid_neighbour_pairs_2d_axis_by_axis() -> None:
    pairs = grid_neighbour_pairs((3, 2))
    assert pairs.tolist() == [[0, 1], [1, 2], [3, 4], [4, 5],  # along axis 0
                              [0, 3], [1, 4], [2, 5]]  # along axis 1; no diagonals
    assert pairs.dtype == torch.int64


@pytest.mark.parametrize("grid, expected", [((4,), [[0, 1], [1, 2], [2, 3]]), ((1,), []), ((1, 1), [])])
def test_grid_neighbour_pairs_1d_and_single_cell(grid: tuple[int, ...], expected: list[list[int]]) -> None:
    pairs = grid_neighbour_pairs(grid)
    assert pairs.tolist() == expected and pairs.shape == (len(expected), 2)


def test_u_matrix_by_hand() -> None:
    # One-dimensional codes w_k = k^2 on grid (3, 2); neighbour distances: along axis 0 |1-0| = 1, |4-1| = 3,
    # |16-9| = 7, |25-16| = 9; along axis 1 |9-0| = 9, |16-1| = 15, |25-4| = 21.
    codebook = torch.tensor([0.0, 1, 4, 9, 16, 25])[:, None]
    u = u_matrix(codebook, (3, 2))
    expected = torch.tensor([[(1 + 9) / 2, (7 + 9) / 2],  # u[c0, c1]: codes 0 and 3
                             [(1 + 3 + 15) / 3, (7 + 9 + 15) / 3],  # codes 1 and 4
                             [(3 + 21) / 2, (9 + 21) / 2]])  # codes 2 and 5
    assert u.shape == (3, 2)
    torch.testing.assert_close(u, expected)


def test_u_matrix_1d_euclidean_and_errors() -> None:
    codebook = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]])  # distances 5 and 0
    torch.testing.assert_close(u_matrix(codebook, (3,)), torch.tensor([5.0, 2.5, 0.0]))
    torch.testing.assert_close(u_matrix(torch.ones(1, 4), (1,)), torch.zeros(1))  # no neighbour: 0
    with pytest.raises(ValueError, match=r"grid \(4, 2\) holds 8 codes, codebook has 6"):
        u_matrix(torch.zeros(6, 2), (4, 2))


def test_decoded_neighbour_ratio_ordered_below_one_shuffled_about_one() -> None:
    grid = (16, 16)
    # "Images" of two pixels holding the code's grid coordinates: neighbours differ by 1, random pairs by ~7.
    ordered = indices_to_coords(torch.arange(256), grid).float()
    ratio = decoded_neighbour_ratio(ordered, grid, generator=torch.Generator().manual_seed(0))
    assert 0.1 < ratio < 0.3
    shuffled = ordered[torch.randperm(256, generator=torch.Generator().manual_seed(1))]
    assert decoded_neighbour_ratio(shuffled, grid, generator=torch.Generator().manual_seed(0)) == \
        pytest.approx(1.0, abs=0.1)


def test_decoded_neighbour_ratio_exact_on_a_line() -> None:
    # Grid (2,): the one neighbour pair is also the only random pair, so the ratio is exactly 1.
    images = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert decoded_neighbour_ratio(images, (2,), num_random=16) == pytest.approx(1.0)


def test_decoded_neighbour_ratio_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 decoded images"):
        decoded_neighbour_ratio(torch.zeros(1, 3, 4, 4), (1,))
    with pytest.raises(ValueError, match=r"grid \(4, 4\) holds 16 codes, but there are 8 images"):
        decoded_neighbour_ratio(torch.zeros(8, 3), (4, 4))


# Grid (4, 3): code k at (k mod 4, k div 4).   0  1  2  3
#                                              4  5  6  7
#                                              8  9 10 11
def test_perturbed_indices_diagonal_and_clamped() -> None:
    indices = torch.tensor([[0, 5], [11, 6]])
    moved = perturbed_indices(indices, (4, 3), offsets=(-1, 0, 1))
    assert moved.shape == (3, 2, 2)
    assert moved[0].tolist() == [[0, 0], [6, 1]]  # -1: (0,0) clamps to itself; (1,1) -> (0,0); (3,2) -> (2,1)
    assert moved[1].tolist() == indices.tolist()
    assert moved[2].tolist() == [[5, 10], [11, 11]]  # +1: (0,0) -> (1,1); (1,1) -> (2,2); (3,2) clamps


def test_perturbed_indices_along_one_axis_and_default_offsets() -> None:
    code = torch.tensor([5])  # (1, 1)
    assert perturbed_indices(code, (4, 3), offsets=(-2, 1), axis=0).flatten().tolist() == [4, 6]  # x: 0 (clamped), 2
    assert perturbed_indices(code, (4, 3), offsets=(-1, 1), axis=1).flatten().tolist() == [1, 9]  # y: 0, 2
    line = perturbed_indices(torch.tensor([2]), (5,))  # offsets -3..3 on a 1D grid of 5
    assert line.flatten().tolist() == [0, 0, 1, 2, 3, 4, 4]
