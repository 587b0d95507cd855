"""Experiment statistics: small pure functions over plain counts, sums and sums of squares.

No I/O here: :mod:`widget_server.experiments.reports` loads the counters from Redis and calls
:func:`experiment_report`. Every formula is written out, with references, in
``docs/statistics.md``; the notation there matches the names here (``n`` exposures, ``c``
conversions, ``S`` revenue, ``Q`` sum of squared order values).

Every function is total: zero exposures, zero conversions and 100% conversion give a defined
answer (an uninformative interval, a p-value of 1, or ``None`` where an estimate does not exist),
never an exception, NaN or infinity.

scipy is imported inside the functions that use it: it takes half a second to import, which every
server, worker and CLI process would otherwise pay at start for reports most never compute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Literal, NamedTuple

from ..offers.assign import HOLDOUT
from .adjust import (
    NOT_RECORDED,
    Adjusted,
    Moments,
    Outcome,
    RevenueCap,
    regression_adjusted,
)

_NORMAL = NormalDist()


def z_quantile(confidence: float) -> float:
    """The two-sided standard normal quantile ``z`` with ``P(|Z| <= z) = confidence``."""
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


def _two_sided_normal_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """The counters of one arm over a period (summed per-day hashes)."""

    variant: str
    exposures: int = 0
    conversions: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0
    impressions: int = 0
    clicks: int = 0
    dismissals: int = 0
    redemptions: int = 0
    captures: int = 0  # email captures: visitors who gave their address
    consented_captures: int = 0  # of them, with consent to marketing email
    # The regression adjustment's sums (None: no covariates kept), see .adjust.
    moments: Moments | None = None
    # Revenue per visitor capped at the report's cap (None: not capped), set on a look.
    capped_revenue: float | None = None
    capped_revenue_sq: float | None = None

    def plus(self, other: VariantCounts) -> VariantCounts:
        """Field-wise sum (the variant name of ``self`` is kept; a look's capped revenue is
        not a sum of days, so it is left out)."""
        moments = None
        if self.moments is not None or other.moments is not None:
            moments = (self.moments or Moments()).plus(other.moments or Moments())
        return VariantCounts(
            self.variant,
            self.exposures + other.exposures,
            self.conversions + other.conversions,
            self.revenue + other.revenue,
            self.revenue_sq + other.revenue_sq,
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.dismissals + other.dismissals,
            self.redemptions + other.redemptions,
            self.captures + other.captures,
            self.consented_captures + other.consented_captures,
            moments,
        )

    @property
    def proportion(self) -> Proportion:
        """Conversions out of exposures, conversions capped at exposures (see the docs)."""
        return Proportion(max(0, min(self.conversions, self.exposures)), max(0, self.exposures))

    @property
    def revenue_sample(self) -> Sample:
        """Revenue per exposure: ``n`` exposures with sum ``S`` and sum of squares ``Q``."""
        return Sample(max(0, self.exposures), self.revenue, self.revenue_sq)

    @property
    def tested_revenue_sample(self) -> Sample:
        """Revenue per exposure as the tests take it: capped when the report caps it."""
        if self.capped_revenue is None or self.capped_revenue_sq is None:
            return self.revenue_sample
        return Sample(max(0, self.exposures), self.capped_revenue, self.capped_revenue_sq)


class Proportion(NamedTuple):
    """``successes`` out of ``trials``, ``0 <= successes <= trials`` (as
    :attr:`VariantCounts.proportion` guarantees)."""

    successes: int
    trials: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials > 0 else 0.0


class Sample(NamedTuple):
    """``n`` observations summarised by their sum and sum of squares."""

    n: int
    total: float
    total_sq: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance ``(Q - S²/n) / (n - 1)``; 0 below two observations."""
        if self.n < 2:
            return 0.0
        spread = self.total_sq - self.total**2 / self.n
        # Below float rounding of Q, the spread is cancellation noise, not variance.
        return spread / (self.n - 1) if spread > 1e-12 * self.total_sq else 0.0


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float


# --- conversion rate -------------------------------------------------------------------------
def wilson_interval(p: Proportion, confidence: float = 0.95) -> Interval:
    """Wilson score interval (Wilson 1927; Newcombe 1998, method 3); ``(0, 0, 1)`` for n = 0.

    ``(p̂ + z²/2n ± z·sqrt(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n)``. Always contains ``p̂``.
    """
    if p.trials <= 0:
        return Interval(0.0, 0.0, 1.0)
    n, rate, z = p.trials, p.rate, z_quantile(confidence)
    denominator = 1 + z * z / n
    center = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if p.successes == 0 else min(rate, center - half)
    high = 1.0 if p.successes == n else max(rate, center + half)
    return Interval(rate, max(0.0, low), min(1.0, high))


def relative_uplift(
    control: Proportion, treatment: Proportion, confidence: float = 0.95
) -> Interval | None:
    """Relative uplift ``p_t/p_c - 1`` with the log-scale delta-method (Katz 1978) interval.

    ``SE(log r) = sqrt(1/c_t - 1/n_t + 1/c_c - 1/n_c)``; the interval is
    ``exp(log r ± z·SE) - 1``. ``None`` when either arm has no conversions (no finite ratio).
    """
    if min(control.successes, treatment.successes) <= 0:
        return None
    log_ratio = math.log(treatment.rate) - math.log(control.rate)
    variance = sum(1 / s - 1 / n for s, n in (control, treatment))
    half = z_quantile(confidence) * math.sqrt(max(0.0, variance))
    return Interval(
        math.expm1(log_ratio), math.expm1(log_ratio - half), math.expm1(log_ratio + half)
    )


def two_proportion_z_test(control: Proportion, treatment: Proportion) -> tuple[float, float]:
    """Pooled two-proportion z-test: ``(z, two-sided p)``; ``(0, 1)`` when untestable.

    ``p̄ = (c_c + c_t)/(n_c + n_t)``, ``z = (p̂_t - p̂_c) / sqrt(p̄(1-p̄)(1/n_c + 1/n_t))``.
    """
    if control.trials <= 0 or treatment.trials <= 0:
        return 0.0, 1.0
    pooled = (control.successes + treatment.successes) / (control.trials + treatment.trials)
    variance = pooled * (1 - pooled) * (1 / control.trials + 1 / treatment.trials)
    if variance <= 0:
        return 0.0, 1.0
    z = (treatment.rate - control.rate) / math.sqrt(variance)
    return z, _two_sided_normal_p(z)


def chance_to_beat(control: Proportion, treatment: Proportion) -> float:
    """``P(p_t > p_c)`` for independent ``Beta(1 + c, 1 + n - c)`` posteriors (uniform priors).

    Computed as ``∫ f_Y(y)·P(X > y) dy`` by adaptive quadrature over the central
    ``1 - 2e-12`` of the narrower posterior ``Y`` — deterministic and accurate to ~1e-9.
    """
    a_t, b_t = 1 + treatment.successes, 1 + treatment.trials - treatment.successes
    a_c, b_c = 1 + control.successes, 1 + control.trials - control.successes
    if _beta_sd(a_t, b_t) < _beta_sd(a_c, b_c):
        return 1.0 - _prob_greater(a_c, b_c, a_t, b_t)
    return _prob_greater(a_t, b_t, a_c, b_c)


def _beta_sd(a: float, b: float) -> float:
    return math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))


def _prob_greater(a_x: float, b_x: float, a_y: float, b_y: float) -> float:
    """``P(X > Y)`` with ``X ~ Beta(a_x, b_x)``, integrating over the support of ``Y``."""
    from scipy import integrate, special  # type: ignore[import-untyped]

    log_norm = special.betaln(a_y, b_y)

    def integrand(y: float) -> float:
        log_pdf = special.xlogy(a_y - 1, y) + special.xlog1py(b_y - 1, -y) - log_norm
        return float(math.exp(log_pdf) * special.betaincc(a_x, b_x, y))

    low = float(special.betaincinv(a_y, b_y, 1e-12))
    high = float(special.betaincinv(a_y, b_y, 1 - 1e-12))
    mode = min(max((a_y - 1) / (a_y + b_y - 2), low), high) if a_y + b_y > 2 else 0.5
    value, _ = integrate.quad(
        integrand, low, high, points=[mode], epsabs=1e-11, epsrel=1e-10, limit=200
    )
    return min(1.0, max(0.0, float(value)))


# --- revenue ---------------------------------------------------------------------------------
class WelchResult(NamedTuple):
    difference: float  # mean_t - mean_c
    low: float
    high: float
    t: float
    df: float
    p_value: float


def welch_t_test(control: Sample, treatment: Sample, confidence: float = 0.95) -> WelchResult:
    """Welch's unequal-variance t-test on the difference of means (Welch 1947).

    ``t = (m_t - m_c)/sqrt(v_t/n_t + v_c/n_c)`` with Welch-Satterthwaite degrees of freedom.
    Below two observations per arm, or with no variance, the p-value is 1 and the interval is
    the point itself: there is nothing to test.
    """
    se_c = control.variance / control.n if control.n > 0 else 0.0
    se_t = treatment.variance / treatment.n if treatment.n > 0 else 0.0
    difference = treatment.mean - control.mean
    return _welch(difference, se_c, se_t, control.n, treatment.n, confidence)


def _welch(
    difference: float, se_c: float, se_t: float, n_c: int, n_t: int, confidence: float
) -> WelchResult:
    """Welch's test of ``difference`` from each arm's squared standard error and size."""
    if n_c < 2 or n_t < 2 or se_c + se_t <= 0:
        return WelchResult(difference, difference, difference, 0.0, 0.0, 1.0)
    se = math.sqrt(se_c + se_t)
    share_c, share_t = se_c / (se_c + se_t), se_t / (se_c + se_t)  # scaled: no underflow
    df = 1 / (share_c**2 / (n_c - 1) + share_t**2 / (n_t - 1))
    t = difference / se
    from scipy import special

    p_value = float(2 * special.stdtr(df, -abs(t)))
    half = float(special.stdtrit(df, 0.5 + confidence / 2)) * se
    return WelchResult(difference, difference - half, difference + half, t, df, p_value)


def incremental_revenue(holdout: Sample, variant: Sample, confidence: float = 0.95) -> Interval:
    """``(RPV_variant - RPV_holdout) * n_variant`` with the Welch interval scaled the same way."""
    welch = welch_t_test(holdout, variant, confidence)
    n = variant.n
    return Interval(welch.difference * n, welch.low * n, welch.high * n)


# --- health ----------------------------------------------------------------------------------
def expected_split(
    weights: Mapping[str, float], holdout: float, holdout_key: str = HOLDOUT
) -> dict[str, float]:
    """Configured traffic shares: ``holdout`` for the holdout, ``w_i/Σw·(1 - holdout)`` for the
    variants (the holdout is left out when its share is 0)."""
    total = sum(weights.values())
    split = {holdout_key: holdout} if holdout > 0 else {}
    for key, weight in weights.items():
        split[key] = (weight / total) * (1 - holdout) if total > 0 else 0.0
    return split


def srm_p_value(observed: Mapping[str, int], split: Mapping[str, float]) -> float:
    """Sample-ratio-mismatch chi-square goodness-of-fit p-value, ``k - 1`` degrees of freedom.

    ``χ² = Σ (O_i - E_i)²/E_i`` with ``E_i = share_i · Σ O``. 1 with no data or a single arm;
    0 when an arm with a configured share of 0 received exposures.
    """
    total = sum(observed.get(arm, 0) for arm in split)
    if total <= 0 or len(split) < 2:
        return 1.0
    if any(share <= 0 and observed.get(arm, 0) > 0 for arm, share in split.items()):
        return 0.0
    shares = sum(share for share in split.values() if share > 0)
    arms = [(observed.get(arm, 0), share / shares * total) for arm, share in split.items()]
    chi2 = sum((o - e) ** 2 / e for o, e in arms if e > 0)
    from scipy import special

    return float(special.chdtrc(len(arms) - 1, chi2))


def sample_size_per_arm(
    baseline: float, relative_effect: float, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Exposures per arm to detect ``baseline → baseline·(1 + effect)`` with a two-sided pooled
    z-test (Fleiss; R ``power.prop.test``), rounded up; ``None`` if the target is impossible.

    ``n = (z_{1-alpha/2}·sqrt(2p̄(1-p̄)) + z_{power}·sqrt(p1(1-p1) + p2(1-p2)))² / (p2 - p1)²``.
    """
    p1, p2 = baseline, baseline * (1 + relative_effect)
    if not (0 < p1 < 1 and 0 < p2 < 1) or p1 == p2:
        return None
    mean = (p1 + p2) / 2
    z_alpha, z_power = z_quantile(1 - alpha), _NORMAL.inv_cdf(power)
    root = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil(root**2 / (p2 - p1) ** 2 - 1e-9)


# --- sequential ------------------------------------------------------------------------------
def msprt_p_value(control: Proportion, treatment: Proportion, mixing_sd: float) -> float:
    """One look of the normal-mixture SPRT (Johari et al. 2017): ``min(1, 1/Λ)``.

    ``θ̂ = p̂_t - p̂_c`` with pooled variance ``V = p̄(1-p̄)(1/n_c + 1/n_t)`` and a ``N(0, τ²)``
    mixture over the true difference gives
    ``Λ = sqrt(V/(V + τ²)) · exp(θ̂²τ² / (2V(V + τ²)))``.
    """
    look = conversion_look(control, treatment, 0.0)
    return _mixture_p(look._replace(mixing_sd=mixing_sd))


def always_valid_p_value(
    looks: Iterable[tuple[Proportion, Proportion]], relative_mixing_sd: float
) -> float:
    """The always-valid p-value after a series of looks: the running minimum of
    :func:`msprt_p_value`, with ``τ = relative_mixing_sd · p̄`` at each look."""
    best = 1.0
    for control, treatment in looks:
        trials = control.trials + treatment.trials
        pooled = (control.successes + treatment.successes) / trials if trials > 0 else 0.0
        best = min(best, msprt_p_value(control, treatment, relative_mixing_sd * pooled))
    return best


def mixture_half_width(variance: float, mixing_sd: float, alpha: float) -> float:
    """Half-width of the always-valid interval from one look of the normal-mixture SPRT: the
    differences ``θ₀`` whose test of ``θ = θ₀`` keeps ``Λ < 1/alpha``,

    ``|θ̂ - θ₀| < sqrt( 2V(V + τ²)/τ² · (log(1/alpha) + ½·log((V + τ²)/V)) )``.

    So the interval leaves out 0 exactly when :func:`msprt_p_value` is at most ``alpha`` (the same
    ``V`` and ``τ``). Infinite when there is nothing to go on."""
    ratio = _mixing_ratio(variance, mixing_sd)
    if ratio is None or not 0 < alpha < 1:
        return math.inf
    # 2V(V + τ²)/τ² = 2V(1 + r)/r with r = τ²/V, written so that nothing over- or underflows.
    return math.sqrt(
        2 * variance * (1 + ratio) / ratio * (math.log(1 / alpha) + 0.5 * math.log1p(ratio))
    )


def _mixing_ratio(variance: float, mixing_sd: float) -> float | None:
    """``τ²/V``, or None when the look tells nothing (no variance, no mixing, or either out of
    floating-point range)."""
    if not (variance > 0 and mixing_sd > 0):
        return None
    ratio = mixing_sd**2 / variance
    return ratio if 0 < ratio < math.inf else None


class Look(NamedTuple):
    """One look at a difference: its estimate ``θ̂``, the variance ``V`` of the estimate and
    the mixing standard deviation ``τ`` of the sequential test."""

    estimate: float
    variance: float
    mixing_sd: float


def always_valid_decision(
    looks: Sequence[Look], alpha: float, bound: float = math.inf
) -> tuple[float, Interval | None]:
    """The always-valid p-value (the running minimum of :func:`msprt_p_value`'s ``1/Λ``) and
    interval (the running intersection of each look's interval, see
    :func:`mixture_half_width`, within ``±bound``) after ``looks``, oldest first: the interval
    leaves out 0 exactly when the p-value is at most ``alpha``. Should the intervals not
    overlap (a drifting effect), the interval is the look's where the p-value was smallest,
    which leaves out 0 too. No interval (None) while no look bounds it."""
    best_p, best_look = 1.0, None
    low, high = -bound, bound
    for look in looks:
        p = _mixture_p(look)
        half = mixture_half_width(look.variance, look.mixing_sd, alpha)
        low, high = max(low, look.estimate - half), min(high, look.estimate + half)
        if best_look is None or p < best_p:
            best_p, best_look = p, look
    if best_look is None:
        return 1.0, None
    if low > high:
        half = mixture_half_width(best_look.variance, best_look.mixing_sd, alpha)
        low, high = best_look.estimate - half, best_look.estimate + half
    if not (math.isfinite(low) and math.isfinite(high)):
        return best_p, None
    return best_p, Interval(looks[-1].estimate, low, high)


def _mixture_p(look: Look) -> float:
    """``min(1, 1/Λ)`` for one look: ``log Λ = -½·log(1 + r) + θ̂²/(2V) · r/(1 + r)`` with
    ``r = τ²/V``."""
    ratio = _mixing_ratio(look.variance, look.mixing_sd)
    if ratio is None:
        return 1.0
    log_lr = -0.5 * math.log1p(ratio) + look.estimate**2 / (2 * look.variance) * (
        ratio / (1 + ratio)
    )
    return 1.0 if log_lr <= 0 else math.exp(-min(log_lr, 700.0))


def conversion_look(control: Proportion, treatment: Proportion, relative_mixing_sd: float) -> Look:
    """A look at the difference of conversion rates, as :func:`msprt_p_value` takes it: the
    pooled variance and ``τ = relative_mixing_sd · p̄``."""
    trials = control.trials + treatment.trials
    pooled = (control.successes + treatment.successes) / trials if trials > 0 else 0.0
    if control.trials <= 0 or treatment.trials <= 0:
        return Look(0.0, 0.0, 0.0)
    variance = pooled * (1 - pooled) * (1 / control.trials + 1 / treatment.trials)
    return Look(treatment.rate - control.rate, variance, relative_mixing_sd * pooled)


def revenue_look(control: Sample, treatment: Sample, relative_mixing_sd: float) -> Look:
    """A look at the difference of revenue per visitor: Welch's variance of the difference and
    ``τ = relative_mixing_sd ·`` the pooled revenue per visitor."""
    if control.n < 2 or treatment.n < 2:
        return Look(treatment.mean - control.mean, 0.0, 0.0)
    variance = control.variance / control.n + treatment.variance / treatment.n
    pooled = (control.total + treatment.total) / (control.n + treatment.n)
    return Look(treatment.mean - control.mean, variance, relative_mixing_sd * abs(pooled))


def wald_decision(
    control: Proportion, treatment: Proportion, alpha: float
) -> tuple[float, Interval]:
    """The fixed-horizon test of a difference of conversion rates as one statistic: the
    unpooled z ``θ̂ / sqrt(p̂_c(1-p̂_c)/n_c + p̂_t(1-p̂_t)/n_t)``, its two-sided p-value and the
    ``1 - alpha`` interval ``θ̂ ± z·SE``; the interval leaves out 0 exactly when the p-value is
    at most ``alpha``."""
    estimate = treatment.rate - control.rate
    if control.trials <= 0 or treatment.trials <= 0:
        return 1.0, Interval(estimate, -1.0, 1.0)
    pc, pt = control.rate, treatment.rate
    variance = pc * (1 - pc) / control.trials + pt * (1 - pt) / treatment.trials
    return _normal_decision(estimate, variance, alpha)


def enough_data(counts: VariantCounts, min_exposures: int, min_conversions: int) -> bool:
    return counts.exposures >= min_exposures and counts.conversions >= min_conversions


# --- the report ------------------------------------------------------------------------------
DecisionRule = Literal["sequential", "fixed_horizon"]
RULE_NAMES: dict[str, str] = {"sequential": "always-valid", "fixed_horizon": "fixed-horizon"}


@dataclass(frozen=True, slots=True)
class ExperimentSettings:
    """How results are judged, server-wide. The decision rule is each experiment's own
    (:func:`experiment_report`'s ``rule``)."""

    alpha: float = 0.05
    power: float = 0.8
    min_exposures: int = 100
    min_conversions: int = 10
    srm_alpha: float = 0.001
    minimum_detectable_effect: float = 0.10
    relative_mixing_sd: float = 0.15


@dataclass(frozen=True, slots=True)
class VariantResult:
    variant: str
    is_control: bool
    exposures: int
    impressions: int
    conversions: int
    redemptions: int
    revenue: float
    conversion_rate: Interval
    uplift: Interval | None
    p_value: float | None
    sequential_p_value: float | None
    chance_to_beat_control: float | None
    revenue_per_exposure: float
    revenue_difference: Interval | None
    revenue_p_value: float | None
    incremental_revenue: Interval | None
    captures: int = 0
    consented_captures: int = 0
    # What the experiment's rule decides on (None until it may speak): the difference of
    # conversion rates against the control (rate points) with its interval, the same relative
    # to the control's rate, the p-value (Holm-adjusted across the treatments), and the same
    # for revenue per exposed visitor; each interval at its level (see ``holm``).
    difference: Interval | None = None
    change: Interval | None = None
    decision_p: float | None = None
    revenue_decision: Interval | None = None
    revenue_decision_p: float | None = None
    decision_level: float | None = None  # the level of ``difference`` and ``change``
    revenue_decision_level: float | None = None
    # Whether the decision figures above are regression-adjusted (.adjust), and the same
    # figures without the adjustment (None when they are the ones above), at the same levels.
    adjusted: bool = False
    revenue_adjusted: bool = False
    adjustment_note: str = ""  # why the figures could not be adjusted
    unadjusted_difference: Interval | None = None
    unadjusted_change: Interval | None = None
    unadjusted_decision_p: float | None = None
    unadjusted_revenue_decision: Interval | None = None
    unadjusted_revenue_decision_p: float | None = None


@dataclass(frozen=True, slots=True)
class Health:
    srm_p_value: float
    srm_flag: bool
    expected_split: dict[str, float]
    observed_split: dict[str, float]
    min_sample_reached: bool
    shortfalls: list[str]
    sequential_p_values: dict[str, float]
    looks: int
    more_conversions_than_exposures: list[str]
    unknown_arms: list[str]


# What a report concludes, one state at a time (the headline, the table and the button follow).
VERDICTS = ("split_broken", "collecting", "winner", "worse", "no_difference")


@dataclass(frozen=True, slots=True)
class Report:
    campaign_id: str
    control: str
    decision: str  # the rule: "sequential" (always-valid) or "fixed_horizon"
    decision_alpha: float
    winner: str | None
    required_exposures_per_arm: int | None
    variants: list[VariantResult]
    health: Health
    sentences: list[str]
    settings: ExperimentSettings
    verdict: str = "collecting"  # one of VERDICTS
    headline: str = ""
    final: bool = False  # the verdict stands (a fixed-horizon test that reached its size)
    planned_exposures: int | None = None  # per arm, for a fixed-horizon test
    decided_on: int = 0  # the look the verdict is made on (1 = the first day with data)
    # Variance reduction, fixed before the experiment started: "off", "adjusted" (every
    # decision figure is), "unadjusted" (it could not be: ``adjustment_note`` says why) or
    # "waiting" (nothing decided yet); and the covariates the adjustment used.
    adjustment: str = "off"
    adjustment_note: str = ""
    covariates: tuple[str, ...] = ()
    revenue_cap: RevenueCap | None = None  # how revenue per visitor was capped (None: not)


Counts = Mapping[str, VariantCounts]


def experiment_report(
    campaign_id: str,
    counts_by_variant: Counts,
    control: str,
    split: Mapping[str, float],
    settings: ExperimentSettings = ExperimentSettings(),
    *,
    history: Sequence[Counts] = (),
    rule: DecisionRule = "sequential",
    planned_exposures: int | None = None,
    adjust: bool = False,
    revenue_cap: RevenueCap | None = None,
) -> Report:
    """Compare every arm of ``split`` with ``control`` under the experiment's decision rule.

    ``history`` holds the cumulative counts at earlier looks (one per day, oldest first).
    ``rule``: ``sequential`` decides on the always-valid p-value and interval over every look
    (look any day); ``fixed_horizon`` decides once, on the first look where every arm has
    ``planned_exposures``, with the fixed-horizon test. Either way a variant wins only when
    every arm has enough data, the split is healthy and its decision p-value, adjusted across
    the treatments by Holm's procedure, is at most ``alpha``; each decision interval is at the
    level Holm's procedure tested it at (:func:`holm`), so an interval leaves out 0 exactly
    when its adjusted p-value is small enough: the table and the verdict cannot disagree.

    ``adjust``: the decision figures are regression-adjusted by the covariates kept at
    exposure (:mod:`.adjust`) where every look judged allows it; the unadjusted ones stay in
    each row. ``revenue_cap``: how the counts' revenue was capped (:mod:`.buyers`), reported.
    """
    arms = [control, *(arm for arm in split if arm != control)]
    counts = {arm: counts_by_variant.get(arm, VariantCounts(arm)) for arm in arms}
    looks = [*history, counts_by_variant]
    alpha = settings.alpha
    horizon = _horizon(looks, arms, planned_exposures) if rule == "fixed_horizon" else None
    rows = [
        _variant_result(counts[arm], counts[control], looks, settings, rule, horizon, adjust)
        for arm in arms
    ]
    rows = rows[:1] + _holm_adjusted(
        rows[1:], counts[control], looks, settings, rule, horizon, adjust
    )
    health = _health(counts, rows, counts_by_variant, dict(split), len(looks), settings)
    needed = sample_size_per_arm(
        counts[control].proportion.rate,
        settings.minimum_detectable_effect,
        alpha / max(1, len(arms) - 1),  # planned for the first step of Holm's procedure
        settings.power,
    )
    verdict, winner = _verdict(rows, health, alpha, rule, horizon)
    report = Report(
        campaign_id, control, rule, alpha, winner, needed, rows, health, [], settings,
        verdict, "", _final(verdict, rule), planned_exposures,
        (horizon + 1) if horizon is not None else len(looks),
        *_adjustment(rows[1:], looks, control, adjust), revenue_cap,
    )  # fmt: skip
    report = replace(report, headline=_headline(report))
    return replace(report, sentences=_sentences(report))


def holm(p_values: Sequence[float | None], alpha: float) -> tuple[list[float], list[float | None]]:
    """Holm's step-down procedure (Holm 1979) over the p-values that exist: the adjusted
    p-values ``max_{j ≤ i} min(1, (m - j + 1)·p_(j))`` (a hypothesis is rejected when its
    adjusted p-value is at most ``alpha``) and, for each, the level its interval is computed at
    so that the interval leaves out 0 exactly when it is rejected: ``alpha / (m - i + 1)`` for
    the ``i``-th smallest p-value while the procedure goes on, and the level of the step where
    it stopped for every one after it (their p-values are larger than that level)."""
    order = sorted((i for i, p in enumerate(p_values) if p is not None),
                   key=lambda i: p_values[i] or 0.0)  # fmt: skip
    m = len(order)
    levels = [alpha / max(1, m)] * len(p_values)
    adjusted: list[float | None] = [None] * len(p_values)
    running, stopped = 0.0, None
    for step, i in enumerate(order):
        p = p_values[i] or 0.0
        level = alpha / (m - step)
        running = max(running, min(1.0, (m - step) * p))
        adjusted[i] = running
        if stopped is None and p > level:
            stopped = level
        levels[i] = stopped if stopped is not None else level
    return levels, adjusted


def _holm_adjusted(
    rows: list[VariantResult],
    control: VariantCounts,
    looks: list[Counts],
    settings: ExperimentSettings,
    rule: str,
    horizon: int | None,
    adjust: bool = False,
) -> list[VariantResult]:
    """The treatments' decision figures with Holm's procedure across them, for conversion and
    for revenue separately: adjusted p-values, and intervals at the level each was tested at
    (:func:`holm`), so an interval leaves out 0 exactly when its adjusted p-value is at most
    alpha. One treatment: alpha itself."""
    levels, adjusted = holm([r.decision_p for r in rows], settings.alpha)
    revenue_levels, revenue_adjusted = holm([r.revenue_decision_p for r in rows], settings.alpha)
    # The unadjusted figures beside adjusted ones: Holm over the unadjusted p-values.
    _, plain_adjusted = holm([r.unadjusted_decision_p for r in rows], settings.alpha)
    _, plain_revenue_adjusted = holm(
        [r.unadjusted_revenue_decision_p for r in rows], settings.alpha
    )
    out = []
    rho = settings.relative_mixing_sd
    for n, row in enumerate(rows):
        judged = _judged_looks(control.variant, row.variant, looks, settings, rule, horizon)
        arms = (control.variant, row.variant, judged, rule)
        _, difference, change, _ = _conversion_decision(*arms, levels[n], rho, adjust)
        _, revenue, _ = _revenue_decision(*arms, revenue_levels[n], rho, adjust)
        row = replace(
            row, difference=difference, change=change, decision_p=adjusted[n],
            decision_level=1 - levels[n] if adjusted[n] is not None else None,
            revenue_decision=revenue, revenue_decision_p=revenue_adjusted[n],
            revenue_decision_level=(1 - revenue_levels[n]
                                    if revenue_adjusted[n] is not None else None),
        )  # fmt: skip
        if row.adjusted:
            _, plain, plain_change, _ = _conversion_decision(*arms, levels[n], rho)
            row = replace(row, unadjusted_difference=plain, unadjusted_change=plain_change,
                          unadjusted_decision_p=plain_adjusted[n])  # fmt: skip
        if row.revenue_adjusted:
            _, plain, _ = _revenue_decision(*arms, revenue_levels[n], rho)
            row = replace(row, unadjusted_revenue_decision=plain,
                          unadjusted_revenue_decision_p=plain_revenue_adjusted[n])  # fmt: skip
        out.append(row)
    return out


def _adjustment(
    treatments: list[VariantResult], looks: list[Counts], control: str, adjust: bool
) -> tuple[str, str, tuple[str, ...]]:
    """The report's variance reduction: its state, the reason it could not be applied, and
    the covariates used (see :class:`Report`)."""
    if not adjust:
        return "off", "", ()
    decided = [r for r in treatments if r.decision_p is not None]
    if not decided:
        return "waiting", "", ()
    if all(r.adjusted for r in decided) and all(
        r.revenue_adjusted for r in decided if r.revenue_decision_p is not None
    ):
        last = looks[-1]
        used: tuple[str, ...] = ()
        for row in decided:
            a = _adjusted_difference(last[control], last[row.variant], "conversion")
            if not isinstance(a, str) and len(a.used) > len(used):
                used = a.used
        return "adjusted", "", used
    return "unadjusted", next((r.adjustment_note for r in decided if r.adjustment_note), ""), ()


def _final(verdict: str, rule: str) -> bool:
    """Whether the verdict stands: a fixed-horizon test decided at its size; a sequential test
    that found a difference (it may stop there)."""
    if rule == "fixed_horizon":
        return verdict in ("winner", "worse", "no_difference")
    return verdict in ("winner", "worse")


def _horizon(looks: list[Counts], arms: list[str], planned: int | None) -> int | None:
    """The first look at which every arm has ``planned`` exposures (a fixed-horizon test is
    decided there, once), or None before it."""
    if planned is None:
        return None
    for n, look in enumerate(looks):
        if all(arm in look and look[arm].exposures >= planned for arm in arms):
            return n
    return None


def _variant_result(
    arm: VariantCounts,
    control: VariantCounts,
    looks: list[Counts],
    settings: ExperimentSettings,
    rule: str,
    horizon: int | None,
    adjust: bool = False,
) -> VariantResult:
    """An arm against the control; the decision's figures at ``alpha`` for now (the p-values
    do not depend on it), adjusted across the treatments by :func:`_holm_adjusted`; the
    unadjusted p-values too, where the decision's are adjusted."""
    confidence = 1 - settings.alpha
    rate = wilson_interval(arm.proportion, confidence)
    rpv = arm.revenue_sample.mean
    plain = (arm.variant, arm.variant == control.variant, arm.exposures, arm.impressions,
             arm.conversions, arm.redemptions, arm.revenue, rate)  # fmt: skip
    captured = (arm.captures, arm.consented_captures)
    if arm.variant == control.variant:
        return VariantResult(*plain, None, None, None, None, rpv, None, None, None, *captured)
    welch = welch_t_test(control.tested_revenue_sample, arm.tested_revenue_sample, confidence)
    incremental = None
    if control.variant == HOLDOUT:
        incremental = incremental_revenue(control.revenue_sample, arm.revenue_sample, confidence)
    judged = _judged_looks(control.variant, arm.variant, looks, settings, rule, horizon)
    alpha, rho = settings.alpha, settings.relative_mixing_sd
    arms = (control.variant, arm.variant, judged, rule, alpha, rho)
    p, difference, change, why = _conversion_decision(*arms, adjust)
    revenue_p, revenue, revenue_why = _revenue_decision(*arms, adjust)
    adjusted = adjust and p is not None and not why
    revenue_adjusted = adjust and revenue_p is not None and not revenue_why
    plain_p = _conversion_decision(*arms)[0] if adjusted else None
    plain_revenue_p = _revenue_decision(*arms)[0] if revenue_adjusted else None
    result = VariantResult(
        *plain,
        relative_uplift(control.proportion, arm.proportion, confidence),
        two_proportion_z_test(control.proportion, arm.proportion)[1],
        _sequential_p_value(control.variant, arm.variant, looks, settings),
        chance_to_beat(control.proportion, arm.proportion),
        rpv,
        Interval(welch.difference, welch.low, welch.high),
        welch.p_value,
        incremental,
        *captured,
        difference,
        change,
        p,
        revenue,
        revenue_p,
    )
    return replace(
        result, adjusted=adjusted, revenue_adjusted=revenue_adjusted,
        adjustment_note=why or revenue_why, unadjusted_decision_p=plain_p,
        unadjusted_revenue_decision_p=plain_revenue_p,
    )  # fmt: skip


def _judged_looks(
    control: str,
    arm: str,
    looks: list[Counts],
    settings: ExperimentSettings,
    rule: str,
    horizon: int | None,
) -> list[Counts]:
    """The looks the experiment's rule judges: the one where a fixed horizon was reached, or
    every look where both arms pass the minimum sample; none until the rule may speak."""
    if rule == "fixed_horizon":
        return [] if horizon is None else [looks[horizon]]
    return [look for look in looks if _ready(look, (control, arm), settings)]


def _conversion_decision(
    control: str,
    arm: str,
    judged: list[Counts],
    rule: str,
    alpha: float,
    rho: float,
    adjust: bool = False,
) -> tuple[float | None, Interval | None, Interval | None, str]:
    """(p, difference, change, why not adjusted) in conversion by the rule, the interval at
    ``1 - alpha``; regression-adjusted when ``adjust`` and every look judged can be (``why``
    is then ``""``)."""
    if not judged:
        return None, None, None, ""
    adjusted, why = _adjusted_looks(control, arm, judged, "conversion", adjust)
    if rule == "fixed_horizon":
        c, t = judged[0][control], judged[0][arm]
        if adjusted:
            p, difference = _normal_decision(adjusted[0].estimate, adjusted[0].variance, alpha)
        else:
            p, difference = wald_decision(c.proportion, t.proportion, alpha)
        return p, difference, _relative(difference, c), why
    looks = [conversion_look(x[control].proportion, x[arm].proportion, rho) for x in judged]
    if adjusted:
        looks = [look._replace(estimate=a.estimate, variance=a.variance)
                 for look, a in zip(looks, adjusted, strict=True)]  # fmt: skip
    p, rates = always_valid_decision(looks, alpha, bound=1.0)  # a difference of two rates
    assert rates is not None
    return p, rates, _relative(rates, judged[-1][control]), why


def _revenue_decision(
    control: str,
    arm: str,
    judged: list[Counts],
    rule: str,
    alpha: float,
    rho: float,
    adjust: bool = False,
) -> tuple[float | None, Interval | None, str]:
    """(p, difference, why not adjusted) in revenue per exposed visitor (capped when the
    report caps it) by the rule; None when there is nothing to test (fewer than two visitors,
    or no spread)."""
    if not judged:
        return None, None, ""
    adjusted, why = _adjusted_looks(control, arm, judged, "revenue", adjust)
    if rule == "fixed_horizon":
        c, t = judged[0][control], judged[0][arm]
        if adjusted:
            decided = _welch_adjusted(adjusted[0], c.exposures, t.exposures, alpha)
            return (*decided, why) if decided is not None else (None, None, why)
        welch = welch_t_test(c.tested_revenue_sample, t.tested_revenue_sample, 1 - alpha)
        if welch.df <= 0:
            return None, None, why
        return welch.p_value, Interval(welch.difference, welch.low, welch.high), why
    looks = [
        revenue_look(x[control].tested_revenue_sample, x[arm].tested_revenue_sample, rho)
        for x in judged
    ]
    if adjusted:
        looks = [look._replace(estimate=a.estimate, variance=a.variance)
                 for look, a in zip(looks, adjusted, strict=True)]  # fmt: skip
    p, per_visitor = always_valid_decision(looks, alpha)
    return (p, per_visitor, why) if per_visitor is not None else (None, None, why)


def _adjusted_looks(
    control: str, arm: str, judged: list[Counts], outcome: str, adjust: bool
) -> tuple[list[Adjusted], str]:
    """The regression-adjusted difference at every look judged, or none and why (the first
    look that cannot be adjusted); none and no reason when the experiment is not adjusted."""
    if not adjust:
        return [], ""
    out = []
    for look in judged:
        adjusted = _adjusted_difference(look[control], look[arm], outcome)
        if isinstance(adjusted, str):
            return [], adjusted
        out.append(adjusted)
    return out, ""


def _adjusted_difference(
    control: VariantCounts, arm: VariantCounts, outcome: str
) -> Adjusted | str:
    if control.moments is None or arm.moments is None:
        return NOT_RECORDED
    return regression_adjusted(
        _outcome(control, control.moments, outcome),
        control.moments,
        _outcome(arm, arm.moments, outcome),
        arm.moments,
    )


def _outcome(counts: VariantCounts, moments: Moments, outcome: str) -> Outcome:
    """An arm's outcome as :func:`.adjust.regression_adjusted` takes it, with the variance the
    unadjusted test uses: ``p(1-p)`` for conversion, the sample variance for revenue."""
    if outcome == "conversion":
        p = counts.proportion
        return Outcome(p.trials, p.successes, p.successes, moments.xc, p.rate * (1 - p.rate))
    s = counts.tested_revenue_sample
    return Outcome(s.n, s.total, s.total_sq, moments.xr, s.variance)


def _normal_decision(estimate: float, variance: float, alpha: float) -> tuple[float, Interval]:
    """The two-sided z-test of ``estimate`` and its ``1 - alpha`` interval (the interval leaves
    out 0 exactly when the p-value is at most ``alpha``)."""
    if not variance > 0:
        return (0.0 if estimate else 1.0), Interval(estimate, estimate, estimate)
    se = math.sqrt(variance)
    half = z_quantile(1 - alpha) * se
    return _two_sided_normal_p(estimate / se), Interval(estimate, estimate - half, estimate + half)


def _welch_adjusted(
    adjusted: Adjusted, n_c: int, n_t: int, alpha: float
) -> tuple[float, Interval] | None:
    """Welch's t-test of an adjusted difference: Welch-Satterthwaite degrees of freedom over the
    arms' adjusted variances (as gbstats computes them)."""
    if n_c < 2 or n_t < 2:
        return None
    se_c, se_t = adjusted.control_variance / n_c, adjusted.treatment_variance / n_t
    welch = _welch(adjusted.estimate, se_c, se_t, n_c, n_t, 1 - alpha)
    if welch.df <= 0:
        return None
    return welch.p_value, Interval(welch.difference, welch.low, welch.high)


def _relative(difference: Interval, control: VariantCounts) -> Interval | None:
    """A difference of rates relative to the control's observed rate (None without one)."""
    base = control.proportion.rate
    if base <= 0:
        return None
    return Interval(difference.estimate / base, difference.low / base, difference.high / base)


def _ready(look: Counts, arms: Iterable[str], settings: ExperimentSettings) -> bool:
    return all(
        name in look and enough_data(look[name], settings.min_exposures, settings.min_conversions)
        for name in arms
    )


def _sequential_p_value(
    control: str, arm: str, looks: list[Counts], settings: ExperimentSettings
) -> float:
    """Looks count once both arms pass the minimum-sample guard (a later start stays valid)."""
    pairs = [
        (look[control].proportion, look[arm].proportion)
        for look in looks
        if _ready(look, (control, arm), settings)
    ]
    return always_valid_p_value(pairs, settings.relative_mixing_sd)


def _health(
    counts: dict[str, VariantCounts],
    rows: list[VariantResult],
    everything: Counts,
    split: dict[str, float],
    looks: int,
    settings: ExperimentSettings,
) -> Health:
    observed = {arm: c.exposures for arm, c in counts.items()}
    total = sum(observed.values())
    p = srm_p_value(observed, split)
    shortfalls = []
    for arm, c in counts.items():
        if c.exposures < settings.min_exposures:
            shortfalls.append(f"{c.exposures} of {settings.min_exposures} exposures in {arm}")
        if c.conversions < settings.min_conversions:
            shortfalls.append(f"{c.conversions} of {settings.min_conversions} conversions in {arm}")
    return Health(
        srm_p_value=p,
        srm_flag=p < settings.srm_alpha,
        expected_split=split,
        observed_split={arm: (o / total if total else 0.0) for arm, o in observed.items()},
        min_sample_reached=not shortfalls,
        shortfalls=shortfalls,
        sequential_p_values={
            r.variant: r.sequential_p_value for r in rows if r.sequential_p_value is not None
        },
        looks=looks,
        more_conversions_than_exposures=[
            a for a, c in counts.items() if c.conversions > c.exposures
        ],
        unknown_arms=sorted(arm for arm in everything if arm not in counts),
    )


def _verdict(
    rows: list[VariantResult], health: Health, alpha: float, rule: str, horizon: int | None
) -> tuple[str, str | None]:
    """The report's one conclusion (see :data:`VERDICTS`) and the winner, if any."""
    if health.srm_flag:
        return "split_broken", None
    treatments = rows[1:]
    waiting = not health.min_sample_reached or (rule == "fixed_horizon" and horizon is None)
    if waiting or not treatments or any(r.decision_p is None for r in treatments):
        return "collecting", None
    significant = [r for r in treatments if r.decision_p is not None and r.decision_p <= alpha]
    better = [r for r in significant if r.difference is not None and r.difference.estimate > 0]
    if better:
        best = max(better, key=lambda r: r.difference.estimate if r.difference else 0.0)
        return "winner", best.variant
    if significant:
        return "worse", None
    return "no_difference", None


# --- plain language --------------------------------------------------------------------------
def _headline(report: Report) -> str:
    """The report's conclusion in one sentence, by its rule (the admin shows it first)."""
    health, rows, control = report.health, report.variants, report.control
    rule = RULE_NAMES[report.decision]
    if report.verdict == "split_broken":
        return (f"The split looks broken ({_p('p', health.srm_p_value)}): don't trust these"
                " numbers. Find the cause first.")  # fmt: skip
    if report.verdict == "collecting":
        if report.decision == "fixed_horizon":
            planned = report.planned_exposures or 0
            smallest = min((row.exposures for row in rows), default=0)
            return (f"Fixed-horizon test: {min(smallest, planned):,} of {planned:,} exposures"
                    " in the smallest arm so far. The verdict comes once every arm has"
                    f" {planned:,}; until then nothing here is a result.")  # fmt: skip
        return ("Too early to call: the always-valid rule needs more data in every arm"
                " (you may look any day).")  # fmt: skip
    if report.verdict == "winner":
        row = next(r for r in rows if r.variant == report.winner)
        return (f"{row.variant} beats {control}: {_change(row)} conversion"
                f" ({_level(row)} {rule} interval {_interval(row)}).")  # fmt: skip
    if report.verdict == "worse":
        row = min(rows[1:], key=lambda r: r.difference.estimate if r.difference else 0.0)
        return (f"{row.variant} does worse than {control}: {_change(row)} conversion"
                f" ({_level(row)} {rule} interval {_interval(row)}). Keep {control}.")  # fmt: skip
    if report.decision == "fixed_horizon":
        return (f"No difference at the planned {report.planned_exposures or 0:,} exposures per"
                f" arm: no variant beats {control}.")  # fmt: skip
    return (f"No variant beats {control} yet. Keep the test running: with the always-valid"
            " rule you may look any day.")  # fmt: skip


def _sentences(report: Report) -> list[str]:
    """The headline, then what the rule's figures say for each arm, then what else to know.
    Only the rule's own figures are quoted; the others are in the report's "more statistics"."""
    health, rows = report.health, report.variants
    out = [report.headline]
    if report.verdict == "split_broken":
        expected = " / ".join(f"{a} {_share(s)}" for a, s in health.expected_split.items())
        observed = " / ".join(f"{a} {_share(s)}" for a, s in health.observed_split.items())
        out.append(f"Expected {expected}, observed {observed}.")
    out.extend(f"Not enough data yet: {shortfall}." for shortfall in health.shortfalls)
    if health.more_conversions_than_exposures:
        arms = ", ".join(health.more_conversions_than_exposures)
        out.append(f"More orders than exposures in {arms}: conversion rates are capped at 100%.")
    if health.unknown_arms:
        out.append(f"Left out, no longer in the campaign: {', '.join(health.unknown_arms)}.")
    control = rows[0]
    if report.verdict not in ("split_broken", "collecting"):
        for row in rows[1:]:
            out.extend(_arm_sentences(row, control, report))
    if report.decision == "sequential" and report.required_exposures_per_arm is not None:
        smallest = min(row.exposures for row in rows)
        out.append(
            f"To detect a {_share(report.settings.minimum_detectable_effect)} change from"
            f" {control.variant}'s {_share(control.conversion_rate.estimate)} conversion rate,"
            f" a fixed-horizon test would need about {report.required_exposures_per_arm:,}"
            f" exposures per arm (the smallest has {smallest:,}); the always-valid rule"
            " usually needs more."
        )
    return out


def _arm_sentences(row: VariantResult, control: VariantResult, report: Report) -> list[str]:
    """An arm against the control in the rule's figures (once the rule may speak)."""
    name, base = row.variant, control.variant
    label = "always-valid p" if report.decision == "sequential" else "p"
    if len(report.variants) > 2:
        label = "Holm-adjusted " + label
    rule = RULE_NAMES[report.decision]
    out = []
    if row.difference is not None and row.decision_p is not None:
        significant = row.decision_p <= report.decision_alpha
        out.append(
            f"{name}: {_change(row)} conversion against {base} ({_level(row)} {rule} interval"
            f" {_interval(row)};"
            f" {_p(label, row.decision_p)}, "
            + ("a difference)." if significant else "no difference shown).")
        )
    if row.revenue_decision is not None and row.revenue_decision_p is not None:
        d = row.revenue_decision
        text = (
            f"{name} earns {row.revenue_per_exposure:,.2f} per exposed visitor against"
            f" {control.revenue_per_exposure:,.2f} in {base} ({_money(d.estimate)},"
            f" {_share(row.revenue_decision_level or 0.0)} {rule} interval {_money(d.low)} to"
            f" {_money(d.high)}; {_p(label, row.revenue_decision_p)})"
        )
        if base == HOLDOUT:
            text += f"; incremental revenue {_money(d.estimate * row.exposures)}"
        out.append(text + ".")
    return out


def _level(row: VariantResult) -> str:
    return _share(row.decision_level or 0.0)


def _change(row: VariantResult) -> str:
    """The relative change in conversion, or the difference in points without a base."""
    if row.change is not None:
        return _pct(row.change.estimate)
    d = row.difference
    return f"{(d.estimate if d else 0.0) * 100:+.2f} points"


def _interval(row: VariantResult) -> str:
    if row.change is not None:
        return f"{_pct(row.change.low)} to {_pct(row.change.high)}"
    d = row.difference
    if d is None:
        return "—"
    return f"{d.low * 100:+.2f} to {d.high * 100:+.2f} points"


def _share(x: float) -> str:
    return f"{x * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _pct(x: float) -> str:
    return ("+" if x >= 0 else "-") + _share(abs(x))


def _money(x: float) -> str:
    return f"{x:+,.2f}"


def _p(label: str, p: float) -> str:
    return f"{label} < 0.001" if p < 0.001 else f"{label} = {p:.3f}"


def _chance(p: float | None) -> str:
    if p is None:
        return "unknown"
    return ">99%" if p > 0.99 else "<1%" if p < 0.01 else f"{p * 100:.0f}%"
