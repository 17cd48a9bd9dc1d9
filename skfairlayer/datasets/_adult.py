"""Loader of the UCI Adult dataset shipped with the package (no network access)."""

import csv
import gzip
import io
from importlib import resources

import numpy as np
from sklearn.utils import Bunch

__all__ = ["load_adult"]

_DATA_MODULE = "skfairlayer.datasets"
_FILE = "adult.csv.gz"
_DESCR_FILE = "README.md"
_TARGET = "income-per-year"
_POSITIVE = ">50K"
_FEATURES = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
)
_NUMERIC = (
    "age",
    "fnlwgt",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
)
_MISSING = "?"


def _data_file(name):
    return resources.files(_DATA_MODULE) / "data" / name


def _read_columns():
    """Header and columns (lists of stripped strings) of the shipped CSV."""
    with _data_file(_FILE).open("rb") as raw, gzip.open(raw, "rb") as unzipped:
        text = io.TextIOWrapper(unzipped, encoding="utf-8", newline="")
        rows = csv.reader(text, skipinitialspace=True)
        header = [name.strip() for name in next(rows)]
        columns = [list(col) for col in zip(*(r for r in rows if r), strict=True)]
    return header, [[v.strip() for v in col] for col in columns]


def _check_sensitive(sensitive_features, feature_names):
    if isinstance(sensitive_features, str):
        sensitive_features = (sensitive_features,)
    try:
        names = list(sensitive_features)
    except TypeError:
        names = None
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(
            "sensitive_features must be a column name or a non-empty sequence of column "
            f"names of the Adult features. Got {sensitive_features!r} instead."
        )
    unknown = [n for n in names if n not in feature_names]
    if unknown:
        raise ValueError(
            f"sensitive_features must name columns among {feature_names!r}; {unknown!r} "
            f"are not. Got {sensitive_features!r} instead."
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f"sensitive_features must not repeat a column. Got {sensitive_features!r} instead."
        )
    return names


def _check_bool(value, name):
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool. Got {value!r} instead.")
    return bool(value)


def load_adult(*, as_frame=True, return_X_y=False, sensitive_features=("sex", "race")):
    """Load the UCI Adult ("Census Income") dataset (classification).

    The 32,561 rows of the original training file, shipped with the package
    (gzip-compressed CSV, about 400 kB): no network access is needed. The
    target is 1 when the yearly income exceeds $50,000 (24.1% of rows).

    ``X`` keeps the sensitive columns (``sex`` and ``race`` by default), so
    that an estimator that reads the groups from ``X`` by column name, such
    as ``FairnessLayerClassifier(sensitive_features="sex")``, and the scorers
    of :mod:`skfairlayer.metrics` can find them. Drop them from ``X`` (or let
    the estimator drop them) if the base model must not see them.

    =================   ====================================
    Samples total       32561
    Features            14 (6 numeric, 8 categorical)
    Classes             2 (0: "<=50K", 1: ">50K")
    Missing values      "?" in workclass, occupation, native-country
    =================   ====================================

    Read more in the dataset description, ``load_adult().DESCR``, which also
    states the licence (CC BY 4.0) and the attribution.

    Parameters
    ----------
    as_frame : bool, default=True
        If True, the data is a pandas DataFrame: numeric columns as int64,
        the others as ``category`` dtype with missing values as NaN, and the
        target a Series of int. Requires pandas. If False, ``data`` and
        ``sensitive_features`` are numpy object arrays (numbers as Python
        ints, strings, missing values as ``np.nan``) and ``target`` an int
        array.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch object.
    sensitive_features : str or sequence of str, default=("sex", "race")
        Column(s) of the data returned, as well, as ``sensitive_features``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        data : {DataFrame, ndarray} of shape (32561, 14)
            The features, sensitive columns included.
        target : {Series, ndarray} of shape (32561,)
            1 for income ">50K", 0 for "<=50K".
        frame : DataFrame of shape (32561, 15) or None
            ``data`` and ``target`` together; None when ``as_frame=False``.
        feature_names : list of str
            Names of the columns of ``data``.
        target_names : list of str
            ``["<=50K", ">50K"]``: the meaning of target 0 and 1.
        sensitive_features : {DataFrame, ndarray} of shape (32561, n_sensitive)
            The columns named by ``sensitive_features`` (also in ``data``).
        DESCR : str
            Description of the dataset, with its licence and attribution.

    (data, target) : tuple if ``return_X_y`` is True
        The data and target described above.

    Raises
    ------
    ImportError
        If ``as_frame=True`` and pandas is not installed.

    Notes
    -----
    Source: Becker, B. & Kohavi, R. (1996). Adult [Dataset]. UCI Machine
    Learning Repository, https://doi.org/10.24432/C5XW20, licensed CC BY 4.0.

    Examples
    --------
    >>> from skfairlayer.datasets import load_adult
    >>> adult = load_adult()
    >>> adult.data.shape
    (32561, 14)
    >>> round(float(adult.target.mean()), 3)
    0.241
    >>> list(adult.sensitive_features.columns)
    ['sex', 'race']
    >>> X, y = load_adult(return_X_y=True, as_frame=False)
    >>> X.dtype, y.dtype
    (dtype('O'), dtype('int64'))
    """
    as_frame = _check_bool(as_frame, "as_frame")
    return_X_y = _check_bool(return_X_y, "return_X_y")
    sensitive = _check_sensitive(sensitive_features, list(_FEATURES))
    if as_frame:
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "load_adult(as_frame=True) requires pandas, an optional dependency: "
                'pip install "skfairlayer[pandas]" (or "skfairlayer[demo]" for the demo and '
                "the examples), or pass as_frame=False to get numpy arrays."
            ) from exc

    header, columns = _read_columns()
    by_name = dict(zip(header, columns, strict=True))
    target = np.asarray([v == _POSITIVE for v in by_name.pop(_TARGET)], dtype=np.int64)
    feature_names = list(by_name)
    if tuple(feature_names) != _FEATURES:  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"Unexpected columns {feature_names!r} in the shipped Adult file.")
    descr = _data_file(_DESCR_FILE).read_text(encoding="utf-8")

    if as_frame:
        data = pd.DataFrame(
            {
                name: (
                    np.asarray(values, dtype=np.int64)
                    if name in _NUMERIC
                    else pd.Categorical([None if v == _MISSING else v for v in values])
                )
                for name, values in by_name.items()
            }
        )
        y = pd.Series(target, name=_TARGET)
        frame = pd.concat([data, y], axis=1)
        sens = data[sensitive].copy()
    else:
        data = np.empty((target.size, len(feature_names)), dtype=object)
        for j, (name, values) in enumerate(by_name.items()):
            if name in _NUMERIC:
                data[:, j] = [int(v) for v in values]
            else:
                data[:, j] = [np.nan if v == _MISSING else v for v in values]
        y = target
        frame = None
        sens = data[:, [feature_names.index(n) for n in sensitive]].copy()

    if return_X_y:
        return data, y
    return Bunch(
        data=data,
        target=y,
        frame=frame,
        feature_names=feature_names,
        target_names=["<=50K", _POSITIVE],
        sensitive_features=sens,
        DESCR=descr,
    )
