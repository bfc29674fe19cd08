"""Reads one mapping of params.yaml, checking each key's type and range as it goes.

Problems are appended to a shared list (one line each, naming the key) so that
`cnn_factory.config` can report all of them at once.
"""

from __future__ import annotations

import difflib
from typing import Any

_MISSING = object()


class Section:
    """Reads one mapping of params, remembering where it is and which keys were used."""

    def __init__(self, value: Any, where: str, problems: list[str]):
        self.where = where
        self.problems = problems
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping of keys, got {show(value)}")
            value = {}
        self.values = value
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self.used.add(name)
        if name in self.values:
            return self.values[name]
        if default is _MISSING:
            self.problems.append(f"{self.key(name)}: missing; add it to params.yaml")
        return None if default is _MISSING else default

    def int(self, name: str, default: Any = _MISSING, minimum: int = 1) -> int:
        value = self.raw(name, default)
        if value is None and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected an integer, got {show(value)}")
            return minimum
        if value < minimum:
            self.problems.append(f"{self.key(name)}: expected an integer >= {minimum}, got {value}")
        return value

    def float(self, name: str, default: Any = _MISSING, minimum: float = 0.0, positive=False) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected a number, got {show(value)}")
            return 1.0
        if value < minimum or (positive and value <= 0):
            bound = "> 0" if positive else f">= {minimum}"
            self.problems.append(f"{self.key(name)}: expected a number {bound}, got {value}")
        return float(value)

    def str(self, name: str, default: Any = _MISSING, choices: tuple[str, ...] = ()) -> str:
        value = self.raw(name, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected a non-empty string, got {show(value)}")
            return ""
        if choices and value not in choices:
            self.problems.append(f"{self.key(name)}: unknown value {value!r}; expected one of {', '.join(choices)}")
        return value

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            if value is not None:
                self.problems.append(f"{self.key(name)}: expected true or false, got {show(value)}")
            return False
        return value

    def size(self, name: str, default: Any = _MISSING) -> tuple[int, int]:
        value = self.raw(name, default)
        if (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            return (value[0], value[1])
        if value is not None:
            self.problems.append(
                f"{self.key(name)}: expected [height, width] as two positive integers, got {show(value)}"
            )
        return (1, 1)

    def section(self, name: str) -> Section:
        return Section(self.raw(name), self.key(name), self.problems)

    def done(self) -> None:
        """Reports keys that no reader asked for, with the nearest valid key."""
        for name in self.values:
            if name in self.used:
                continue
            close = difflib.get_close_matches(str(name), sorted(self.used), n=1)
            hint = f"; did you mean {self.key(close[0])!r}?" if close else ""
            valid = ", ".join(sorted(self.used))
            self.problems.append(f"{self.key(name)}: unknown key{hint} (valid here: {valid})")


def show(value: Any) -> str:
    return "nothing" if value is None else f"{value!r} ({type(value).__name__})"
