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
from typing import NamedTuple

from ..offers.assign import HOLDOUT

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

    def plus(self, other: VariantCounts) -> VariantCounts:
        """Field-wise sum (the variant name of ``self`` is kept)."""
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
        )

    @property
    def proportion(self) -> Proportion:
        """Conversions out of exposures, conversions capped at exposures (see the docs)."""
        return Proportion(max(0, min(self.conversions, self.exposures)), max(0, self.exposures))

    @property
    def revenue_sample(self) -> Sample:
        """Revenue per exposure: ``n`` exposures with sum ``S`` and sum of squares ``Q``."""
        return Sample(max(0, self.exposures), self.revenue, self.revenue_sq)


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
    difference = treatment.mean - control.mean
    se_c = control.variance / control.n if control.n > 0 else 0.0
    se_t = treatment.variance / treatment.n if treatment.n > 0 else 0.0
    if control.n < 2 or treatment.n < 2 or se_c + se_t <= 0:
        return WelchResult(difference, difference, difference, 0.0, 0.0, 1.0)
    se = math.sqrt(se_c + se_t)
    share_c, share_t = se_c / (se_c + se_t), se_t / (se_c + se_t)  # scaled: no underflow
    df = 1 / (share_c**2 / (control.n - 1) + share_t**2 / (treatment.n - 1))
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
    if control.trials <= 0 or treatment.trials <= 0 or mixing_sd <= 0:
        return 1.0
    pooled = (control.successes + treatment.successes) / (control.trials + treatment.trials)
    variance = pooled * (1 - pooled) * (1 / control.trials + 1 / treatment.trials)
    if variance <= 0:
        return 1.0
    theta, tau2 = treatment.rate - control.rate, mixing_sd**2
    log_lr = 0.5 * math.log(variance / (variance + tau2)) + theta**2 * tau2 / (
        2 * variance * (variance + tau2)
    )
    return 1.0 if log_lr <= 0 else math.exp(-log_lr)


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


def enough_data(counts: VariantCounts, min_exposures: int, min_conversions: int) -> bool:
    return counts.exposures >= min_exposures and counts.conversions >= min_conversions


# --- the report ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExperimentSettings:
    """How results are judged. ``sequential`` makes decisions on the always-valid p-value."""

    alpha: float = 0.05
    power: float = 0.8
    min_exposures: int = 100
    min_conversions: int = 10
    srm_alpha: float = 0.001
    minimum_detectable_effect: float = 0.10
    sequential: bool = True
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


@dataclass(frozen=True, slots=True)
class Report:
    campaign_id: str
    control: str
    decision: str  # "sequential" (always-valid p) or "fixed_horizon"
    decision_alpha: float
    winner: str | None
    required_exposures_per_arm: int | None
    variants: list[VariantResult]
    health: Health
    sentences: list[str]
    settings: ExperimentSettings


Counts = Mapping[str, VariantCounts]


def experiment_report(
    campaign_id: str,
    counts_by_variant: Counts,
    control: str,
    split: Mapping[str, float],
    settings: ExperimentSettings = ExperimentSettings(),
    *,
    history: Sequence[Counts] = (),
) -> Report:
    """Compare every arm of ``split`` with ``control``.

    ``history`` holds the cumulative counts at earlier looks (one per day, oldest first); the
    always-valid p-value is the minimum over those looks and this one. A variant wins only when
    every arm has enough data, the split is healthy and its decision p-value (always-valid when
    ``settings.sequential``) is at most ``alpha / number of treatments`` (Bonferroni).
    """
    arms = [control, *(arm for arm in split if arm != control)]
    counts = {arm: counts_by_variant.get(arm, VariantCounts(arm)) for arm in arms}
    looks = [*history, counts_by_variant]
    rows = [_variant_result(counts[arm], counts[control], looks, settings) for arm in arms]
    health = _health(counts, rows, counts_by_variant, dict(split), len(looks), settings)
    decision_alpha = settings.alpha / max(1, len(arms) - 1)
    needed = sample_size_per_arm(
        counts[control].proportion.rate,
        settings.minimum_detectable_effect,
        decision_alpha,
        settings.power,
    )
    report = Report(
        campaign_id, control, "sequential" if settings.sequential else "fixed_horizon",
        decision_alpha, _winner(rows, health, decision_alpha, settings.sequential), needed, rows,
        health, [], settings,
    )  # fmt: skip
    return replace(report, sentences=_sentences(report))


def _variant_result(
    arm: VariantCounts, control: VariantCounts, looks: list[Counts], settings: ExperimentSettings
) -> VariantResult:
    confidence = 1 - settings.alpha
    rate = wilson_interval(arm.proportion, confidence)
    rpv = arm.revenue_sample.mean
    plain = (arm.variant, arm.variant == control.variant, arm.exposures, arm.impressions,
             arm.conversions, arm.redemptions, arm.revenue, rate)  # fmt: skip
    captured = (arm.captures, arm.consented_captures)
    if arm.variant == control.variant:
        return VariantResult(*plain, None, None, None, None, rpv, None, None, None, *captured)
    welch = welch_t_test(control.revenue_sample, arm.revenue_sample, confidence)
    incremental = None
    if control.variant == HOLDOUT:
        incremental = incremental_revenue(control.revenue_sample, arm.revenue_sample, confidence)
    return VariantResult(
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
    )


def _sequential_p_value(
    control: str, arm: str, looks: list[Counts], settings: ExperimentSettings
) -> float:
    """Looks count once both arms pass the minimum-sample guard (a later start stays valid)."""

    def ready(look: Counts) -> bool:
        return all(
            name in look
            and enough_data(look[name], settings.min_exposures, settings.min_conversions)
            for name in (control, arm)
        )

    pairs = [(look[control].proportion, look[arm].proportion) for look in looks if ready(look)]
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


def _winner(
    rows: list[VariantResult], health: Health, alpha: float, sequential: bool
) -> str | None:
    if not health.min_sample_reached or health.srm_flag:
        return None
    winners = [
        (row.uplift.estimate, row.variant)
        for row in rows
        if row.uplift is not None
        and row.uplift.estimate > 0
        and (p := row.sequential_p_value if sequential else row.p_value) is not None
        and p <= alpha
    ]
    return max(winners)[1] if winners else None


# --- plain language --------------------------------------------------------------------------
def _sentences(report: Report) -> list[str]:
    health, rows = report.health, report.variants
    out: list[str] = []
    if health.srm_flag:
        expected = " / ".join(f"{a} {_share(s)}" for a, s in health.expected_split.items())
        observed = " / ".join(f"{a} {_share(s)}" for a, s in health.observed_split.items())
        out.append(
            f"The traffic split looks wrong (sample ratio mismatch, {_p('p', health.srm_p_value)}):"
            f" expected {expected}, observed {observed}. Find the cause before trusting results."
        )
    out.extend(f"Not enough data yet: {shortfall}." for shortfall in health.shortfalls)
    if health.more_conversions_than_exposures:
        arms = ", ".join(health.more_conversions_than_exposures)
        out.append(f"More orders than exposures in {arms}: conversion rates are capped at 100%.")
    if health.unknown_arms:
        out.append(f"Left out, no longer in the campaign: {', '.join(health.unknown_arms)}.")
    control = rows[0]
    label = "always-valid p" if report.decision == "sequential" else "p"
    for row in rows[1:]:
        out.extend(_arm_sentences(row, control, label, report))
    if report.winner is not None:
        out.append(f"{report.winner} is the winner against {control.variant}.")
    elif len(rows) > 1 and health.min_sample_reached and not health.srm_flag:
        out.append(f"No variant beats {control.variant} yet.")
    if report.required_exposures_per_arm is not None:
        smallest = min(row.exposures for row in rows)
        out.append(
            f"To detect a {_share(report.settings.minimum_detectable_effect)} change from"
            f" {control.variant}'s {_share(control.conversion_rate.estimate)} conversion rate,"
            f" each arm needs about {report.required_exposures_per_arm:,} exposures"
            f" (the smallest has {smallest:,})."
        )
    return out


def _arm_sentences(
    row: VariantResult, control: VariantResult, label: str, report: Report
) -> list[str]:
    name, base = row.variant, control.variant
    if row.uplift is None:
        return [f"No comparison for {name} yet: it needs conversions in both {name} and {base}."]
    u = row.uplift
    direction = "better" if u.estimate >= 0 else "worse"
    level = _share(1 - report.settings.alpha)
    out = [
        f"{name} converts {_share(abs(u.estimate))} {direction} than {base}"
        f" ({level} CI {_pct(u.low)} to {_pct(u.high)}); {_chance(row.chance_to_beat_control)}"
        f" chance {name} is better."
    ]
    p = row.sequential_p_value if report.decision == "sequential" else row.p_value
    if p is not None and p <= report.decision_alpha:
        out.append(f"The difference is significant ({_p(label, p)}).")
    elif p is not None:
        out.append(
            f"Not significant yet ({_p(label, p)}; needs {report.decision_alpha:.3g} or less)."
        )
    if row.revenue_difference is not None:
        d = row.revenue_difference
        text = (
            f"{name} earns {row.revenue_per_exposure:,.2f} per exposed visitor against"
            f" {control.revenue_per_exposure:,.2f} in {base} ({_money(d.estimate)},"
            f" {level} CI {_money(d.low)} to {_money(d.high)})"
        )
        if row.incremental_revenue is not None:
            i = row.incremental_revenue
            text += (
                f"; incremental revenue {_money(i.estimate)}"
                f" ({level} CI {_money(i.low)} to {_money(i.high)})"
            )
        out.append(text + ".")
    return out


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
