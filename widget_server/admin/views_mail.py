"""Placeholder module: routes are added here."""

from __future__ import annotations

from starlette.routing import BaseRoute

from .guard import Guard


def routes(guard: Guard) -> list[BaseRoute]:
    return []
