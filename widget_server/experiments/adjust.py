"""Regression adjustment (CUPED) of a difference between two arms, and revenue capping.

Both work on sums, like the rest of :mod:`.stats`: per arm and look, the number of visitors
with covariates ``n``, the sums ``Σx`` and ``Σxxᵀ`` of the covariates known before the offer
(frozen at exposure by ``lua/offer_claim.lua``), and ``Σx·y`` of the covariates times the
outcome (computed from the buyers' records, :mod:`.buyers`). Formulas and references in
``docs/statistics.md``, section "Variance reduction".

The slope ``θ`` is the least-squares fit of the outcome on the covariates over both arms
together (as GrowthBook's ``gbstats`` computes it for one covariate, Deng et al. 2013); the
adjusted mean of an arm is ``ȳ - θᵀx̄`` and its variance, per visitor,
``var(y) + θᵀ·cov(x)·θ - 2·θᵀ·cov(x, y)`` within the arm, where ``var(y)`` is the outcome's
own variance as the unadjusted test takes it (``p(1-p)`` for a conversion rate, the sample
variance for revenue): with ``θ = 0`` the adjusted figures are the unadjusted ones exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..offers.decide import COVARIATES

COVARIATE_WORDS = {
    "cart_value": "cart value",
    "cart_items": "items in the cart",
    "pages": "pages viewed",
    "orders": "earlier orders",
}


def _pairs(k: int) -> list[tuple[int, int]]:
    """The ``(i, j)``, ``i <= j``, of ``Σx_i·x_j`` in the order they are stored."""
    return [(i, j) for i in range(k) for j in range(i, k)]


def _add(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    if not a:
        return b
    if not b:
        return a
    return tuple(x + y for x, y in zip(a, b, strict=True))


@dataclass(frozen=True, slots=True)
class Moments:
    """An arm's sums over the visitors whose covariates were kept at exposure: ``n`` of them,
    ``x`` = ``Σx_i``, ``xx`` = ``Σx_i·x_j`` for ``i <= j`` row by row, ``xc`` = ``Σx_i`` over
    the visitors who converted, ``xr`` = ``Σx_i·revenue`` (capped when revenue is capped)."""

    n: int = 0
    x: tuple[float, ...] = ()
    xx: tuple[float, ...] = ()
    xc: tuple[float, ...] = ()
    xr: tuple[float, ...] = ()

    def plus(self, other: Moments) -> Moments:
        return Moments(
            self.n + other.n,
            _add(self.x, other.x),
            _add(self.xx, other.xx),
            _add(self.xc, other.xc),
            _add(self.xr, other.xr),
        )

    @property
    def k(self) -> int:
        return len(self.x)

    def square(self) -> list[list[float]]:
        """``Σxxᵀ`` as a full matrix."""
        k = self.k
        out = [[0.0] * k for _ in range(k)]
        for value, (i, j) in zip(self.xx, _pairs(k), strict=True):
            out[i][j] = out[j][i] = value
        return out


class Outcome(NamedTuple):
    """An arm's outcome: ``n`` visitors, ``Σy``, ``Σy²``, ``Σx·y`` and ``var(y)`` per visitor as
    the unadjusted test takes it."""

    n: int
    total: float
    total_sq: float
    x_total: tuple[float, ...]
    variance: float


class Adjusted(NamedTuple):
    """The adjusted difference ``treatment - control``, its variance, each arm's adjusted
    variance per visitor (for Welch's degrees of freedom), and which covariates were used."""

    estimate: float
    variance: float
    control_variance: float
    treatment_variance: float
    used: tuple[str, ...]


# Why a comparison could not be adjusted (the report says it and shows the unadjusted figures).
NOT_RECORDED = "covariates were not kept for every visitor of this experiment version"
NO_VARIANCE = "no covariate varied between visitors"
TOO_FEW = "too few visitors"


def regression_adjusted(
    control: Outcome, control_x: Moments, treatment: Outcome, treatment_x: Moments
) -> Adjusted | str:
    """The difference of the arms' regression-adjusted means, or why there is none (one of
    :data:`NOT_RECORDED`, :data:`NO_VARIANCE`, :data:`TOO_FEW`).

    Covariates that do not vary over both arms, or that are a linear combination of earlier
    ones, are left out (in :data:`COVARIATES` order); with none left the comparison is not
    adjusted."""
    k = control_x.k
    if (
        k == 0
        or treatment_x.k != k
        or control_x.n != control.n
        or treatment_x.n != treatment.n
        or len(control.x_total) != k
        or len(treatment.x_total) != k
    ):
        return NOT_RECORDED
    n_c, n_t = control.n, treatment.n
    if n_c < 2 or n_t < 2 or n_c + n_t <= k + 2:
        return TOO_FEW
    n = n_c + n_t
    both = control_x.plus(treatment_x)
    sx, sxx = both.x, both.square()
    total_y = control.total + treatment.total
    joint_xx = [[sxx[i][j] - sx[i] * sx[j] / n for j in range(k)] for i in range(k)]
    joint_xy = [control.x_total[i] + treatment.x_total[i] - sx[i] * total_y / n for i in range(k)]
    joint_yy = control.total_sq + treatment.total_sq - total_y**2 / n
    used = _independent(joint_xx, [sxx[i][i] for i in range(k)])
    if not used:
        return NO_VARIANCE
    theta = [0.0] * k
    if joint_yy > 1e-12 * (control.total_sq + treatment.total_sq):
        solved = _solve([[joint_xx[i][j] for j in used] for i in used], [joint_xy[i] for i in used])
        for i, value in zip(used, solved, strict=True):
            theta[i] = value
    mean_c, var_c = _arm(control, control_x, theta)
    mean_t, var_t = _arm(treatment, treatment_x, theta)
    return Adjusted(
        mean_t - mean_c,
        var_c / n_c + var_t / n_t,
        var_c,
        var_t,
        tuple(COVARIATES[i] if i < len(COVARIATES) else f"x{i}" for i in used),
    )


def _arm(outcome: Outcome, moments: Moments, theta: Sequence[float]) -> tuple[float, float]:
    """An arm's adjusted mean ``ȳ - θᵀx̄`` and variance per visitor (never below 0)."""
    n, k = outcome.n, moments.k
    xx = moments.square()
    mean_x = [s / n for s in moments.x]
    cov_xx = [[(xx[i][j] - moments.x[i] * mean_x[j]) / (n - 1) for j in range(k)] for i in range(k)]
    cov_xy = [(outcome.x_total[i] - mean_x[i] * outcome.total) / (n - 1) for i in range(k)]
    quadratic = sum(theta[i] * cov_xx[i][j] * theta[j] for i in range(k) for j in range(k))
    cross = sum(theta[i] * cov_xy[i] for i in range(k))
    mean = outcome.total / n - sum(t * m for t, m in zip(theta, mean_x, strict=True))
    return mean, max(0.0, outcome.variance + quadratic - 2 * cross)


def _independent(matrix: list[list[float]], raw_squares: list[float]) -> list[int]:
    """The covariates kept, in order: each must vary (beyond the float rounding of its raw
    sum of squares) and not be (nearly) a linear combination of those kept before it. A
    Cholesky factorisation that skips the pivots it cannot take."""
    kept: list[int] = []
    rows: dict[int, list[float]] = {}  # L's row of each kept covariate, over the kept ones
    for i in range(len(matrix)):
        if not matrix[i][i] > 1e-10 * raw_squares[i]:
            continue
        row: list[float] = []
        for step, j in enumerate(kept):
            known = sum(row[s] * rows[j][s] for s in range(step))
            row.append((matrix[i][j] - known) / rows[j][step])
        residual = matrix[i][i] - sum(v * v for v in row)
        if residual <= 1e-8 * matrix[i][i]:
            continue
        rows[i] = [*row, math.sqrt(residual)]
        kept.append(i)
    return kept


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """``a⁻¹b`` by Gaussian elimination with partial pivoting (``a`` is small and, after
    :func:`_independent`, positive definite)."""
    size = len(b)
    m = [[*row, value] for row, value in zip(a, b, strict=True)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, size):
            factor = m[r][col] / m[col][col]
            for c in range(col, size + 1):
                m[r][c] -= factor * m[col][c]
    out = [0.0] * size
    for r in range(size - 1, -1, -1):
        out[r] = (m[r][size] - sum(m[r][c] * out[c] for c in range(r + 1, size))) / m[r][r]
    return out


@dataclass(frozen=True, slots=True)
class RevenueCap:
    """The cap applied to revenue per visitor, and what it came from."""

    percentile: float
    cap: float | None  # None: not capped (see ``reason``)
    control_buyers: int  # with revenue above 0
    capped: int = 0  # buyers above the cap at the last look, every arm
    reason: str = ""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between the two
    nearest ranks (numpy's default, Hyndman and Fan's definition 7)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    h = (len(ordered) - 1) * q / 100
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])
