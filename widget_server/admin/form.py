"""A submitted admin form as plain values (pure: parsing a form needs no web framework)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Form:
    """A submitted form: every value of every field, and uploaded files."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[-1] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for name, values in self.fields.items() for value in values]
