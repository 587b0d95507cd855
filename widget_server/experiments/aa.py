"""The A/A check: many simulated experiments whose arms are the same, judged by the report's own
rules, to show how often each rule calls a difference that is not there.

Each run draws two identical arms day by day (conversions at ``rate``, log-normal order values)
and asks :func:`~widget_server.experiments.stats.experiment_report` for the verdict after the
last day, with every earlier day as a look: the always-valid rule as the admin would read it
every day, the fixed-horizon rule at its planned size (the last day). For comparison it also
counts the runs where the one-look p-value, checked every day, would have dipped below alpha at
some look (what peeking does).
"""

from __future__ import annotations

from dataclasses import dataclass

from .stats import ExperimentSettings, VariantCounts, experiment_report, two_proportion_z_test

SPLIT = {"a": 0.5, "b": 0.5}
CALLED = ("winner", "worse")  # a difference called, either way


@dataclass(frozen=True, slots=True)
class AACheck:
    runs: int
    days: int
    per_day: int  # exposures per arm and day
    rate: float
    seed: int
    sequential_called: int  # runs where the always-valid rule called a difference
    fixed_called: int  # ... the fixed-horizon rule, decided once at the end
    peeking_called: int  # ... the one-look p-value, had it been checked every day
    alpha: float

    def describe(self) -> str:
        def share(n: int) -> str:
            return f"{n} ({n / self.runs:.1%})"

        return (
            f"A/A check: {self.runs} runs of {self.days} days, {self.per_day:,} exposures per arm"
            f" a day at {self.rate:.1%} (seed {self.seed}). Differences called at alpha"
            f" {self.alpha:g}: always-valid rule, read every day, {share(self.sequential_called)};"
            f" fixed horizon at {self.per_day * self.days:,} per arm"
            f" {share(self.fixed_called)}; the one-look p-value checked every day would have"
            f" {share(self.peeking_called)}."
        )


def aa_check(
    runs: int = 200,
    days: int = 28,
    per_day: int = 300,
    rate: float = 0.05,
    seed: int = 1,
    settings: ExperimentSettings | None = None,
) -> AACheck:
    import numpy as np

    settings = settings or ExperimentSettings()
    if runs < 1 or days < 1 or per_day < 1 or not 0 < rate < 1:
        raise ValueError("runs, days and per-day must be positive, the rate between 0 and 1")
    rng = np.random.default_rng(seed)
    sequential = fixed = peeking = 0
    for _ in range(runs):
        looks: list[dict[str, VariantCounts]] = []
        running = {arm: VariantCounts(arm) for arm in SPLIT}
        for _ in range(days):
            for arm in SPLIT:
                orders = int(rng.binomial(per_day, rate))
                values = rng.lognormal(3.5, 0.8, orders)
                today = VariantCounts(arm, per_day, orders, float(values.sum()),
                                      float((values**2).sum()))  # fmt: skip
                running[arm] = running[arm].plus(today)
            looks.append(dict(running))
        last, history = looks[-1], looks[:-1]
        always = experiment_report("aa", last, "a", SPLIT, settings, history=history)
        once = experiment_report(
            "aa", last, "a", SPLIT, settings, history=history, rule="fixed_horizon",
            planned_exposures=per_day * days,
        )  # fmt: skip
        sequential += always.verdict in CALLED
        fixed += once.verdict in CALLED
        peeking += any(
            two_proportion_z_test(look["a"].proportion, look["b"].proportion)[1] <= settings.alpha
            for look in looks
            if min(look["a"].conversions, look["b"].conversions) >= settings.min_conversions
        )
    return AACheck(runs, days, per_day, rate, seed, sequential, fixed, peeking, settings.alpha)
