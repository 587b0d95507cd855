"""Variance reduction (CUPED) and revenue capping against independent references: GrowthBook's
gbstats for one covariate, a least-squares fit for several, the theory in simulation, and
hand-computed caps."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from gbstats.frequentist.tests import FrequentistConfig, TwoSidedTTest
from gbstats.models.statistics import (
    ProportionStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from widget_server.experiments.adjust import (
    NO_VARIANCE,
    NOT_RECORDED,
    TOO_FEW,
    Adjusted,
    Moments,
    Outcome,
    percentile,
    regression_adjusted,
)
from widget_server.experiments.buyers import Buyer, parse_buyers, revenue_cap, with_buyers
from widget_server.experiments.stats import (
    ExperimentSettings,
    VariantCounts,
    experiment_report,
)


def moments_of(x: np.ndarray, converted: np.ndarray, revenue: np.ndarray) -> Moments:
    """An arm's sums as the store keeps them, from per-visitor rows (x: n rows, k columns)."""
    k = x.shape[1]
    return Moments(
        len(x),
        tuple(float(v) for v in x.sum(axis=0)),
        tuple(float((x[:, i] * x[:, j]).sum()) for i in range(k) for j in range(i, k)),
        tuple(float(v) for v in (x * converted[:, None]).sum(axis=0)),
        tuple(float(v) for v in (x * revenue[:, None]).sum(axis=0)),
    )


def revenue_outcome(revenue: np.ndarray, m: Moments) -> Outcome:
    return Outcome(
        len(revenue),
        float(revenue.sum()),
        float((revenue**2).sum()),
        m.xr,
        float(revenue.var(ddof=1)),
    )


def conversion_outcome(converted: np.ndarray, m: Moments) -> Outcome:
    p = float(converted.mean())
    return Outcome(
        len(converted), float(converted.sum()), float(converted.sum()), m.xc, p * (1 - p)
    )


def adjusted(result: Adjusted | str) -> Adjusted:
    assert isinstance(result, Adjusted), result
    return result


# --- one covariate: GrowthBook's gbstats --------------------------------------------------
def arm_data(rng: np.random.Generator, n: int, lift: float) -> tuple[np.ndarray, ...]:
    cart = rng.gamma(2.0, 20.0, n) * (rng.random(n) < 0.4)
    converted = (rng.random(n) < 0.03 + 0.002 * cart / 10 + lift).astype(float)
    revenue = converted * (30 + 1.5 * cart + rng.gamma(2.0, 15.0, n))
    return cart[:, None], converted, revenue


def gbstats_test(
    control: tuple[np.ndarray, np.ndarray], treatment: tuple[np.ndarray, np.ndarray], binary: bool
) -> TwoSidedTTest:
    """gbstats' regression-adjusted t-test of the absolute difference, from per-visitor
    (covariate column, outcome) of each arm."""

    def statistic(v: np.ndarray) -> ProportionStatistic | SampleMeanStatistic:
        if binary:
            return ProportionStatistic(n=len(v), sum=float(v.sum()))
        return SampleMeanStatistic(n=len(v), sum=float(v.sum()), sum_squares=float((v**2).sum()))

    stats = [
        RegressionAdjustedStatistic(
            n=len(y), post_statistic=statistic(y),
            pre_statistic=SampleMeanStatistic(
                n=len(x), sum=float(x.sum()), sum_squares=float((x**2).sum())
            ),
            post_pre_sum_of_products=float((x[:, 0] * y).sum()), theta=0,
        )
        for x, y in (control, treatment)
    ]  # fmt: skip
    theta = compute_theta(stats[0], stats[1])
    stats = [replace(s, theta=theta) for s in stats]
    return TwoSidedTTest(stats[0], stats[1], FrequentistConfig(difference_type="absolute"))


def test_one_covariate_agrees_with_gbstats_for_revenue_and_conversion() -> None:
    rng = np.random.default_rng(7)
    xc_, cc, rc = arm_data(rng, 2500, 0.0)
    xt, ct, rt = arm_data(rng, 2400, 0.01)
    mc, mt = moments_of(xc_, cc, rc), moments_of(xt, ct, rt)
    revenue = regression_adjusted(revenue_outcome(rc, mc), mc, revenue_outcome(rt, mt), mt)
    conversion = regression_adjusted(conversion_outcome(cc, mc), mc, conversion_outcome(ct, mt), mt)
    for ours, y_c, y_t, binary in ((revenue, rc, rt, False), (conversion, cc, ct, True)):
        reference = gbstats_test((xc_, y_c), (xt, y_t), binary)
        mine = adjusted(ours)
        assert mine.estimate == pytest.approx(reference.point_estimate, rel=1e-9, abs=1e-12)
        assert mine.variance == pytest.approx(reference.variance, rel=1e-9)
        assert mine.used == ("cart_value",)
        plain = float(y_t.mean() - y_c.mean())
        assert mine.estimate != pytest.approx(plain, rel=1e-6)  # the adjustment did something


def test_the_report_interval_for_revenue_is_gbstats_confidence_interval() -> None:
    rng = np.random.default_rng(11)
    xc_, cc, rc = arm_data(rng, 3000, 0.0)
    xt, ct, rt = arm_data(rng, 3000, 0.01)
    counts = {
        arm: VariantCounts(arm, 3000, int(c.sum()), float(r.sum()), float((r**2).sum()),
                           moments=moments_of(x, c, r))
        for arm, x, c, r in (("a", xc_, cc, rc), ("b", xt, ct, rt))
    }  # fmt: skip
    report = experiment_report(
        "t", counts, "a", {"a": 0.5, "b": 0.5}, rule="fixed_horizon",
        planned_exposures=3000, adjust=True,
    )  # fmt: skip
    row = report.variants[1]
    assert row.revenue_adjusted and report.adjustment == "adjusted"
    result = gbstats_test((xc_, rc), (xt, rt), binary=False).compute_result()
    assert row.revenue_decision is not None
    assert row.revenue_decision.low == pytest.approx(result.ci[0], rel=1e-6)
    assert row.revenue_decision.high == pytest.approx(result.ci[1], rel=1e-6)
    assert row.revenue_decision_p == pytest.approx(result.p_value, rel=1e-6)
    # The plain figures stay one click away.
    assert row.unadjusted_revenue_decision is not None and row.unadjusted_revenue_decision_p


# --- several covariates: an independent least-squares fit --------------------------------
def test_several_covariates_agree_with_a_least_squares_fit() -> None:
    rng = np.random.default_rng(3)
    arms = []
    for n, lift in ((2000, 0.0), (2100, 4.0)):
        x = np.column_stack([
            rng.gamma(2.0, 20.0, n), rng.poisson(2.0, n), rng.poisson(5.0, n) + 1,
            rng.poisson(0.3, n),
        ])  # fmt: skip
        y = 5 + lift + x @ np.array([0.5, 3.0, 1.0, 8.0]) + rng.normal(0, 25, n)
        arms.append((x.astype(float), (y > 40).astype(float), y))
    (xc_, cc, yc), (xt, ct, yt) = arms
    mc, mt = moments_of(xc_, cc, yc), moments_of(xt, ct, yt)
    ours = adjusted(regression_adjusted(revenue_outcome(yc, mc), mc, revenue_outcome(yt, mt), mt))
    # y on an intercept and the covariates over both arms: the slope θ.
    both_x, both_y = np.vstack([xc_, xt]), np.concatenate([yc, yt])
    design = np.column_stack([np.ones(len(both_y)), both_x])
    theta = np.linalg.lstsq(design, both_y, rcond=None)[0][1:]
    residual_c, residual_t = yc - xc_ @ theta, yt - xt @ theta
    assert ours.estimate == pytest.approx(residual_t.mean() - residual_c.mean(), rel=1e-9)
    expected_variance = residual_c.var(ddof=1) / len(yc) + residual_t.var(ddof=1) / len(yt)
    assert ours.variance == pytest.approx(expected_variance, rel=1e-9)
    assert ours.used == ("cart_value", "cart_items", "pages", "orders")


def test_covariates_without_variance_or_repeating_others_are_left_out() -> None:
    rng = np.random.default_rng(5)
    n = 500
    cart = rng.gamma(2.0, 20.0, (2, n))
    y = [cart[i] * 0.3 + rng.normal(0, 5, n) for i in range(2)]
    rows = [
        np.column_stack([cart[i], cart[i] * 2.0, np.full(n, 3.0), rng.poisson(1.0, n)])
        for i in range(2)
    ]
    m = [moments_of(rows[i], (y[i] > 5).astype(float), y[i]) for i in range(2)]
    out = adjusted(
        regression_adjusted(revenue_outcome(y[0], m[0]), m[0], revenue_outcome(y[1], m[1]), m[1])
    )
    assert out.used == ("cart_value", "orders")  # items = twice the cart value; pages never vary
    constant = [np.full((n, 2), 4.0) for _ in range(2)]
    m = [moments_of(constant[i], (y[i] > 5).astype(float), y[i]) for i in range(2)]
    assert (
        regression_adjusted(revenue_outcome(y[0], m[0]), m[0], revenue_outcome(y[1], m[1]), m[1])
        == NO_VARIANCE
    )
    short = replace(m[0], n=m[0].n - 1)  # one visitor's covariates were not kept
    assert (
        regression_adjusted(revenue_outcome(y[0], m[0]), short, revenue_outcome(y[1], m[1]), m[1])
        == NOT_RECORDED
    )
    one = moments_of(rows[0][:1], np.ones(1), y[0][:1])  # a single visitor in the control
    full = moments_of(rows[1], np.ones(n), y[1])
    alone = Outcome(1, float(y[0][0]), float(y[0][0] ** 2), one.xr, 0.0)
    assert regression_adjusted(alone, one, revenue_outcome(y[1], full), full) == TOO_FEW


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 500), st.integers(0, 1), st.floats(0, 300)), min_size=3, max_size=40
    ),
    st.lists(
        st.tuples(st.floats(0, 500), st.integers(0, 1), st.floats(0, 300)), min_size=3, max_size=40
    ),
)
def test_a_covariate_that_never_varies_leaves_the_comparison_unadjusted(
    control: list[tuple[float, int, float]], treatment: list[tuple[float, int, float]]
) -> None:
    """A covariate that never varies leaves the comparison unadjusted, whatever the outcomes
    (the report then shows the plain figures and says why)."""
    arms = []
    for rows in (control, treatment):
        x = np.array([[4.0] for _ in rows])
        converted = np.array([float(c) for _, c, _ in rows])
        revenue = np.array([r for _, _, r in rows])
        arms.append((moments_of(x, converted, revenue), revenue))
    (mc, rc), (mt, rt) = arms
    assert (
        regression_adjusted(revenue_outcome(rc, mc), mc, revenue_outcome(rt, mt), mt) == NO_VARIANCE
    )


# --- the theory, in simulation ------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_adjusted_intervals_narrow_as_theory_says_and_still_cover(rho: float) -> None:
    """Revenue per visitor ``y = mean + rho*x + sqrt(1 - rho^2)*e`` with ``x, e ~ N(0, 1)``
    (so ``x`` and ``y`` correlate at ``rho``), a true uplift of 0.05; 100 seeded runs of 4,000
    visitors per arm, judged by the report's fixed-horizon rule with and without the
    adjustment."""
    n, uplift, runs = 4000, 0.05, 100
    ratios, covered = [], 0
    for seed in range(runs):
        rng = np.random.default_rng(1000 + seed)
        counts = {}
        for arm, mean in (("a", 1.0), ("b", 1.0 + uplift)):
            x = rng.normal(0, 1, (n, 1))
            y = mean + rho * x[:, 0] + math.sqrt(1 - rho**2) * rng.normal(0, 1, n)
            counts[arm] = VariantCounts(
                arm, n, 0, float(y.sum()), float((y**2).sum()),
                moments=moments_of(x, np.zeros(n), y),
            )  # fmt: skip
        judged = {
            adjust: experiment_report(
                "sim", counts, "a", {"a": 0.5, "b": 0.5},
                ExperimentSettings(min_conversions=0), rule="fixed_horizon",
                planned_exposures=n, adjust=adjust,
            ).variants[1].revenue_decision
            for adjust in (False, True)
        }  # fmt: skip
        plain, cuped = judged[False], judged[True]
        assert plain is not None and cuped is not None
        ratios.append((cuped.high - cuped.low) / (plain.high - plain.low))
        covered += cuped.low <= uplift <= cuped.high
    theory = math.sqrt(1 - rho**2)
    assert abs(float(np.mean(ratios)) / theory - 1) <= 0.03
    assert all(abs(r / theory - 1) <= 0.03 for r in ratios)
    assert covered >= 93


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_adjusted_conversion_intervals_narrow_as_theory_says_and_still_cover(rho: float) -> None:
    """Conversion with a pre-exposure covariate ``x ~ Bernoulli(½)`` (say, had a cart):
    ``P(convert | x) = p + delta*(x - 1/2)`` with ``delta`` set so that ``x`` and conversion
    correlate at ``rho`` in the control (p = 30%); the treatment adds 1.5 points."""
    n, p, lift, runs = 5000, 0.30, 0.015, 100
    delta = rho * math.sqrt(p * (1 - p)) / 0.5
    ratios, covered = [], 0
    for seed in range(runs):
        rng = np.random.default_rng(5000 + seed)
        counts = {}
        for arm, base in (("a", p), ("b", p + lift)):
            x = (rng.random(n) < 0.5).astype(float)
            converted = (rng.random(n) < base + delta * (x - 0.5)).astype(float)
            counts[arm] = VariantCounts(
                arm, n, int(converted.sum()), moments=moments_of(x[:, None], converted, converted)
            )
        judged = {
            adjust: experiment_report(
                "sim", counts, "a", {"a": 0.5, "b": 0.5}, rule="fixed_horizon",
                planned_exposures=n, adjust=adjust,
            ).variants[1].difference
            for adjust in (False, True)
        }  # fmt: skip
        plain, cuped = judged[False], judged[True]
        assert plain is not None and cuped is not None
        ratios.append((cuped.high - cuped.low) / (plain.high - plain.low))
        covered += cuped.low <= lift <= cuped.high
    theory = math.sqrt(1 - rho**2)
    assert abs(float(np.mean(ratios)) / theory - 1) <= 0.03
    assert covered >= 93


# --- revenue capping ---------------------------------------------------------------------
def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 100.0]
    for q in (0, 25, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    # By hand: 6 values, 99th percentile at rank 0.99 * 5 = 4.95 between 9 and 100.
    assert percentile(values, 99) == pytest.approx(9 + 0.95 * 91)


def test_capping_by_hand() -> None:
    """Control buyers 10, 20, 30, 40, 1000 (90th percentile: 40 + 0.6·960 = 616); a treatment
    buyer at 5000 and one at 50 that grows to 700 on the second day."""
    buyers = [Buyer("a", (1.0,), (("20260101", total),)) for total in (10.0, 20.0, 30.0, 40.0)]
    buyers += [
        Buyer("a", (2.0,), (("20260101", 1000.0),)),
        Buyer("b", (3.0,), (("20260101", 5000.0),)),
        Buyer("b", (1.0,), (("20260101", 50.0), ("20260102", 700.0))),
    ]
    cap = revenue_cap(buyers, "a", 90, min_buyers=5)
    assert cap.cap == pytest.approx(616.0) and cap.control_buyers == 5
    assert revenue_cap(buyers, "a", 90, min_buyers=6).cap is None  # too few buyers in the control
    missing = revenue_cap(buyers, "a", 90, min_buyers=5, conversions=6)  # one record missing
    assert missing.cap is None and "not kept for every buyer" in missing.reason
    day1 = {
        "a": VariantCounts("a", 100, 5, 1100.0, moments=Moments(100, (1.0,), (1.0,))),
        "b": VariantCounts("b", 100, 2, 5050.0, moments=Moments(100, (1.0,), (1.0,))),
    }
    day2 = {"a": day1["a"], "b": replace(day1["b"], revenue=5700.0)}
    (_, first), (_, second) = with_buyers([("20260101", day1), ("20260102", day2)], buyers, 616.0)[
        0
    ]
    assert first["a"].capped_revenue == pytest.approx(10 + 20 + 30 + 40 + 616)
    assert first["a"].capped_revenue_sq == pytest.approx(100 + 400 + 900 + 1600 + 616**2)
    assert first["b"].capped_revenue == pytest.approx(616 + 50)
    assert second["b"].capped_revenue == pytest.approx(616 + 616)
    assert second["b"].capped_revenue_sq == pytest.approx(2 * 616**2)
    assert first["b"].moments is not None and first["b"].moments.xr == pytest.approx(
        (3 * 616 + 50,)
    )
    assert second["b"].moments is not None and second["b"].moments.xr == pytest.approx((4 * 616,))
    assert second["b"].moments.xc == (4.0,)
    assert with_buyers([("20260102", day2)], buyers, 616.0)[1] == 3  # 1000, 5000 and 700
    # The uncapped revenue stays for what the shop earned; the tests take the capped one.
    assert second["b"].revenue == 5700.0 and second["b"].tested_revenue_sample.total == 1232.0


def test_a_look_with_buyers_missing_from_the_records_is_neither_capped_nor_adjusted() -> None:
    buyers = [Buyer("a", (1.0,), (("20260101", 10.0),))]
    look = {"a": VariantCounts("a", 10, 2, 30.0, moments=Moments(10, (1.0,), (1.0,)))}
    ((_, out),) = with_buyers([("20260101", look)], buyers, 5.0)[0]
    assert out["a"].capped_revenue is None and out["a"].moments is not None
    assert out["a"].moments.xc == ()


def test_buyers_records_are_read_from_the_store_format() -> None:
    raw = {
        b"k1": b'{"a":"b","x":"12.5,1.0,3.0,0.0","d":{"20260102":"40","20260101":"15.5"}}',
        b"k2": b'{"a":"holdout","x":"","d":{"20260101":"9"}}',
        b"k3": b"not json",
        b"k4": b'{"x":"1"}',
    }
    assert sorted(parse_buyers(raw), key=lambda b: b.arm) == [
        Buyer("b", (12.5, 1.0, 3.0, 0.0), (("20260101", 15.5), ("20260102", 40.0))),
        Buyer("holdout", None, (("20260101", 9.0),)),
    ]
