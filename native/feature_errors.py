"""Errors of the feature transform: bad documents (spec, profile) and bad batches.

Two families, both ``ValueError``:

* ``DocumentError`` and its subclasses: a feature spec or reference profile that
  does not validate, a frame that cannot be fitted, a spec and profile that do not
  fit together. They carry ``column`` and ``field`` (a dotted JSON path such as
  ``standardize.std`` or ``vocabulary.values[3]``) and name both in the message.
* ``ColumnError`` and its subclasses: a batch handed to ``transform`` that is not
  what the plan expects (missing, unknown, wrong type, wrong row count, malformed or
  over-long BYTES). The server maps every ``ColumnError`` to INVALID_ARGUMENT. The
  messages are built from the constructor's arguments only, so the Cython kernel
  raises exactly the twin's errors by passing the same arguments.
"""

from __future__ import annotations


class DocumentError(ValueError):
    """A spec/profile document, or a fit, is wrong at ``column`` / ``field``."""

    kind = "document"

    def __init__(self, message: str, *, column: str | None = None, field: str | None = None):
        self.column = column
        self.field = field
        self.detail = message
        where = []
        if column is not None:
            where.append(f"column {column!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = f"{self.kind}: " + (", ".join(where) + ": " if where else "")
        super().__init__(prefix + message)


class FeatureSpecError(DocumentError):
    """A feature spec does not validate (unknown key, wrong type, bad value...)."""

    kind = "feature spec"


class ReferenceProfileError(DocumentError):
    """A reference profile does not validate."""

    kind = "reference profile"


class PlanError(DocumentError):
    """A spec and profile cannot be compiled together (unfitted, mismatched)."""

    kind = "transform plan"


class FitError(DocumentError):
    """The training frame cannot be fitted (missing column, no usable values...)."""

    kind = "fit"


class ColumnError(ValueError):
    """A batch column is not what the plan expects; ``column`` names it."""

    def __init__(self, column: str, message: str):
        self.column = column
        super().__init__(message)


class MissingColumn(ColumnError):
    """A column of the spec is absent from the batch."""

    def __init__(self, column: str):
        super().__init__(column, f"missing column {column!r}: the feature spec requires it")


class UnknownColumn(ColumnError):
    """The batch holds a column the spec does not declare."""

    def __init__(self, column: str):
        super().__init__(column, f"unknown column {column!r}: the feature spec has no such column")


class ColumnTypeError(ColumnError):
    """A column has the wrong container or dtype (numeric: float32; categorical: BYTES)."""

    def __init__(self, column: str, expected: str, got: str):
        self.expected = expected
        self.got = got
        super().__init__(column, f"column {column!r} must be {expected}, got {got}")


class RowCountMismatch(ColumnError):
    """A column holds a different number of rows than the batch."""

    def __init__(self, column: str, rows: int, got: str):
        self.rows = rows
        self.got = got
        super().__init__(column, f"column {column!r} holds {got}, but the batch has {rows} rows")


class MalformedBytes(ColumnError):
    """A BYTES buffer is cut short: a truncated length prefix or a length past the end."""

    def __init__(self, column: str, element: int, detail: str):
        self.element = element
        super().__init__(column, f"column {column!r}: BYTES element {element} {detail}")


class ValueTooLong(ColumnError):
    """A categorical value is longer than the column's ``max_bytes``."""

    def __init__(self, column: str, element: int, length: int, max_bytes: int):
        self.element = element
        self.length = length
        self.max_bytes = max_bytes
        super().__init__(
            column,
            f"column {column!r}: element {element} is {length} bytes, "
            f"longer than the spec's max_bytes {max_bytes}",
        )
