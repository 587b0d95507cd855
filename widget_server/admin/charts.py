"""Line charts drawn on the server: the geometry of an inline SVG (no script, no external asset),
with a title and a description that say in words what the lines show."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..offers.assign import HOLDOUT

WIDTH, HEIGHT = 520, 240
LEFT, RIGHT, TOP, BOTTOM = 60, 14, 14, 34
# Distinct in hue and in lightness, each with a dash pattern, so lines differ without colour too.
STYLES = (
    ("#1f5fbf", ""),
    ("#c2410c", "8 4"),
    ("#11703c", "2 3"),
    ("#7e22ce", "10 3 2 3"),
    ("#9a3412", "4 4"),
)
CONTROL_STYLE = ("#5b6474", "6 3")
MAX_DOTS = 45


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    color: str
    dash: str
    points: str  # the SVG polyline "x,y x,y ..."
    dots: tuple[tuple[float, float], ...]
    last: str  # the last value, formatted


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str
    anchor: str = "middle"  # SVG text-anchor: the outer day labels stay inside the frame


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    desc: str
    lines: tuple[Line, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def nice_step(span: float, ticks: int = 4) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``ticks`` intervals."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)


def line_chart(
    chart_id: str,
    title: str,
    days: Sequence[str],
    series: Mapping[str, Sequence[float]],
    label: Callable[[float], str],
) -> Chart:
    """One line per arm over ``days`` (``YYYYMMDD``); ``series`` values are in day order."""
    highest = max((v for values in series.values() for v in values), default=0.0)
    step = nice_step(highest)
    top_value = max(step, math.ceil(highest / step) * step) if highest > 0 else step
    y_ticks = tuple(
        Tick(_y(i * step, top_value), label(i * step)) for i in range(round(top_value / step) + 1)
    )
    count = len(days)
    every = max(1, math.ceil(count / 6))
    shown = [i for i in range(count) if i % every == 0 or i == count - 1]
    if len(shown) > 1 and shown[-1] - shown[-2] < every / 2:
        shown.pop(-2)  # the last day's label would overlap the one before
    x_ticks = tuple(
        Tick(_x(i, count), f"{days[i][4:6]}-{days[i][6:8]}", _anchor(i, count)) for i in shown
    )
    lines = []
    others = itertools.cycle(STYLES)
    for name, values in series.items():
        color, dash = CONTROL_STYLE if name == HOLDOUT else next(others)
        coords = [(_x(i, count), _y(v, top_value)) for i, v in enumerate(values)]
        lines.append(
            Line(
                name,
                color,
                dash,
                " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
                tuple(coords) if count <= MAX_DOTS else tuple(coords[-1:]),
                label(values[-1]) if values else "—",
            )
        )
    return Chart(chart_id, title, _describe(title, days, lines), tuple(lines), y_ticks, x_ticks)


def _anchor(index: int, count: int) -> str:
    if count <= 1:
        return "middle"
    return "start" if index == 0 else "end" if index == count - 1 else "middle"


def _x(index: int, count: int) -> float:
    width = WIDTH - RIGHT - LEFT
    return LEFT + (width / 2 if count <= 1 else index * width / (count - 1))


def _y(value: float, top_value: float) -> float:
    height = HEIGHT - BOTTOM - TOP
    return TOP + height * (1 - (value / top_value if top_value else 0.0))


def _describe(title: str, days: Sequence[str], lines: Sequence[Line]) -> str:
    if not days:
        return f"{title}: no data yet."
    first, last = _day(days[0]), _day(days[-1])
    span = f"on {first}" if first == last else f"from {first} to {last}"
    ends = "; ".join(f"{line.name} {line.last}" for line in lines)
    return f"{title}, cumulative by day {span}. On the last day: {ends}."


def _day(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:8]}"
