"""Experiment statistics against published values, scipy, properties and simulations."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps  # type: ignore[import-untyped]
from scipy.stats.contingency import relative_risk  # type: ignore[import-untyped]

from widget_server.experiments.aa import aa_check
from widget_server.experiments.stats import (
    VERDICTS,
    ExperimentSettings,
    Interval,
    Proportion,
    Report,
    Sample,
    VariantCounts,
    always_valid_decision,
    always_valid_p_value,
    chance_to_beat,
    conversion_look,
    expected_split,
    experiment_report,
    holm,
    incremental_revenue,
    msprt_p_value,
    relative_uplift,
    sample_size_per_arm,
    srm_p_value,
    two_proportion_z_test,
    welch_t_test,
    wilson_interval,
)

SPLIT = {"holdout": 0.1, "a": 0.45, "b": 0.45}


# --- reference values ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
     (1, 29, 0.0061, 0.1718)],
)  # fmt: skip
def test_wilson_matches_newcombe_1998(successes: int, trials: int, low: float, high: float) -> None:
    # Newcombe (1998), Statistics in Medicine 17:857-872, method 3 (score, no correction).
    interval = wilson_interval(Proportion(successes, trials))
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


@pytest.mark.parametrize(("successes", "trials"), [(0, 1), (1, 1), (7, 9), (3, 1000), (999, 1000)])
def test_wilson_matches_scipy(successes: int, trials: int) -> None:
    expected = sps.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    interval = wilson_interval(Proportion(successes, trials))
    assert interval.low == pytest.approx(expected.low, abs=1e-12)
    assert interval.high == pytest.approx(expected.high, abs=1e-12)


@pytest.mark.parametrize(("c_t", "n_t", "c_c", "n_c"), [(27, 122, 44, 150), (130, 2000, 100, 2000)])
def test_uplift_is_the_katz_log_interval_of_scipy(c_t: int, n_t: int, c_c: int, n_c: int) -> None:
    reference = relative_risk(c_t, n_t, c_c, n_c)
    ci = reference.confidence_interval(0.95)
    uplift = relative_uplift(Proportion(c_c, n_c), Proportion(c_t, n_t))
    assert uplift is not None
    assert uplift.estimate == pytest.approx(reference.relative_risk - 1, rel=1e-12)
    assert uplift.low == pytest.approx(ci.low - 1, rel=1e-9)
    assert uplift.high == pytest.approx(ci.high - 1, rel=1e-9)


@pytest.mark.parametrize(("c_c", "n_c", "c_t", "n_t"), [(100, 2000, 130, 2000), (5, 40, 1, 90)])
def test_z_test_matches_the_pooled_formula_and_chi_square(
    c_c: int, n_c: int, c_t: int, n_t: int
) -> None:
    p1, p2 = c_c / n_c, c_t / n_t
    pooled = (c_c + c_t) / (n_c + n_t)
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    expected_p = 2 * sps.norm.sf(abs(z))
    got_z, got_p = two_proportion_z_test(Proportion(c_c, n_c), Proportion(c_t, n_t))
    assert got_z == pytest.approx(z, rel=1e-12)
    assert got_p == pytest.approx(expected_p, rel=1e-9)
    table = [[c_c, n_c - c_c], [c_t, n_t - c_t]]
    assert got_p == pytest.approx(sps.chi2_contingency(table, correction=False).pvalue, rel=1e-9)


def _evan_miller(control: Proportion, treatment: Proportion) -> float:
    """Closed form of P(p_t > p_c) for Beta posteriors (Evan Miller, "Formulas for Bayesian
    A/B testing"), summed in log space."""
    a_a, b_a = 1 + control.successes, 1 + control.trials - control.successes
    a_b, b_b = 1 + treatment.successes, 1 + treatment.trials - treatment.successes

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    return sum(
        math.exp(
            log_beta(a_a + i, b_a + b_b)
            - math.log(b_b + i)
            - log_beta(1 + i, b_b)
            - log_beta(a_a, b_a)
        )
        for i in range(a_b)
    )


@pytest.mark.parametrize(
    ("control", "treatment"),
    [((10, 100), (15, 100)), ((100, 1000), (120, 1000)), ((0, 50), (3, 60)), ((40, 40), (2, 3)),
     ((300, 10_000), (345, 10_000))],
)  # fmt: skip
def test_chance_to_beat_matches_the_closed_form(
    control: tuple[int, int], treatment: tuple[int, int]
) -> None:
    c, t = Proportion(*control), Proportion(*treatment)
    assert chance_to_beat(c, t) == pytest.approx(_evan_miller(c, t), abs=1e-8)


def test_chance_to_beat_exact_and_monte_carlo() -> None:
    # Beta(2, 1) against Beta(1, 1): ∫ 2x · x dx = 2/3.
    assert chance_to_beat(Proportion(0, 0), Proportion(1, 1)) == pytest.approx(2 / 3, abs=1e-9)
    rng = np.random.default_rng(7)
    draws = 400_000
    t = rng.beta(1 + 130, 1 + 2000 - 130, draws)
    c = rng.beta(1 + 100, 1 + 2000 - 100, draws)
    monte_carlo = float(np.mean(t > c))
    assert chance_to_beat(Proportion(100, 2000), Proportion(130, 2000)) == pytest.approx(
        monte_carlo, abs=0.005
    )


def _sample(values: np.ndarray[Any, Any]) -> Sample:
    return Sample(len(values), float(values.sum()), float((values**2).sum()))


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    control = rng.lognormal(3.5, 0.8, 900) * (rng.random(900) < 0.04)
    treatment = rng.lognormal(3.6, 0.7, 1100) * (rng.random(1100) < 0.05)
    result = welch_t_test(_sample(control), _sample(treatment))
    reference = sps.ttest_ind(treatment, control, equal_var=False)
    ci = reference.confidence_interval(0.95)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-8)
    assert result.df == pytest.approx(reference.df, rel=1e-9)
    assert (result.low, result.high) == pytest.approx((ci.low, ci.high), rel=1e-8)
    from_stats = sps.ttest_ind_from_stats(
        treatment.mean(), treatment.std(ddof=1), len(treatment),
        control.mean(), control.std(ddof=1), len(control), equal_var=False,
    )  # fmt: skip
    assert result.t == pytest.approx(from_stats.statistic, rel=1e-9)


def test_incremental_revenue_scales_the_difference_by_variant_exposures() -> None:
    holdout, variant = Sample(1000, 1500.0, 1500.0 * 60), Sample(4000, 8000.0, 8000.0 * 60)
    welch = welch_t_test(holdout, variant)
    incremental = incremental_revenue(holdout, variant)
    assert incremental.estimate == pytest.approx((2.0 - 1.5) * 4000)
    assert (incremental.low, incremental.high) == pytest.approx(
        (welch.low * 4000, welch.high * 4000)
    )


def test_srm_matches_scipy_chisquare() -> None:
    observed = {"holdout": 1130, "a": 4420, "b": 4450}
    total = sum(observed.values())
    reference = sps.chisquare(
        [observed[k] for k in SPLIT], [SPLIT[k] * total for k in SPLIT]
    ).pvalue
    assert srm_p_value(observed, SPLIT) == pytest.approx(reference, rel=1e-9)


def test_expected_split_from_weights_and_holdout() -> None:
    assert expected_split({"a": 1, "b": 3}, 0.2) == pytest.approx(
        {"holdout": 0.2, "a": 0.2, "b": 0.6}
    )
    assert expected_split({"a": 1, "b": 1}, 0.0) == {"a": 0.5, "b": 0.5}


def test_sample_size_matches_published_values() -> None:
    # R's power.prop.test(p1 = .50, p2 = .75, power = .90) documents n = 76.7 per group.
    assert sample_size_per_arm(0.5, 0.5, alpha=0.05, power=0.9) == 77
    # 10% against 20%, two-sided 5%, 80% power: 198.96 (199) per group (Fleiss, no correction).
    assert sample_size_per_arm(0.1, 1.0) == 199
    assert sample_size_per_arm(0.0, 0.1) is None
    assert sample_size_per_arm(0.6, 1.0) is None


def test_msprt_matches_the_normal_mixture_formula() -> None:
    control, treatment, tau = Proportion(200, 4000), Proportion(260, 4000), 0.01
    pooled = 460 / 8000
    v = pooled * (1 - pooled) * (2 / 4000)
    theta = 260 / 4000 - 200 / 4000
    lr = math.sqrt(v / (v + tau**2)) * math.exp(theta**2 * tau**2 / (2 * v * (v + tau**2)))
    assert msprt_p_value(control, treatment, tau) == pytest.approx(min(1.0, 1 / lr), rel=1e-12)
    assert msprt_p_value(control, treatment, 0.0) == 1.0
    looks = [(Proportion(10 * d, 200 * d), Proportion(13 * d, 200 * d)) for d in range(1, 20)]
    running = [always_valid_p_value(looks[:k], 0.15) for k in range(1, len(looks) + 1)]
    assert running == sorted(running, reverse=True)


# --- properties ------------------------------------------------------------------------------
@st.composite
def arms(draw: st.DrawFn, name: str) -> VariantCounts:
    exposures = draw(st.integers(0, 1_000_000))
    conversions = draw(st.integers(0, exposures + 3))  # repeat orders may exceed exposures
    revenue = draw(st.floats(0, 1e6)) if conversions else 0.0
    spread = draw(st.floats(0, 1))
    low = revenue**2 / max(1, conversions)
    return VariantCounts(name, exposures, conversions, revenue, low + spread * (revenue**2 - low))


def _finite(value: Any) -> None:
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list):
        for item in value:
            _finite(item)


def _check_interval(interval: dict[str, float] | None) -> None:
    if interval is not None:
        assert interval["low"] <= interval["estimate"] <= interval["high"]


@settings(max_examples=150, deadline=None)
@given(arms("holdout"), arms("a"), arms("b"))
def test_reports_on_any_counts(holdout: VariantCounts, a: VariantCounts, b: VariantCounts) -> None:
    report = experiment_report("c", {"holdout": holdout, "a": a, "b": b}, "holdout", SPLIT)
    data = msgspec.to_builtins(report)
    _finite(data)
    assert 0 <= report.health.srm_p_value <= 1
    for row in data["variants"]:
        assert 0 <= row["conversion_rate"]["low"] <= row["conversion_rate"]["high"] <= 1
        for key in ("conversion_rate", "uplift", "revenue_difference", "incremental_revenue"):
            _check_interval(row[key])
        for key in ("p_value", "sequential_p_value", "chance_to_beat_control", "revenue_p_value"):
            assert row[key] is None or 0 <= row[key] <= 1
    assert report.sentences


@settings(max_examples=150, deadline=None)
@given(arms("x"), arms("y"))
def test_swapping_arms_mirrors_every_comparison(x: VariantCounts, y: VariantCounts) -> None:
    px, py = x.proportion, y.proportion
    assert two_proportion_z_test(px, py)[1] == pytest.approx(two_proportion_z_test(py, px)[1])
    assert chance_to_beat(px, py) + chance_to_beat(py, px) == pytest.approx(1, abs=1e-7)
    forward, backward = relative_uplift(px, py), relative_uplift(py, px)
    assert (forward is None) == (backward is None)
    if forward is not None and backward is not None:
        assert (1 + forward.estimate) * (1 + backward.estimate) == pytest.approx(1)
        assert (1 + forward.low) * (1 + backward.high) == pytest.approx(1)
    w1, w2 = (
        welch_t_test(x.revenue_sample, y.revenue_sample),
        welch_t_test(y.revenue_sample, x.revenue_sample),
    )
    assert w1.p_value == pytest.approx(w2.p_value)
    assert w1.difference == pytest.approx(-w2.difference, abs=1e-9)
    assert msprt_p_value(px, py, 0.01) == pytest.approx(msprt_p_value(py, px, 0.01))
    assert srm_p_value({"x": x.exposures, "y": y.exposures}, {"x": 0.3, "y": 0.7}) == pytest.approx(
        srm_p_value({"y": y.exposures, "x": x.exposures}, {"y": 0.7, "x": 0.3})
    )


def test_empty_and_extreme_counts_are_defined() -> None:
    for a, b in [
        ((0, 0), (0, 0)),
        ((0, 100), (0, 100)),
        ((100, 100), (100, 100)),
        ((5, 5), (0, 9)),
    ]:
        counts = {"a": VariantCounts("a", a[1], a[0]), "b": VariantCounts("b", b[1], b[0])}
        report = experiment_report("c", counts, "a", {"a": 0.5, "b": 0.5})
        _finite(msgspec.to_builtins(report))
        assert report.winner is None


# --- sentences and decisions -----------------------------------------------------------------
def test_sentences_say_what_happened_by_the_experiments_rule() -> None:
    counts = {
        "a": VariantCounts("a", 20_000, 1000, 50_000.0, 50_000.0 * 80),
        "b": VariantCounts("b", 20_000, 1120, 56_000.0, 56_000.0 * 80),
    }
    report = experiment_report("c", counts, "a", {"a": 0.5, "b": 0.5})
    # One look is weak evidence for the always-valid rule: no verdict yet, and nothing on the
    # page claims one (no fixed-horizon interval or chance to beat in the sentences).
    assert report.winner is None and report.verdict == "no_difference" and not report.final
    assert (
        report.headline
        == report.sentences[0]
        == (
            "No variant beats a yet. Keep the test running: with the always-valid rule you may look"
            " any day."
        )
    )
    arm = next(s for s in report.sentences if s.startswith("b: "))
    assert re.fullmatch(
        r"b: \+12% conversion against a \(95% always-valid interval -[\d.]+% to \+[\d.]+%;"
        r" always-valid p = 0\.\d{3}, no difference shown\)\.",
        arm,
    ), arm
    assert not any("chance" in s or "CI" in s for s in report.sentences)
    fixed = experiment_report(
        "c", counts, "a", {"a": 0.5, "b": 0.5}, rule="fixed_horizon", planned_exposures=20_000
    )
    assert fixed.winner == "b" and fixed.verdict == "winner" and fixed.final
    assert re.fullmatch(
        r"b beats a: \+12% conversion \(95% fixed-horizon interval \+[\d.]+% to \+[\d.]+%\)\.",
        fixed.headline,
    ), fixed.headline
    early = experiment_report(
        "c", counts, "a", {"a": 0.5, "b": 0.5}, rule="fixed_horizon", planned_exposures=30_000
    )
    assert early.verdict == "collecting" and early.winner is None
    assert early.headline == (
        "Fixed-horizon test: 20,000 of 30,000 exposures in the smallest arm so far. The verdict"
        " comes once every arm has 30,000; until then nothing here is a result."
    )
    assert all(row.decision_p is None and row.difference is None for row in early.variants)


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, VariantCounts]]:
    """Cumulative daily counts of a holdout and two variants, 1 to 6 looks."""
    days = draw(st.integers(1, 6))
    base = draw(st.floats(0.01, 0.2))
    # Effects near what the tests can tell apart, where a rule's boundary lies.
    rates = {"holdout": base, **{arm: base * (1 + draw(st.floats(-0.4, 0.4))) for arm in "ab"}}
    size = draw(st.integers(100, 3000))
    per_day = {"holdout": size * 2 // 9, "a": size, "b": size}  # about the split below
    looks: list[dict[str, VariantCounts]] = []
    running = {arm: VariantCounts(arm) for arm in rates}
    for _ in range(days):
        for arm, rate in rates.items():
            n = per_day[arm] + draw(st.integers(0, 50))
            c = round(n * rate) + draw(st.integers(-3, 3))
            orders = max(0, min(n, c))
            value = orders * draw(st.floats(20, 90))
            spread = value * draw(st.floats(30, 200))
            running[arm] = running[arm].plus(VariantCounts(arm, n, orders, value, spread))
        looks.append(dict(running))
    return looks


def _excludes_zero(interval: Interval) -> bool:
    return interval.low > 0 or interval.high < 0


@settings(max_examples=200, deadline=None)
@given(histories(), st.sampled_from(["sequential", "fixed_horizon"]), st.integers(100, 8000))
def test_the_table_and_the_verdict_cannot_disagree(
    looks: list[dict[str, VariantCounts]], rule: Any, planned: int
) -> None:
    """Under either rule the decision's interval leaves out 0 exactly when its p-value is small
    enough (conversion and revenue), the headline is the verdict, and a winner is named exactly
    when a variant's decision says it converts better."""
    report = experiment_report(
        "c", looks[-1], "holdout", SPLIT, history=looks[:-1], rule=rule, planned_exposures=planned
    )
    assert report.verdict in VERDICTS and report.sentences[0] == report.headline
    alpha = report.decision_alpha
    for row in report.variants[1:]:
        for interval, p in ((row.difference, row.decision_p),
                            (row.revenue_decision, row.revenue_decision_p)):  # fmt: skip
            if interval is None or p is None:
                continue
            assert interval.low <= interval.high
            if abs(p - alpha) > 1e-9:
                assert _excludes_zero(interval) == (p <= alpha), (interval, p, alpha)
        if row.change is not None and row.difference is not None:
            assert (row.change.low > 0) == (row.difference.low > 0)
    _check_verdict(report)


def _check_verdict(report: Report) -> None:
    """The verdict, the winner and the headline say one thing."""
    rows, alpha = report.variants[1:], report.decision_alpha
    better = [r.variant for r in rows
              if r.decision_p is not None and r.decision_p <= alpha
              and r.difference is not None and r.difference.estimate > 0]  # fmt: skip
    if report.verdict == "winner":
        assert report.winner in better
        assert report.headline.startswith(f"{report.winner} beats {report.control}")
    else:
        assert report.winner is None
    if report.verdict in ("worse", "no_difference"):
        assert not better
    if report.verdict == "collecting":
        assert "Too early" in report.headline or "Fixed-horizon test:" in report.headline
    if report.verdict == "split_broken":
        assert report.headline.startswith("The split looks broken")


def _counts(rates: dict[str, tuple[int, int]]) -> dict[str, VariantCounts]:
    return {arm: VariantCounts(arm, n, c, c * 50.0, c * 50.0**2 * 1.5)
            for arm, (n, c) in rates.items()}  # fmt: skip


# Counts that put a two-arm experiment (control "a") in each verdict, by rule.
VERDICT_CASES = {
    "split_broken": _counts({"a": (30_000, 1500), "b": (20_000, 1300)}),
    "collecting": _counts({"a": (60, 3), "b": (60, 4)}),
    "winner": _counts({"a": (40_000, 2000), "b": (40_000, 2400)}),
    "worse": _counts({"a": (40_000, 2400), "b": (40_000, 2000)}),
    "no_difference": _counts({"a": (40_000, 2000), "b": (40_000, 2010)}),
}


@pytest.mark.parametrize("rule", ["sequential", "fixed_horizon"])
@pytest.mark.parametrize("verdict", list(VERDICT_CASES))
def test_every_verdict_has_one_story(verdict: str, rule: Any) -> None:
    report = experiment_report(
        "c", VERDICT_CASES[verdict], "a", {"a": 0.5, "b": 0.5}, rule=rule,
        planned_exposures=40_000,
    )  # fmt: skip
    assert report.verdict == verdict
    _check_verdict(report)
    final = verdict in ("winner", "worse") or (rule, verdict) == ("fixed_horizon", "no_difference")
    assert report.final == final


def test_not_enough_data_is_said_plainly() -> None:
    counts = {"holdout": VariantCounts("holdout", 40, 2), "a": VariantCounts("a", 400, 30)}
    report = experiment_report("c", counts, "holdout", {"holdout": 0.1, "a": 0.9})
    assert "Not enough data yet: 40 of 100 exposures in holdout." in report.sentences
    assert "Not enough data yet: 2 of 10 conversions in holdout." in report.sentences
    assert not report.health.min_sample_reached
    assert report.winner is None


def test_no_winner_when_the_split_is_broken() -> None:
    counts = {
        "a": VariantCounts("a", 30_000, 1500),
        "b": VariantCounts("b", 20_000, 1300),
    }
    report = experiment_report("c", counts, "a", {"a": 0.5, "b": 0.5})
    assert report.health.srm_flag
    assert report.winner is None and report.verdict == "split_broken"
    assert report.sentences[0] == (
        "The split looks broken (p < 0.001): don't trust these numbers. Find the cause first."
    )


# --- simulations -----------------------------------------------------------------------------
def test_uplift_and_revenue_intervals_cover_the_truth() -> None:
    rng = np.random.default_rng(20240501)
    runs, n, p_c, uplift = 400, 4000, 0.05, 0.20
    mean_order = math.exp(3.5 + 0.8**2 / 2)  # lognormal mean
    uplift_hits = revenue_hits = 0
    for _ in range(runs):
        c, t = rng.binomial(n, p_c), rng.binomial(n, p_c * (1 + uplift))
        interval = relative_uplift(Proportion(int(c), n), Proportion(int(t), n))
        assert interval is not None
        uplift_hits += interval.low <= uplift <= interval.high
        orders_c, orders_t = rng.lognormal(3.5, 0.8, c), rng.lognormal(3.5, 0.8, t)
        welch = welch_t_test(
            Sample(n, float(orders_c.sum()), float((orders_c**2).sum())),
            Sample(n, float(orders_t.sum()), float((orders_t**2).sum())),
        )
        revenue_hits += welch.low <= p_c * uplift * mean_order <= welch.high
    assert uplift_hits / runs >= 0.90
    assert revenue_hits / runs >= 0.90


def test_srm_is_flagged_only_when_the_split_is_broken() -> None:
    rng = np.random.default_rng(11)
    arms_ = list(SPLIT)
    healthy = rng.multinomial(20_000, [SPLIT[a] for a in arms_], size=300)
    broken = rng.multinomial(20_000, [0.12, 0.44, 0.44], size=300)

    def flagged(draws: np.ndarray[Any, Any]) -> float:
        return float(
            np.mean([srm_p_value(dict(zip(arms_, map(int, d), strict=True)), SPLIT) < 0.001
                     for d in draws])
        )  # fmt: skip

    assert flagged(healthy) <= 0.01
    assert flagged(broken) >= 0.99


def test_always_valid_p_value_survives_daily_peeking() -> None:
    """A/A: 28 daily looks. Peeking at the fixed-horizon p-value finds a "winner" far more
    often than 5%; the always-valid p-value does not."""
    rng = np.random.default_rng(42)
    runs, days, per_day, rate = 400, 28, 300, 0.05
    guard = ExperimentSettings()
    naive = sequential = 0
    for _ in range(runs):
        c = np.cumsum(rng.binomial(per_day, rate, days))
        t = np.cumsum(rng.binomial(per_day, rate, days))
        looks = [
            (Proportion(int(ci), per_day * d), Proportion(int(ti), per_day * d))
            for d, (ci, ti) in enumerate(zip(c, t, strict=True), start=1)
            if min(ci, ti) >= guard.min_conversions
        ]
        naive += any(two_proportion_z_test(a, b)[1] <= 0.05 for a, b in looks)
        sequential += always_valid_p_value(looks, guard.relative_mixing_sd) <= 0.05
    assert sequential / runs <= 0.05
    assert naive / runs > 0.10


@pytest.mark.parametrize(("p_c", "p_t", "per_day"), [(0.05, 0.05, 500), (0.03, 0.036, 2000)])
def test_always_valid_intervals_cover_the_truth_at_every_look(
    p_c: float, p_t: float, per_day: int
) -> None:
    """20 daily looks: the running intersection (which lies inside every look's interval)
    still holds the true difference in at least 95% of runs, with or without an effect."""
    rng = np.random.default_rng(7)
    runs, hits = 200, 0
    for _ in range(runs):
        c = np.cumsum(rng.binomial(per_day, p_c, 20))
        t = np.cumsum(rng.binomial(per_day, p_t, 20))
        looks = [
            conversion_look(Proportion(int(ci), per_day * d), Proportion(int(ti), per_day * d),
                            0.15)
            for d, (ci, ti) in enumerate(zip(c, t, strict=True), start=1)
            if min(ci, ti) >= 10
        ]  # fmt: skip
        _, interval = always_valid_decision(looks, 0.05, bound=1.0)
        assert interval is not None
        hits += interval.low <= p_t - p_c <= interval.high
    assert hits / runs >= 0.95


def test_a_a_runs_judged_by_the_report_rarely_call_a_difference() -> None:
    """200 seeded A/A experiments with 28 daily looks, judged by the report's own verdict: the
    always-valid rule, read every day, calls a difference in at most 5% of them; the one-look
    p-value checked every day would in far more."""
    check = aa_check(runs=200, days=28, per_day=300, rate=0.05, seed=1)
    assert check.sequential_called / check.runs <= 0.05
    assert check.peeking_called / check.runs > 0.15
    assert check.fixed_called / check.runs <= 0.09  # 5% expected; 200 runs: within 3 sd


def test_holm_by_hand() -> None:
    """Three treatments at alpha 0.05: p = 0.01, 0.04, 0.03 (and one without a p-value).
    Sorted: 0.01 <= 0.05/3 (rejected), 0.03 > 0.05/2 (stops here), 0.04 not rejected.
    Adjusted: 3·0.01 = 0.03; max(0.03, 2·0.03) = 0.06; max(0.06, 1·0.04) = 0.06."""
    levels, adjusted = holm([0.01, 0.04, 0.03, None], 0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, None])  # type: ignore[arg-type]
    assert levels[:3] == pytest.approx([0.05 / 3, 0.025, 0.025])
    # Two treatments, both small: both rejected, the second at the full alpha.
    levels, adjusted = holm([0.02, 0.012], 0.05)
    assert adjusted == pytest.approx([0.024, 0.024]) and levels == pytest.approx([0.05, 0.025])
    assert holm([0.2], 0.05) == ([0.05], [0.2])


def test_with_several_variants_the_decision_is_holms() -> None:
    """b clearly better, c a little: Holm rejects b at alpha/2 and then c at alpha, where
    Bonferroni would stop at c; c's interval is at 95% and leaves out 0, b's at 97.5%."""
    counts = _counts({"a": (40_000, 2000), "b": (40_000, 2400), "c": (40_000, 2130)})
    split = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    report = experiment_report("c", counts, "a", split, rule="fixed_horizon",
                               planned_exposures=40_000)  # fmt: skip
    b, c = report.variants[1], report.variants[2]
    assert b.decision_level == pytest.approx(0.975) and c.decision_level == pytest.approx(0.95)
    assert c.decision_p is not None and 0.025 < c.decision_p <= 0.05  # Holm: c rejected too
    assert c.difference is not None and c.difference.low > 0
    assert report.winner == "b" and report.verdict == "winner"
    assert "Holm-adjusted p" in " ".join(report.sentences)
