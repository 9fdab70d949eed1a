"""Property-based tests (hypothesis) of the native ops against ``kohonen_vq.reference``.

Hypothesis draws the structure of every case (shapes, grid, dtype, memory layout, value pattern, magnitude,
hyper-parameters, CPU instruction set) and a seed; the tensor values come from ``torch.Generator(seed)``, so
a failure prints everything needed to rebuild the inputs. Runs are derandomised (fixed seeds, no example
database), so CI sees the same examples every time; KOHONEN_VQ_HYPOTHESIS_SCALE=10 multiplies the number of
examples for a deeper local run.

Tolerances are first-order floating-point error bounds (u = 2^-24, gamma_n = n u / (1 - n u), Higham,
*Accuracy and Stability of Numerical Algorithms*, §3.1) evaluated per element from float64 magnitudes, plus
one float32 subnormal spacing (2^-149) per operation that may underflow. The numerical range in which each
op is exact up to these bounds, and what it does outside that range, is documented in docs/errors.md
("Numerical range of the ops"); the tests below state those rules.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator, Sequence
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import kohonen_vq
from kohonen_vq import ops
from kohonen_vq import reference as ref

SCALE = float(os.environ.get("KOHONEN_VQ_HYPOTHESIS_SCALE", "1"))
SUPPORTED_ISAS = kohonen_vq.build_info()["cpu_isas_supported"]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
U = 2.0**-24  # unit roundoff of float32
TINY = 2.0**-149  # smallest float32 subnormal: the absolute error of one operation that underflows
FLT_MAX = torch.finfo(torch.float32).max


def examples(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True, database=None,
                    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


@pytest.fixture(autouse=True, scope="module")
def restore_cpu_isa() -> Iterator[None]:
    previous = ops.set_cpu_isa("auto")
    yield
    ops.set_cpu_isa(previous)


@contextmanager
def cpu_isa(data: st.DataObject, device: str) -> Iterator[None]:
    """On CPU, runs the block with an assignment kernel (instruction set) drawn by hypothesis."""
    if device != "cpu":
        yield
        return
    previous = ops.set_cpu_isa(data.draw(st.sampled_from(SUPPORTED_ISAS), label="cpu_isa"))
    try:
        yield
    finally:
        ops.set_cpu_isa(previous)


# --------------------------------------------------------------------------------------------- inputs
def divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


@st.composite
def grids(draw: st.DrawFn, max_codes: int = 70) -> tuple[int, ...]:
    """A grid of 1 to 3 axes whose product is K, 1 <= K <= max_codes (size-1 axes included)."""
    k = draw(st.integers(1, max_codes), label="K")
    sizes, rest = [], k
    for _ in range(draw(st.integers(0, 2), label="extra axes")):
        s = draw(st.sampled_from(divisors(rest)))
        sizes.append(s)
        rest //= s
    return tuple(draw(st.permutations([*sizes, rest]), label="grid"))


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout (a view of a different buffer)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "transposed":  # column-major storage seen through .T (1-D: a reversed copy read backwards)
        return t.T.contiguous().T if t.dim() == 2 else t.flip(0).contiguous().flip(0)
    if layout == "sliced":  # every 2nd row and 3rd column of a larger buffer, at a non-zero storage offset
        if t.dim() == 1:
            buf = torch.zeros(2 * t.shape[0] + 1, dtype=t.dtype, device=t.device)
            view = buf[1::2]
        else:
            buf = torch.zeros(2 * t.shape[0] + 1, 3 * t.shape[1] + 2, dtype=t.dtype, device=t.device)
            view = buf[1::2, 2::3]
        view.copy_(t)
        return view
    raise ValueError(layout)


LAYOUTS = ["contiguous", "transposed", "sliced"]


def exponent_range(dtype: torch.dtype, huge: bool = False) -> tuple[int, int]:
    """Decimal exponents of the magnitudes drawn for ``dtype``: float16 has a range of 6e-8 .. 65504;
    float32 and bfloat16 share the float32 exponent range, where 1e+-18 squares and sums stay finite
    and normal; ``huge`` asks for magnitudes whose squares overflow float32."""
    if huge:
        return 19, 37
    return (-4, 3) if dtype == torch.float16 else (-18, 18)


def values(gen: torch.Generator, shape: Sequence[int], pattern: str, exponent: int, dtype: torch.dtype) -> torch.Tensor:
    """float64 values of one pattern around 10**exponent, rounded to ``dtype`` (returned in ``dtype``)."""
    shape = tuple(shape)
    if pattern == "normal":
        v = torch.randn(shape, generator=gen, dtype=torch.float64) * 10.0**exponent
    elif pattern == "wide":  # every element its own magnitude, over 4 decades
        mag = 10.0 ** (exponent - 2 + 4 * torch.rand(shape, generator=gen, dtype=torch.float64))
        v = mag * (torch.randint(0, 2, shape, generator=gen) * 2 - 1)
    elif pattern == "integers":  # exactly representable, so every distance below is exact
        v = torch.randint(-8, 9, shape, generator=gen).double() * 2.0**exponent
    else:
        raise ValueError(pattern)
    big = torch.finfo(dtype).max
    return v.clamp(-big, big).to(dtype)


def pick_rows(gen: torch.Generator, pool: torch.Tensor, n: int) -> torch.Tensor:
    """n rows drawn with replacement from ``pool`` (exact repeats)."""
    return pool[torch.randint(0, pool.shape[0], (n,), generator=gen)] if n else pool[:0]


# --------------------------------------------------------------------------------------------- assign
def exact_sqdist(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, K) squared distances of the float32 values in float64 (exact up to ~1e-16 relative)."""
    return ((x.double()[:, None] - codebook.double()[None]) ** 2).sum(-1)


def score_error_bound(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, K) bound on the error of the kernels' ranking score ||w||^2 - 2 x.w in float32: both sums run over
    D products (one rounding each, FMA or not) and one more rounding joins them, so the error is at most
    gamma_{D+2} (sum_d w_d^2 + 2 sum_d |x_d w_d|), plus 2^-150 per product that underflows."""
    d = x.shape[1]
    xa, wa = x.double().abs(), codebook.double().abs()
    mag = (wa**2).sum(-1)[None] + 2 * xa @ wa.T
    return gamma(d + 2) * mag + (2 * d + 1) * TINY / 2


def well_scaled_rows(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Rows for which no float32 intermediate of the kernels can overflow: (||x|| + max ||w||)^2 bounds
    |score|, ||w||^2, every partial dot product and every squared distance. A quarter of FLT_MAX leaves room
    for rounding."""
    xn = x.double().norm(dim=1)
    wn = codebook.double().norm(dim=1).max()
    return (xn + wn) ** 2 <= FLT_MAX / 4


def check_assign_contract(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor, sqdist: torch.Tensor,
                          device: str) -> None:
    """What holds for every finite input, whatever its magnitude (docs/errors.md, numerical range)."""
    n, k = x.shape[0], codebook.shape[0]
    assert indices.dtype == torch.int64 and sqdist.dtype == torch.float32
    assert indices.shape == sqdist.shape == (n,)
    assert indices.device.type == sqdist.device.type == device
    indices, sqdist = indices.cpu(), sqdist.cpu()
    xf, wf = x.float(), codebook.float()
    assert ((indices >= 0) & (indices < k)).all(), "index out of range"
    assert not sqdist.isnan().any(), "NaN squared distance from finite inputs"
    # sqdist is the chosen code's squared distance, recomputed directly: relative error gamma_{D+3}
    # (difference, square, D-term sum of non-negative values); +inf exactly when it exceeds float32.
    chosen = exact_sqdist(xf, wf).gather(1, indices[:, None]).squeeze(1) if n else torch.zeros(0).double()
    tol = gamma(x.shape[1] + 3) * chosen + (x.shape[1] + 1) * TINY
    finite = sqdist.isfinite()
    assert ((sqdist.double() - chosen).abs()[finite] <= tol[finite]).all(), "sqdist is not the chosen code's"
    assert (chosen[~finite] >= FLT_MAX * (1 - gamma(x.shape[1] + 3))).all(), "sqdist overflowed below FLT_MAX"
    # Identical codes score identically, so among bitwise-equal codes the lowest index is the one chosen.
    if n:
        first_copy = torch.tensor([int((wf == wf[i]).all(1).nonzero()[0]) for i in range(k)])
        assert torch.equal(indices, first_copy[indices]), "a duplicated code was chosen over its first copy"
    # Identical rows get identical results (no dependence on a row's position in the batch or its tile).
    if n:
        uniq, inverse = torch.unique(xf, dim=0, return_inverse=True)
        first_row = torch.full((uniq.shape[0],), -1, dtype=torch.long)
        first_row.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin", include_self=False)
        rep = first_row[inverse]
        assert torch.equal(indices, indices[rep]) and torch.equal(sqdist, sqdist[rep]), "repeated rows differ"


def gamma64(n: int) -> float:
    return n * 2.0**-53 / (1 - n * 2.0**-53)


def check_nearest(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor) -> None:
    """On ``rows``, the chosen code is a nearest code up to the score error bound, and is the reference's code
    wherever the nearest code is unambiguous.

    Codes are compared by the float64 score ||w||^2 - 2 x.w (the distance minus ||x||^2): its own float64
    error (gamma64_{D+2} of the same magnitudes) is negligible, whereas the distances themselves would carry
    a float64 error relative to ||x||^2, which can exceed the kernels' float32 bound when x is far from every
    code."""
    indices = indices.cpu()
    xf, wf = x.float(), codebook.float()
    x64, w64 = xf.double(), wf.double()
    score = (w64**2).sum(-1)[None] - 2 * x64 @ w64.T
    bound = score_error_bound(xf, wf)
    bound = bound + gamma64(x.shape[1] + 2) * bound / gamma(x.shape[1] + 2)  # the float64 scores' own error
    best = score.argmin(1)
    chosen = score.gather(1, indices[:, None]).squeeze(1)
    minimum = score.gather(1, best[:, None]).squeeze(1)
    allowed = bound.gather(1, indices[:, None]).squeeze(1) + bound.gather(1, best[:, None]).squeeze(1)
    bad = rows & (chosen - minimum > allowed)
    assert not bad.any(), (f"rows {bad.nonzero().flatten().tolist()[:5]}: chosen score {chosen[bad][:3].tolist()} "
                           f"> nearest {minimum[bad][:3].tolist()} + {allowed[bad][:3].tolist()}")
    # Unambiguous rows: every code with another value than the reference's choice scores higher by more than
    # the kernel's error bound plus the reference's own float32 error (gamma_{D+3} of each distance). There
    # the chosen code must have the reference's value. (Indices are compared by value: the reference sums
    # (x - w)^2 in float32 in an order that may differ from row to row of a non-contiguous codebook, so it
    # does not always return the first of several identical codes; the kernels do, see
    # check_assign_contract.)
    ref_idx, _ = ref.assign(xf, wf)
    dist = score + (x64**2).sum(-1, keepdim=True)
    same_code = (wf[None] == wf[ref_idx][:, None]).all(-1)  # (N, K): code equals the reference's choice
    ref_dist = dist.gather(1, ref_idx[:, None])
    margin = bound + bound.gather(1, ref_idx[:, None]) + gamma(x.shape[1] + 3) * (dist + ref_dist)
    clear = ((dist - ref_dist > margin) | same_code).all(1) & rows
    assert torch.equal(wf[indices[clear]], wf[ref_idx[clear]]), "not the reference's code on an unambiguous row"


@st.composite
def assign_case(draw: st.DrawFn, huge: bool = False) -> dict:
    n = draw(st.integers(0, 300), label="N")
    k = draw(st.integers(1, 70), label="K")
    d = draw(st.integers(1, 40), label="D")
    dtype = torch.float32 if huge else draw(st.sampled_from(DTYPES), label="dtype")
    lo, hi = exponent_range(dtype, huge)
    return dict(n=n, k=k, d=d, dtype=dtype,
                pattern=draw(st.sampled_from(["normal", "wide"]), label="pattern"),
                x_exp=draw(st.integers(lo, hi), label="x exponent"),
                w_exp=draw(st.integers(lo, hi), label="codebook exponent"),
                distinct_codes=draw(st.integers(1, k), label="distinct codes"),
                distinct_rows=draw(st.integers(1, max(n, 1)), label="distinct rows"),
                near=draw(st.sampled_from([0.0, 1e-7, 1e-3, 1.0]), label="relative offset of rows from codes"),
                x_layout=draw(st.sampled_from(LAYOUTS + ["expanded"]), label="x layout"),
                w_layout=draw(st.sampled_from(LAYOUTS), label="codebook layout"),
                seed=draw(st.integers(0, 2**32 - 1), label="seed"))


def build_assign_inputs(c: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook: ``distinct_codes`` codes, repeated at random positions (exact duplicates). Rows: either
    around the codes at relative distance ``near`` (0: exact copies of codes, 1e-7: near-ties at float32
    resolution) and drawn with repeats from ``distinct_rows`` vectors."""
    gen = torch.Generator().manual_seed(c["seed"])
    pool = values(gen, (c["distinct_codes"], c["d"]), c["pattern"], c["w_exp"], c["dtype"])
    codebook = pick_rows(gen, pool, c["k"])
    codebook[: c["distinct_codes"]] = pool[torch.randperm(c["distinct_codes"], generator=gen)]  # each at least once
    codebook = codebook[torch.randperm(c["k"], generator=gen)]
    rows = values(gen, (c["distinct_rows"], c["d"]), c["pattern"], c["x_exp"], c["dtype"]).double()
    if c["near"] != 1.0 or c["x_exp"] == c["w_exp"]:
        centres = pick_rows(gen, codebook.double(), c["distinct_rows"])
        rows = centres + c["near"] * (rows / 10.0 ** c["x_exp"]) * centres.abs().clamp_min(10.0 ** c["w_exp"])
    big = torch.finfo(c["dtype"]).max
    rows = rows.clamp(-big, big).to(c["dtype"])
    if c["x_layout"] == "expanded":  # one vector broadcast to every row: stride 0
        x = rows[:1].expand(c["n"], c["d"]) if c["n"] else rows[:0]
    else:
        x = relayout(pick_rows(gen, rows, c["n"]), c["x_layout"])
    return x, relayout(codebook, c["w_layout"])


def run_assign(device: str, x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if device == "cpu":
        return ops.assign(x, codebook)
    return ops.assign(x.to(device), codebook.to(device))  # .to keeps non-contiguous strides where it can


@pytest.mark.parametrize("device", DEVICES)
@examples(150)
@given(case=assign_case(), data=st.data())
def test_assign_nearest_code(device: str, case: dict, data: st.DataObject) -> None:
    """Random shapes, dtypes, layouts, magnitudes 1e-18..1e18, duplicated codes, repeated rows, exact copies
    and near-ties: the contract holds everywhere; the nearest-code guarantee wherever no float32
    intermediate can overflow (all of it for magnitudes up to ~1e18 / sqrt(D))."""
    x, codebook = build_assign_inputs(case)
    with cpu_isa(data, device):
        indices, sqdist = run_assign(device, x, codebook)
        # Same values in float32 and contiguous: bit-identical (arithmetic is float32 whatever the input).
        indices32, sqdist32 = run_assign(device, x.float().contiguous(), codebook.float().contiguous())
    assert torch.equal(indices, indices32) and torch.equal(sqdist, sqdist32), "result depends on layout/dtype"
    check_assign_contract(x, codebook, indices, sqdist, device)
    rows = well_scaled_rows(x.float(), codebook.float())
    note(f"well-scaled rows: {int(rows.sum())} of {x.shape[0]}")
    check_nearest(x, codebook, indices, rows)


@pytest.mark.parametrize("device", DEVICES)
@examples(100)
@given(n=st.integers(0, 300), k=st.integers(1, 70), d=st.integers(1, 40), dtype=st.sampled_from(DTYPES),
       exponent=st.integers(-20, 12), distinct=st.integers(1, 70), layout=st.sampled_from(LAYOUTS),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_assign_exact_ties(device: str, n: int, k: int, d: int, dtype: torch.dtype, exponent: int, distinct: int,
                           layout: str, seed: int, data: st.DataObject) -> None:
    """Small integers times a power of two: every distance and score is exact in float32 (|values| <= 8,
    D <= 40: sums below 2^24 units), so ties are exact and the index must be the reference's (the lowest
    index of all tied codes, duplicated or distinct), with the same squared distance, bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    pool = values(gen, (min(distinct, k), d), "integers", exponent, dtype)
    codebook = relayout(pick_rows(gen, pool, k), layout)
    x = relayout(values(gen, (n, d), "integers", exponent, dtype), layout)
    with cpu_isa(data, device):
        indices, sqdist = run_assign(device, x, codebook)
    expected, expected_sqdist = ref.assign(x, codebook)
    assert torch.equal(indices.cpu(), expected)
    assert torch.equal(sqdist.cpu(), expected_sqdist)


@pytest.mark.parametrize("device", DEVICES)
@examples(60)
@given(case=assign_case(huge=True), data=st.data())
def test_assign_beyond_float32_range_keeps_its_contract(device: str, case: dict, data: st.DataObject) -> None:
    """Magnitudes 1e19..1e37, whose squares overflow float32. Documented behaviour: no error, indices in
    range, sqdist is the chosen code's squared distance (+inf where that exceeds float32, never NaN), the
    lowest index among duplicates, the same result for repeated rows; the nearest-code guarantee holds for the
    rows where nothing overflows (see test_assign_nearest_code_beyond_float32_range for the others)."""
    x, codebook = build_assign_inputs(case)
    with cpu_isa(data, device):
        indices, sqdist = run_assign(device, x, codebook)
    check_assign_contract(x, codebook, indices, sqdist, device)
    check_nearest(x, codebook, indices, well_scaled_rows(x.float(), codebook.float()))


@pytest.mark.xfail(strict=True, reason=(
    "the kernels rank codes by ||w||^2 - 2 x.w in float32, which overflows for |x|, |w| above ~1.8e19 / sqrt(D) "
    "even where the distance itself is small (x equal to a code of norm 1e20 gets a code at distance +inf); "
    "a reference-level fix is an exact power-of-two rescaling of x and the codebook, see docs/errors.md"))
@pytest.mark.parametrize("device", DEVICES)
@examples(60)
@given(case=assign_case(huge=True), data=st.data())
def test_assign_nearest_code_beyond_float32_range(device: str, case: dict, data: st.DataObject) -> None:
    """The nearest-code guarantee for rows whose nearest code is within float32 range (distance <= FLT_MAX/4)
    although the vectors' squares overflow."""
    x, codebook = build_assign_inputs(case)
    with cpu_isa(data, device):
        indices, _ = run_assign(device, x, codebook)
    nearest = exact_sqdist(x.float(), codebook.float()).amin(1) if x.shape[0] else torch.zeros(0).double()
    check_nearest(x, codebook, indices, nearest <= FLT_MAX / 4)


@pytest.mark.parametrize("device", DEVICES)
@examples(80)
@given(n=st.integers(1, 300), k=st.integers(1, 70), d=st.integers(1, 40), dtype=st.sampled_from(DTYPES),
       bad_codes=st.integers(0, 70), bad_rows=st.integers(0, 300), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_assign_non_finite_inputs(device: str, n: int, k: int, d: int, dtype: torch.dtype, bad_codes: int,
                                  bad_rows: int, seed: int, data: st.DataObject) -> None:
    """NaN / +-Inf components (docs/errors.md): a row containing NaN maps to code 0 (documented in
    ops.assign); for a finite row, a code containing NaN or Inf is never chosen while some code is finite (if
    none is, every row maps to code 0) and the row gets its nearest finite code; a row containing Inf (every
    code infinitely far) gets some code in range, at a non-finite distance."""
    gen = torch.Generator().manual_seed(seed)
    x = values(gen, (n, d), "normal", 0, dtype)
    codebook = values(gen, (k, d), "normal", 0, dtype)
    special = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype)
    for t, count in ((codebook, bad_codes), (x, bad_rows)):  # one NaN / +Inf / -Inf in each of `count` rows
        rows = torch.randperm(t.shape[0], generator=gen)[: min(count, t.shape[0])]
        cols = torch.randint(0, d, (len(rows),), generator=gen)
        t[rows, cols] = special[torch.randint(0, 3, (len(rows),), generator=gen)]
    with cpu_isa(data, device):
        indices, sqdist = run_assign(device, x, codebook)
    indices, sqdist = indices.cpu(), sqdist.cpu()
    assert ((indices >= 0) & (indices < k)).all()
    finite_code = codebook.float().isfinite().all(1)
    nan_row, finite_row = x.float().isnan().any(1), x.float().isfinite().all(1)
    inf_row = ~nan_row & ~finite_row
    assert (indices[nan_row] == 0).all(), "a NaN row did not map to code 0"
    if not finite_code.any():
        assert (indices == 0).all(), "no finite code, yet a row did not map to code 0"
        return
    assert finite_code[indices[finite_row]].all(), "a non-finite code was chosen although a finite one exists"
    assert not sqdist[inf_row].isfinite().any(), "a row containing Inf got a finite distance"
    good = x.float()[finite_row]
    # Nearest among the finite codes: the property of test_assign_nearest_code on the finite sub-codebook.
    sub = codebook.float()[finite_code]
    remap = torch.cumsum(finite_code.long(), 0) - 1
    check_nearest(good, sub, remap[indices[finite_row]], torch.ones(good.shape[0], dtype=torch.bool))


# --------------------------------------------------------------------------------------- cluster_stats
def check_cluster_stats(x: torch.Tensor, indices: torch.Tensor, k: int, sums: torch.Tensor,
                        counts: torch.Tensor) -> None:
    """Counts exact. Sums: the kernels and the reference both sum in float64 and round once to float32, so
    they differ by at most one float32 rounding (2^-23 |s|, or 2^-149 for subnormal results) plus the two
    float64 summation errors (n_k 2^-53 sum_i |x_i| each). Infinite sums (the float32 sum overflows) and NaN
    (a NaN member, or +inf and -inf members) agree exactly with the float64 sum of the members.

    With non-finite members the float64 sums are formed with index_add rather than by the reference: its
    one-hot matrix product multiplies every Inf/NaN row by the zeros of the other codes, so the reference
    returns NaN for every code once any row holds Inf or NaN."""
    ref_sums, ref_counts = ref.cluster_stats(x, indices, k)
    assert torch.equal(counts.cpu(), ref_counts)
    sums = sums.cpu()
    exact = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, indices.long(), x.double())
    abs_sum = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, indices.long(), x.double().abs())
    if x.isfinite().all():
        assert torch.equal(exact.float().isinf(), ref_sums.isinf())  # the reference, where it applies
    tol = 2.0**-23 * exact.abs() + TINY + 4 * ref_counts.double()[:, None] * 2.0**-53 * abs_sum
    finite = exact.abs() < FLT_MAX * (1 - 2.0**-25) - tol  # away from the overflow edge (NaN: False)
    assert ((sums.double() - exact).abs()[finite] <= tol[finite]).all(), \
        f"max error {((sums.double() - exact).abs() - tol)[finite].max().item():.3g} above the bound"
    assert torch.equal(sums.isnan(), exact.isnan()), "NaN sums differ"
    inf = exact.abs() > FLT_MAX * (1 + 2.0**-23)  # clearly past FLT_MAX
    assert torch.equal(sums[inf], exact[inf].float()), "overflowing sums differ"


@pytest.mark.parametrize("device", DEVICES)
@examples(150)
@given(n=st.integers(0, 300), k=st.integers(1, 70), d=st.integers(1, 40), dtype=st.sampled_from(DTYPES),
       index_dtype=st.sampled_from([torch.int64, torch.int32]), pattern=st.sampled_from(["normal", "wide", "integers"]),
       exponent=st.integers(-38, 37), used=st.integers(1, 70), x_layout=st.sampled_from(LAYOUTS),
       i_layout=st.sampled_from(LAYOUTS), nonfinite=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_cluster_stats_matches_reference(device: str, n: int, k: int, d: int, dtype: torch.dtype,
                                         index_dtype: torch.dtype, pattern: str, exponent: int, used: int,
                                         x_layout: str, i_layout: str, nonfinite: bool, seed: int) -> None:
    """Random shapes, dtypes, index dtypes, layouts, magnitudes 1e-38..1e37 (sums that overflow float32
    included), few or all codes used, NaN/Inf members."""
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.float16:
        exponent = max(-8, min(exponent, 4))
    elif pattern == "integers":
        exponent = max(-120, min(int(exponent * 3.3), 120))  # a power of two over the same range
    x = values(gen, (n, d), pattern, exponent, dtype)
    if nonfinite and n:
        x.view(-1)[torch.randint(0, n * d, (3,), generator=gen)] = torch.tensor([math.nan, math.inf, -math.inf],
                                                                                 dtype=dtype)
    codes = torch.randperm(k, generator=gen)[: min(used, k)]
    indices = codes[torch.randint(0, len(codes), (n,), generator=gen)].to(index_dtype)
    xs, idx = relayout(x, x_layout), relayout(indices, i_layout)
    sums, counts = ops.cluster_stats(xs.to(device), idx.to(device), k)
    assert sums.dtype == counts.dtype == torch.float32 and sums.device.type == counts.device.type == device
    assert sums.shape == (k, d) and counts.shape == (k,)
    check_cluster_stats(x, indices, k, sums, counts)
    if device == "cpu":  # bit-reproducible on CPU, whatever the layout, input dtype or index dtype
        again = ops.cluster_stats(x.float().contiguous(), indices.long().contiguous(), k)
        nan = sums.isnan()  # NaN payloads may differ between input dtypes; NaN positions may not
        assert torch.equal(nan, again[0].isnan()) and torch.equal(counts, again[1])
        assert torch.equal(sums[~nan].view(torch.int32), again[0][~nan].view(torch.int32))


@pytest.mark.parametrize("device", DEVICES)
@examples(60)
@given(n=st.integers(1, 300), k=st.integers(1, 70), position=st.integers(0, 299),
       bad=st.one_of(st.integers(-(2**31), -1), st.integers(0, 2**31 - 1)),
       index_dtype=st.sampled_from([torch.int64, torch.int32]))
def test_cluster_stats_rejects_any_out_of_range_index(device: str, n: int, k: int, position: int, bad: int,
                                                      index_dtype: torch.dtype) -> None:
    """Any index outside [0, K), at any position, of either index dtype: RuntimeError naming the range."""
    bad = bad if bad < 0 else k + bad % (2**31 - k)
    indices = torch.zeros(n, dtype=index_dtype)
    indices[position % n] = bad
    x = torch.ones(n, 3, device=device)
    message = rf"kohonen_vq\.cluster_stats: argument 'indices' must lie in \[0, {k}\), got"
    with pytest.raises(RuntimeError, match=message):
        ops.cluster_stats(x, indices.to(device), k)


# ----------------------------------------------------------------------------------------- som_update_
@st.composite
def hyper_parameters(draw: st.DrawFn) -> dict:
    """The neighbourhood and its hyper-parameters: mostly over the ranges used in practice and well beyond
    (shrink up to 100, sigma and base from 1e-3 to 1e4, decay up to 0.9999, step up to 10^6), sometimes at
    extremes the argument checks accept (sigma, base down to 1e-300 and up to 1e300)."""
    def log_uniform(lo: float, hi: float, label: str) -> float:
        return 10.0 ** draw(st.floats(math.log10(lo), math.log10(hi)), label=label)

    def width(label: str) -> float:
        if draw(st.integers(0, 7), label=f"extreme {label}") == 0:
            return draw(st.sampled_from([1e-300, 1e-160, 1e-45, 1e-20, 1e20, 1e300]), label=label)
        return log_uniform(1e-3, 1e4, label)

    return dict(neighbourhood=draw(st.sampled_from(ops.NEIGHBOURHOODS), label="neighbourhood"),
                shrink=draw(st.one_of(st.sampled_from([0.0, 0.1]), st.floats(-4.0, 2.0).map(lambda e: 10.0**e)),
                            label="shrink"),
                sigma=width("sigma"), base=width("base"),
                decay=draw(st.one_of(st.sampled_from([0.0, 0.5, 0.99, 0.999]), st.floats(0.0, 0.9999)), label="decay"),
                eps=draw(st.one_of(st.sampled_from([0.0, 1e-5]), st.floats(1e-10, 1.0)), label="eps"),
                update_empty=draw(st.booleans(), label="update_empty"),
                step=draw(st.one_of(st.integers(0, 30), st.integers(0, 10**6)), label="step"))


@st.composite
def som_state(draw: st.DrawFn, max_exponent: int = 18) -> dict:
    grid = draw(grids())
    k = math.prod(grid)
    return dict(grid=grid, d=draw(st.integers(1, 40), label="D"),
                exponent=draw(st.integers(-18, max_exponent), label="exponent"),
                near_max=max_exponent > 18 and draw(st.integers(0, 3), label="sums near FLT_MAX") == 0,
                counts=draw(st.sampled_from(["zero", "init", "random"]), label="ema_counts"),
                members=draw(st.integers(0, k), label="codes with members"),
                layout=draw(st.sampled_from(LAYOUTS), label="sums/counts layout"),
                seed=draw(st.integers(0, 2**32 - 1), label="seed"))


def build_som_inputs(s: dict) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(s["seed"])
    k, d, scale = math.prod(s["grid"]), s["d"], 10.0 ** s["exponent"]
    w = torch.randn(k, d, generator=gen) * scale
    if s["counts"] == "zero":
        n = torch.zeros(k)
    elif s["counts"] == "init":
        n = torch.ones(k)
    else:
        n = torch.rand(k, generator=gen) * 10
    m = w * n[:, None] + torch.randn(k, d, generator=gen) * scale  # not exactly consistent with w, as after rounding
    counts = torch.zeros(k)
    members = torch.randperm(k, generator=gen)[: s["members"]]
    counts[members] = torch.randint(1, 50, (len(members),), generator=gen).float()
    sums = torch.randn(k, d, generator=gen) * scale * counts[:, None]
    if s.get("near_max"):  # finite sums between FLT_MAX / 4 and FLT_MAX: their mixture can exceed float32
        sums = torch.where(counts[:, None] > 0, FLT_MAX * (0.25 + 0.75 * torch.rand(k, d, generator=gen)), 0.0)
    return [w, m, n], sums, counts


REFERENCE_NEIGHBOURHOOD_MATRIX, REFERENCE_LAPLACE_SMOOTH = ref.neighbourhood_matrix, ref.laplace_smooth


def limit_neighbourhood_matrix(grid: Sequence[int], kind: str, step: int, shrink: float = 0.1, sigma: float = 1.0,
                               base: float = 10.0) -> torch.Tensor:
    """reference.neighbourhood_matrix evaluated without floating-point artefacts at extreme arguments: the
    weight at grid distance 0 is exactly 1 and a weight whose exponent is -inf is exactly 0, for every sigma,
    base and t (the reference computes 0 * inf = NaN there, e.g. sigma = 1e-200 where sigma^2 underflows)."""
    coords = ref.grid_coordinates(grid).double()
    diff = coords[:, None] - coords[None]
    sq = (diff**2).sum(-1)
    growth = 1.0 + shrink * step
    if kind in ("none", "hard"):
        return REFERENCE_NEIGHBOURHOOD_MATRIX(grid, kind, step, shrink, sigma, base)
    with torch.no_grad():
        exponent = sq * growth / (sigma * sigma) if kind == "gaussian" else sq.sqrt() * growth / base
        a = torch.where(sq == 0, torch.ones_like(sq), torch.exp(-exponent.nan_to_num(nan=math.inf)))
    return a.float()


def limit_laplace_smooth(counts: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """reference.laplace_smooth, with the value 0 where every count and eps are 0 (the smoothing preserves
    the total, which is 0; the reference evaluates 0 / 0)."""
    if float(counts.sum()) == 0 and eps == 0:
        return torch.zeros_like(counts)
    return REFERENCE_LAPLACE_SMOOTH(counts, eps)


def exact_som_update(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with mock.patch.object(ref, "neighbourhood_matrix", limit_neighbourhood_matrix), \
            mock.patch.object(ref, "laplace_smooth", limit_laplace_smooth):
        return ref.som_update(*args, **kwargs)


def som_bounds(w0: torch.Tensor, m0: torch.Tensor, n0: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor,
               hp: dict, grid: Sequence[int], n_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on the kernels' errors in (m, N), against the reference's float64 arithmetic:

    - mixing in float32: each output is a sum over at most K weighted terms, done as one pass per axis of at most
      2 size_a - 1 terms (sum <= 2K) plus the hard blend (2 more roundings); the weights themselves carry a few
      roundings (Gaussian: taps rounded, products of up to 3 taps: 8 u; exponential: the float32 exponent
      sqrt(d^2) * rate, |x| <= 104 where the weight is not 0, carries 3 roundings, so 3 * 104 u + 8 u), so
      err(S') <= (2K + 8 + 8 or 320) u (A^T |S|), plus 2^-149 per weight that underflows and 2^-150 per
      product;
    - EMA: decay and 1 - decay are rounded to float32 and there are 3 more roundings: +4 u on (decay |m| +
      (1 - decay) A^T |S|), likewise for N with c >= 0;
    - Laplace smoothing (update_empty): the double total carries the counts' errors into the scale, at most
      doubling the relative error, then one float32 rounding."""
    k = math.prod(grid)
    a = limit_neighbourhood_matrix(grid, hp["neighbourhood"], hp["step"], hp["shrink"], hp["sigma"], hp["base"])
    a = a.double()
    c_mix = (2 * k + 8 + (320 if hp["neighbourhood"] == "exponential" else 8)) * U
    keep, take = hp["decay"], 1 - hp["decay"]
    s_abs, c = sums.double().abs(), counts.double()
    err_m = c_mix * (keep * m0.double().abs() + take * (a.T @ s_abs)) + take * (TINY * s_abs.sum(0) + k * TINY)
    err_n = c_mix * (keep * n0.double() + take * (a.T @ c)) + take * (TINY * c.sum() + k * TINY)
    if hp["update_empty"]:
        # N_k = (n1_k + eps) T / (T + K eps) with T = sum n1: d/dn1_k <= 1 and, through T,
        # (n1_k + eps) K eps / (T + K eps)^2 <= K eps / (T + K eps), times the error of T; one more rounding.
        total = float(n_ref.double().sum())
        through_total = err_n.sum() * min(1.0, k * hp["eps"] / max(total + k * hp["eps"], 1e-300))
        err_n = err_n + through_total + U * n_ref.double()
    return err_m, err_n + TINY


@pytest.mark.parametrize("device", DEVICES)
@examples(150)
@given(state=som_state(), hp=hyper_parameters())
def test_som_update_matches_reference(device: str, state: dict, hp: dict) -> None:
    """reference.som_update (evaluated at its limits where its formulas give 0 * inf, see
    limit_neighbourhood_matrix) on random grids (1-3 axes, K <= 70), D <= 40, magnitudes 1e-18..1e18, states
    with zero / unit / random counts, batches where only some codes have members, non-contiguous sums and
    counts, random hyper-parameters: m and N within the error bounds of som_bounds; w = m / N within the
    propagated bound wherever N is well away from 0. Where N is within its own error bound of 0, whether the
    code is written at all is ill-conditioned (float32 vs float64 rounding of a tiny N), so w is not compared
    there; test_som_update_keeps_a_finite_state_finite covers it."""
    (w0, m0, n0), sums, counts = build_som_inputs(state)
    grid, step = state["grid"], hp["step"]
    kwargs = {key: hp[key] for key in ("neighbourhood", "shrink", "sigma", "base", "decay", "eps", "update_empty")}
    st_ = [t.clone().to(device) for t in (w0, m0, n0)]
    step_t = torch.tensor([step], device=device)
    skipped = torch.zeros(1, dtype=torch.int64, device=device)
    ops.som_update_(*st_, step_t, skipped, relayout(sums, state["layout"]).to(device),
                    relayout(counts, state["layout"]).to(device), grid=grid, **kwargs)
    assert step_t.item() == step + 1 and skipped.item() == 0
    w, m, n = (t.cpu().double() for t in st_)
    w_ref, m_ref, n_ref = exact_som_update(w0, m0, n0, sums, counts, grid=grid, step=step, **kwargs)
    err_m, err_n = som_bounds(w0, m0, n0, sums, counts, hp, grid, n_ref)
    err_m = err_m + U * m_ref.double().abs() + TINY  # the reference's own rounding to float32
    err_n = err_n + U * n_ref.double()
    # NaN where the reference is NaN too counts as agreement here (the maths are the reference's);
    # test_som_update_keeps_a_finite_state_finite is the property that forbids NaN.
    check_within("ema_counts", n, n_ref, err_n)
    check_within("ema_sums", m, m_ref, err_m)
    nr = n_ref.double()[:, None]
    conditioned = (nr > 4 * err_n[:, None]).expand_as(w)
    # w = m / N: the errors of m and N propagate through the division (N >= 3/4 of the reference's where
    # conditioned), plus the two float32 roundings of the quotient.
    err_w = (err_m + w_ref.double().abs() * err_n[:, None]) / (0.75 * nr.clamp_min(1e-300)) \
        + 2 * U * w_ref.double().abs() + TINY
    check_within("codebook", torch.where(conditioned, w, w_ref.double()), w_ref, err_w)


def check_within(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: torch.Tensor) -> None:
    expected = expected.double()
    ok = ((actual - expected).abs() <= tol) | (actual == expected) | (actual.isnan() & expected.isnan())
    if not ok.all():
        i = (~ok).nonzero()[0].tolist()
        excess = ((actual - expected).abs() / tol)[~ok].max().item()
        raise AssertionError(f"{name}: {int((~ok).sum())} values outside the bound (worst {excess:.3g} x tol), "
                             f"first at {i}: {actual[tuple(i)].item()!r} vs reference {expected[tuple(i)].item()!r} "
                             f"(tol {tol.expand_as(actual)[tuple(i)].item():.3g})")


@pytest.mark.parametrize("device", DEVICES)
@examples(60)
@given(state=som_state(), hp=hyper_parameters(), target=st.sampled_from(["sums", "counts"]),
       value=st.sampled_from([math.nan, math.inf, -math.inf]), position=st.integers(0, 2**20))
def test_som_update_skips_any_non_finite_batch(device: str, state: dict, hp: dict, target: str, value: float,
                                               position: int) -> None:
    """One NaN/Inf anywhere in sums or counts: state bit-identical, step unchanged, skipped + 1."""
    (w0, m0, n0), sums, counts = build_som_inputs(state)
    batch = {"sums": sums, "counts": counts}
    batch[target].view(-1)[position % batch[target].numel()] = value
    kwargs = {key: hp[key] for key in ("neighbourhood", "shrink", "sigma", "base", "decay", "eps", "update_empty")}
    st_ = [t.clone().to(device) for t in (w0, m0, n0)]
    step_t = torch.tensor([hp["step"]], device=device)
    skipped = torch.tensor([3], device=device)
    ops.som_update_(*st_, step_t, skipped, batch["sums"].to(device), batch["counts"].to(device), grid=state["grid"],
                    **kwargs)
    for got, original in zip(st_, (w0, m0, n0)):
        assert torch.equal(got.cpu(), original)
    assert step_t.item() == hp["step"] and skipped.item() == 4


@st.composite
def accepted_hyper_parameters(draw: st.DrawFn) -> dict:
    """Any value the argument checks accept (docs/errors.md): shrink >= 0, sigma > 0, base > 0, eps >= 0 as
    any float64 including +inf and subnormals, decay in [0, 1), step up to 2^62."""
    def non_negative(label: str, positive: bool) -> float:
        return draw(st.floats(min_value=0.0, exclude_min=positive, allow_infinity=True, allow_nan=False), label=label)

    return dict(neighbourhood=draw(st.sampled_from(ops.NEIGHBOURHOODS), label="neighbourhood"),
                shrink=non_negative("shrink", False), sigma=non_negative("sigma", True),
                base=non_negative("base", True), eps=non_negative("eps", False),
                decay=draw(st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from([0.99, 0.999])),
                           label="decay"),
                update_empty=draw(st.booleans(), label="update_empty"),
                step=draw(st.integers(0, 2**62), label="step"))


@pytest.mark.parametrize("device", DEVICES)
@examples(100)
@given(state=som_state(max_exponent=37), hp=accepted_hyper_parameters())
def test_som_update_keeps_a_finite_state_finite(device: str, state: dict, hp: dict) -> None:
    """For every argument value the checks accept, with a finite state and a finite batch (magnitudes up to
    1e37, sometimes sums near FLT_MAX whose neighbourhood mixture exceeds float32): where the update's
    mathematical result is defined and fits float32 (the reference evaluated at its limits, see
    limit_neighbourhood_matrix), the op must write a finite state with N >= 0 (an infinite hyper-parameter may
    instead be rejected); where it is undefined (shrink = inf at t = 0: inf * 0; eps = inf with update_empty:
    inf / inf), the call must be rejected, leaving the state as it was. A NaN/Inf must never reach the
    codebook or the EMAs through an accepted call."""
    (w0, m0, n0), sums, counts = build_som_inputs(state)
    kwargs = {key: hp[key] for key in ("neighbourhood", "shrink", "sigma", "base", "decay", "eps", "update_empty")}
    st_ = [t.clone().to(device) for t in (w0, m0, n0)]
    step_t = torch.tensor([hp["step"]], device=device)
    skipped = torch.zeros(1, dtype=torch.int64, device=device)
    call = lambda: ops.som_update_(*st_, step_t, skipped, sums.to(device), counts.to(device),  # noqa: E731
                                   grid=state["grid"], **kwargs)
    batch_finite = bool(sums.isfinite().all() and counts.isfinite().all())
    undefined = math.isnan(1.0 + hp["shrink"] * hp["step"]) or (hp["update_empty"] and math.isinf(hp["eps"]))
    if undefined and batch_finite:
        with pytest.raises(RuntimeError, match="kohonen_vq.som_update_: argument"):
            call()
        for got, original in zip(st_, (w0, m0, n0)):
            assert torch.equal(got.cpu(), original), "a rejected call changed the state"
        return
    exact = exact_som_update(w0, m0, n0, sums, counts, grid=state["grid"], step=hp["step"], **kwargs)
    if not batch_finite or not all(t.isfinite().all() for t in exact):
        return  # a skipped batch (tested above), or a result beyond float32: nothing to require here
    infinite_argument = any(math.isinf(hp[key]) for key in ("shrink", "sigma", "base", "eps"))
    try:
        call()
    except RuntimeError:
        if not infinite_argument:
            raise
        return
    for name, t in zip(("codebook", "ema_sums", "ema_counts"), st_):
        assert t.isfinite().all(), f"{name} holds non-finite values after an accepted update"
    assert (st_[2] >= 0).all()
