"""Strict JSON reading for Osprey's documents (feature spec, reference profile).

``parse`` refuses what ``json.loads`` lets through silently (duplicate keys, NaN and
Infinity tokens); ``Fields`` reads one JSON object, checking keys and types, and
raises the document's error class naming the column and the dotted field path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, NoReturn

from .feature_errors import DocumentError


def parse(text: str | bytes, error: type[DocumentError]) -> Any:
    """Parse strict JSON; duplicate keys, NaN and ±Infinity are refused."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise error(f"duplicate key {key!r} in a JSON object")
            out[key] = value
        return out

    def constant(token: str) -> NoReturn:
        raise error(f"{token} is not JSON; numbers must be finite")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise error(f"not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def dump(document: object) -> str:
    """Serialise as compact strict JSON (no NaN/Infinity), keys in the order given."""
    return json.dumps(document, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def describe(value: object) -> str:
    """A short JSON-ish name of ``value``'s type for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Fields:
    """One JSON object under ``prefix``; typed getters raise ``error`` naming the field."""

    def __init__(
        self,
        value: object,
        *,
        error: type[DocumentError],
        column: str | None,
        prefix: str,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
    ):
        self.error = error
        self.column = column
        self.prefix = prefix
        if not isinstance(value, dict):
            self.fail(prefix or None, f"must be an object, got {describe(value)}")
        required, optional = tuple(required), tuple(optional)
        unknown = [k for k in value if k not in required and k not in optional]
        if unknown:
            allowed = ", ".join(sorted((*required, *optional)))
            self.fail(self.path(unknown[0]), f"unknown key (allowed: {allowed})")
        for key in required:
            if key not in value:
                self.fail(self.path(key), "is required")
        self.value: dict[str, Any] = value

    def path(self, key: str) -> str:
        """The dotted path of ``key`` inside this object."""
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, field: str | None, message: str) -> NoReturn:
        """Raise this document's error at ``field``."""
        raise self.error(message, column=self.column, field=field)

    def has(self, key: str) -> bool:
        """Is ``key`` present and not null?"""
        return self.value.get(key) is not None

    def raw(self, key: str) -> Any:
        """The value of ``key`` unchecked (None when absent)."""
        return self.value.get(key)

    def string(self, key: str, default: str | None = None, choices: Iterable[str] = ()) -> str:
        """A string, optionally one of ``choices``."""
        value = self.value.get(key, default)
        if not isinstance(value, str):
            self.fail(self.path(key), f"must be a string, got {describe(value)}")
        options = tuple(choices)
        if options and value not in options:
            self.fail(self.path(key), f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean."""
        value = self.value.get(key, default)
        if not isinstance(value, bool):
            self.fail(self.path(key), f"must be true or false, got {describe(value)}")
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int = 0,
                maximum: int | None = None) -> int | None:
        """An integer in [minimum, maximum], or ``default`` when absent/null."""
        value = self.value.get(key)
        if value is None:
            return default
        return check_integer(value, self, self.path(key), minimum, maximum)

    def number(self, key: str) -> float | None:
        """A finite number, or None when absent/null."""
        value = self.value.get(key)
        if value is None:
            return None
        return check_number(value, self, self.path(key))

    def numbers(self, key: str) -> list[float] | None:
        """An array of finite numbers, or None when absent/null."""
        value = self.value.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(self.path(key), f"must be an array of numbers, got {describe(value)}")
        return [check_number(v, self, f"{self.path(key)}[{i}]") for i, v in enumerate(value)]

    def integers(self, key: str, *, minimum: int = 0) -> list[int]:
        """A required array of integers >= ``minimum``."""
        value = self.value.get(key)
        if not isinstance(value, list):
            self.fail(self.path(key), f"must be an array of integers, got {describe(value)}")
        path = self.path(key)
        return [
            check_integer(v, self, f"{path}[{i}]", minimum, None)
            for i, v in enumerate(value)
        ]

    def strings(self, key: str) -> list[str] | None:
        """An array of strings, or None when absent/null."""
        value = self.value.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(self.path(key), f"must be an array of strings, got {describe(value)}")
        for i, v in enumerate(value):
            if not isinstance(v, str):
                self.fail(f"{self.path(key)}[{i}]", f"must be a string, got {describe(v)}")
        return list(value)

    def child(self, key: str, *, required: Iterable[str] = (),
              optional: Iterable[str] = ()) -> Fields:
        """The object at ``key``, with its own allowed keys."""
        return Fields(self.value.get(key), error=self.error, column=self.column,
                      prefix=self.path(key), required=required, optional=optional)


def check_number(value: object, where: Fields, field: str) -> float:
    """``value`` as a finite float (JSON integers accepted, booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        where.fail(field, f"must be a number, got {describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        where.fail(field, f"must be finite, got {value}")
    return number


def check_integer(value: object, where: Fields, field: str, minimum: int,
                  maximum: int | None) -> int:
    """``value`` as an integer in [minimum, maximum] (booleans and 1.0 refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        where.fail(field, f"must be an integer, got {describe(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        where.fail(field, f"must be >= {minimum}{upper}, got {value}")
    return value
