"""Group input, once: where the sensitive features come from and how they become codes.

:class:`SensitiveColumns` reads the sensitive features (column names or
positions of ``X``, a callable, or the ``sensitive_features=`` keyword) and
hands the base estimator its input. :class:`GroupEncoder` learns the group
labels at fit and encodes later batches by lookup against them (no sort).
A :class:`Grouping` is one partition of the rows: the intersectional groups,
or one attribute's groups for marginal parity. The estimators, the scorers
and the displays all use these three.
"""

from dataclasses import dataclass
from numbers import Integral

import numpy as np
import scipy.sparse as sp

from .exceptions import UnseenGroupError, format_labels

__all__ = [
    "GroupEncoder", "Grouping", "SensitiveColumns", "encode", "label_index", "resolve",
    "unseen_groups_error",
]

_LOOKUP_RANGE = 1 << 16  # integer labels spanning at most this many values use a table
#: Bytes of an integer column beyond which its range is read block by block (each block's
#: minimum and maximum in one read from memory); smaller columns stay in cache anyway.
_BLOCKED_RANGE_BYTES = 1 << 24
_RANGE_BLOCK = 1 << 16
#: Rows of the strided sample in which every label of a range is first looked for.
_PRESENCE_SAMPLE = 4096


@dataclass(frozen=True)
class Grouping:
    """One partition of the rows: ``codes`` in ``[0, n_groups)`` and a name for messages."""

    codes: np.ndarray
    n_groups: int
    name: str | None = None


class SensitiveColumns:
    """Where the sensitive features come from, and what the base estimator sees.

    Parameters
    ----------
    spec : str, int, list of those, callable or None
        Column names (a DataFrame, including the ``<transformer>__<name>``
        columns of a :class:`~sklearn.compose.ColumnTransformer` with pandas
        output), column positions (any 2-D input), a callable ``f(X) ->
        groups``, or ``None`` for groups passed as the ``sensitive_features=``
        keyword.
    keep : bool, default=True
        Whether the base estimator also sees the sensitive columns.
    owner : str, default="FairnessLayerClassifier"
        Name used in messages.
    """

    def __init__(self, spec, *, keep=True, owner="FairnessLayerClassifier"):
        self.spec = spec
        self.keep = keep
        self.owner = owner

    @property
    def reads_X(self):
        """Whether the groups come from columns of ``X`` (names or positions)."""
        return self.spec is not None and not callable(self.spec)

    @property
    def columns(self):
        spec = self.spec
        return list(spec) if isinstance(spec, list | tuple) else [spec]

    def split(self, X, sensitive_features=None):
        """Return ``(X for the base, raw groups)``; the raw groups may be a deferred callable.

        A callable ``spec`` is evaluated by :func:`resolve` once the base has
        validated ``X``.
        """
        if callable(self.spec):
            self._check_once(sensitive_features, "derives them from X with a callable")
            return X, _Deferred(self.spec, X)
        if self.spec is None:
            if sensitive_features is None:
                raise ValueError(
                    f"{self.owner} needs the sensitive features: pass "
                    "sensitive_features=<array of groups> to this method, or set the "
                    "constructor parameter sensitive_features=<column name(s) or position(s) "
                    "of X>."
                )
            return X, sensitive_features
        self._check_once(
            sensitive_features, f"reads them from column(s) {self.spec!r} of X"
        )
        if hasattr(X, "iloc") and hasattr(X, "columns"):
            return self._split_frame(X)
        return self._split_array(X)

    def _check_once(self, sensitive_features, how):
        if sensitive_features is not None:
            raise ValueError(
                f"The sensitive features are given twice: the constructor {how}, and "
                "sensitive_features= was also passed. Use one of the two."
            )

    def _split_frame(self, X):
        names = list(X.columns)
        columns = self.columns
        if all(isinstance(c, str) for c in columns):
            idx = [self._find_name(c, names) for c in columns]
        else:
            idx = self._positions(columns, len(names))
        groups = X.iloc[:, idx]
        if self.keep:
            return X, groups
        keep = [j for j in range(len(names)) if j not in set(idx)]
        return X.iloc[:, keep], groups

    def _find_name(self, name, names):
        if name in names:
            return names.index(name)
        # A ColumnTransformer with pandas output prefixes passed-through columns.
        suffixed = [j for j, c in enumerate(names) if isinstance(c, str) and c.endswith("__" + name)]
        if len(suffixed) == 1:
            return suffixed[0]
        encoded = [c for c in names if isinstance(c, str) and f"__{name}_" in c]
        hint = (
            f" It looks encoded into {encoded[:4]!r}: pass the original column through too "
            "(e.g. remainder='passthrough', or a 'passthrough' transformer on it), or pass the "
            "groups as sensitive_features=."
            if encoded
            else ""
        )
        raise ValueError(
            f"sensitive_features column {name!r} not found in X, whose columns are "
            f"{names[:20]!r}{' ...' if len(names) > 20 else ''}.{hint}"
        )

    def _split_array(self, X):
        columns = self.columns
        if not all(isinstance(c, Integral) and not isinstance(c, bool) for c in columns):
            raise ValueError(
                f"sensitive_features={self.spec!r} names columns, but X reached the layer "
                "without column names (an array: an earlier Pipeline step converted the "
                "DataFrame). Give that step pandas output "
                "(pipeline.set_output(transform='pandas')), give column positions instead, or "
                "pass the groups as sensitive_features= (with metadata routing in a Pipeline)."
            )
        if sp.issparse(X):
            idx = self._positions(columns, X.shape[1])
            groups = X[:, idx].toarray()
            if self.keep:
                return X, groups
            keep = [j for j in range(X.shape[1]) if j not in set(idx)]
            return X[:, keep], groups
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
        if arr.ndim != 2:
            raise ValueError(
                f"Expected a 2D array for X, got an array of shape {arr.shape} instead. "
                "Reshape your data with array.reshape(-1, 1) for a single feature."
            )
        idx = self._positions(columns, arr.shape[1])
        groups = arr[:, idx[0]] if len(idx) == 1 else arr[:, idx]
        return (arr if self.keep else np.delete(arr, idx, axis=1)), groups

    def _positions(self, columns, n_columns):
        if not all(isinstance(c, Integral) and not isinstance(c, bool) for c in columns):
            raise ValueError(
                "sensitive_features must be all column names or all column positions. "
                f"Got {self.spec!r} instead."
            )
        bad = [int(c) for c in columns if not -n_columns <= c < n_columns]
        if bad:
            raise ValueError(
                f"sensitive_features position(s) {bad!r} out of range for X with {n_columns} "
                "columns."
            )
        out = []
        for c in columns:
            j = int(c) % n_columns
            if j not in out:
                out.append(j)
        return out


class _Deferred:
    """Groups computed by a user callable, evaluated once the base has validated X."""

    def __init__(self, func, X):
        self.func, self.X = func, X


def resolve(raw_groups):
    """Evaluate deferred (callable) groups; other inputs pass through."""
    return raw_groups.func(raw_groups.X) if isinstance(raw_groups, _Deferred) else raw_groups


def as_columns(sensitive_features, n_samples=None):
    """The sensitive features as a list of 1-D arrays, one per attribute."""
    sf = sensitive_features
    if hasattr(sf, "iloc"):  # pandas Series or DataFrame
        cols = [sf] if getattr(sf, "ndim", 1) == 1 else [sf.iloc[:, j] for j in range(sf.shape[1])]
        cols = [_from_pandas(c) for c in cols]
    elif isinstance(sf, dict):
        cols = [np.asarray(v) for v in sf.values()]
    else:
        arr = np.asarray(sf)
        if arr.ndim == 0:
            raise ValueError(
                "sensitive_features must be an array-like of shape (n_samples,) or "
                f"(n_samples, n_attributes). Got a scalar {sensitive_features!r} instead."
            )
        if arr.ndim > 2:
            raise ValueError(
                "sensitive_features must have 1 or 2 dimensions. "
                f"Got an array of shape {arr.shape} instead."
            )
        cols = [arr] if arr.ndim == 1 else [arr[:, j] for j in range(arr.shape[1])]
    if n_samples is not None and cols[0].shape[0] != n_samples:
        raise ValueError(
            f"sensitive_features has {cols[0].shape[0]} rows but the data has {n_samples}; "
            "they must describe the same samples, in the same order."
        )
    return cols


def _from_pandas(column):
    values = column.to_numpy()
    if values.dtype.kind == "O" and str(column.dtype) == "category":
        values = np.asarray(column.astype(object))
    return values


def _check_missing(column):
    if column.dtype.kind == "f" and np.isnan(column).any():
        raise ValueError(
            "sensitive_features contains NaN. Every row needs a group: fill or drop the "
            "missing values (e.g. with a separate 'unknown' category) first."
        )
    if column.dtype.kind == "O" and any(
        v is None or (isinstance(v, float) and v != v) for v in column
    ):
        raise ValueError(
            "sensitive_features contains missing values (None/NaN). Every row needs a "
            "group: fill them (e.g. with a separate 'unknown' category) first."
        )


def _integer_range(column):
    """``(min, max)`` of a 1-D integer column, as Python ints."""
    if column.nbytes <= _BLOCKED_RANGE_BYTES or column.ndim != 1:
        return int(column.min()), int(column.max())
    lows, highs = [], []
    for start in range(0, column.shape[0], _RANGE_BLOCK):
        block = column[start : start + _RANGE_BLOCK]
        lows.append(block.min())
        highs.append(block.max())
    return int(min(lows)), int(max(highs))


def _present(codes, size):
    """The values in ``[0, size)`` that ``codes`` holds, sorted. A strided sample is read
    first: when it holds every value, the whole column need not be counted."""
    step = codes.shape[0] // _PRESENCE_SAMPLE
    if step > 1 and np.count_nonzero(np.bincount(codes[::step], minlength=size)) == size:
        return np.arange(size)
    return np.flatnonzero(np.bincount(codes, minlength=size))


def _unique(column):
    """Sorted unique labels and codes of one column (fit time only)."""
    _check_missing(column)
    if column.dtype.kind in "biu" and column.size:
        lo, hi = _integer_range(column)
        if hi - lo < _LOOKUP_RANGE:
            if lo == 0 and column.dtype == np.intp:  # codes already: no copy
                shifted = column
            else:
                shifted = (column - lo).astype(np.intp, copy=False)
            if hi - lo <= 1:  # min and max are both present: no counting needed
                return np.arange(lo, hi + 1).astype(column.dtype), shifted
            present = _present(shifted, hi - lo + 1)
            if present.size == hi - lo + 1:
                return (present + lo).astype(column.dtype), shifted
            lookup = np.full(hi - lo + 1, -1, dtype=np.intp)
            lookup[present] = np.arange(present.size)
            return (present + lo).astype(column.dtype), lookup[shifted]
    if column.dtype.kind == "O" and all(isinstance(v, str) for v in column[:1000]):
        column = column.astype(str)
    labels, codes = np.unique(column, return_inverse=True)
    return labels, codes.astype(np.intp, copy=False).reshape(-1)


def label_index(labels):
    """``{label: code}`` for scalar labels (None for tuples or unhashable labels).

    With one array of labels per grouping (several groupings): a list of
    those, or None when one grouping has no index.
    """
    if not isinstance(labels, np.ndarray):
        indexes = [label_index(np.asarray(g)) for g in labels]
        return None if any(i is None for i in indexes) else indexes
    values = labels.tolist()
    if any(isinstance(v, tuple | list) for v in values):  # several attributes
        return None
    try:
        index = {v: i for i, v in enumerate(values)}
    except TypeError:
        return None
    return index if len(index) == len(values) else None


class _ColumnLookup:
    """Codes of one attribute's values against its fitted (sorted) labels, by lookup."""

    def __init__(self, labels):
        self.labels = labels
        self.table, self.identity = None, False
        values = labels.tolist()
        integral = labels.dtype.kind in "biuf" and all(
            not isinstance(v, bool) and float(v).is_integer() for v in values
        )
        if integral and values and values[-1] - values[0] < _LOOKUP_RANGE:
            self.lo, self.hi = int(values[0]), int(values[-1])
            self.table = np.full(self.hi - self.lo + 1, -1, dtype=np.intp)
            self.table[np.asarray(values, dtype=np.int64) - self.lo] = np.arange(len(values))
            self.identity = self.lo == 0 and self.table.size == len(values)  # codes = values
        self.index = label_index(labels) or {}  # unhashable or tuple labels: no index

    def codes(self, column):
        """Codes in ``[0, n_labels)``, ``-1`` for values not among the labels."""
        if self.table is not None and column.dtype.kind in "biuf" and column.size:
            ints = _integers_within(np.ascontiguousarray(column), self.lo, self.hi)
            if ints is not None:
                if self.identity:
                    return ints
                if self.lo:
                    ints -= self.lo
                return self.table.take(ints)
        if column.dtype.kind in "biufUS" and self.labels.dtype.kind in "biufUS" and (
            (column.dtype.kind in "US") == (self.labels.dtype.kind in "US")
        ):
            pos = np.searchsorted(self.labels, column).clip(0, len(self.labels) - 1)
            return np.where(self.labels[pos] == column, pos, -1)
        try:
            return np.fromiter(
                (self.index.get(v, -1) for v in _plain(column.tolist())),
                dtype=np.intp, count=column.shape[0],
            )
        except TypeError:  # unhashable values
            return np.full(column.shape[0], -1, dtype=np.intp)


def _integers_within(column, lo, hi):
    """A numeric column as ``intp`` when every value is an integer in ``[lo, hi]``, else None.

    Block by block: each block is checked and converted while in cache, and no temporary of
    the column's size is written (their fresh pages cost more than the checks).
    """
    ints = np.empty(column.shape[0], dtype=np.intp)
    integral = column.dtype.kind in "biu"
    for start in range(0, column.shape[0], _RANGE_BLOCK):
        block, out = column[start : start + _RANGE_BLOCK], ints[start : start + _RANGE_BLOCK]
        if not (block.min() >= lo and block.max() <= hi):  # False for NaN
            return None
        np.copyto(out, block, casting="unsafe")  # truncates floats
        if not integral and not np.array_equal(out, block):
            return None
    return ints


def _plain(values):
    return [v.item() if isinstance(v, np.generic) else v for v in values]


class GroupEncoder:
    """Learns group labels at fit; encodes later batches against them by lookup.

    Parameters
    ----------
    mode : {"intersectional", "marginal"}, default="intersectional"
        With several attributes: every combination of values is a group, or
        each attribute is its own grouping.
    """

    def __init__(self, mode="intersectional"):
        self.mode = mode

    def fit_transform(self, sensitive_features, n_samples=None):
        """Learn the labels of ``sensitive_features`` and return its groupings."""
        columns = as_columns(sensitive_features, n_samples)
        parts = [_unique(col) for col in columns]
        self.n_attributes_ = len(columns)
        self._lookups = [_ColumnLookup(labels) for labels, _ in parts]
        if self.mode == "marginal":
            self.labels_ = [labels for labels, _ in parts]
            return self._marginal([codes for _, codes in parts])
        if len(parts) == 1:
            self.labels_ = parts[0][0]
            self._combos = None
            return [Grouping(parts[0][1], len(self.labels_))]
        combined = self._combine([codes for _, codes in parts])
        present, codes = np.unique(combined, return_inverse=True)
        self._combos = present
        self.labels_ = np.empty(present.size, dtype=object)
        self.labels_[:] = [self._combo_label(key) for key in present.tolist()]
        return [Grouping(codes.astype(np.intp, copy=False), present.size)]

    def transform(self, sensitive_features, n_samples=None):
        """Groupings of a batch, encoded against the fitted labels.

        Raises
        ------
        UnseenGroupError
            If a row's group was not seen at fit.
        """
        columns = as_columns(sensitive_features, n_samples)
        if len(columns) != self.n_attributes_:
            raise ValueError(
                f"sensitive_features has {len(columns)} attribute(s) but {self.n_attributes_} "
                "were seen during fit; pass the same sensitive columns."
            )
        codes = [lookup.codes(col) for lookup, col in zip(self._lookups, columns, strict=True)]
        for col, c, lookup in zip(columns, codes, self._lookups, strict=True):
            if c.size and c.min() < 0:
                _check_missing(col)
                self._unseen(_plain(np.unique(col[c < 0]).tolist()), lookup.labels)
        if self.mode == "marginal":
            return self._marginal(codes)
        if self._combos is None:
            return [Grouping(codes[0], len(self.labels_))]
        combined = self._combine(codes)
        pos = np.searchsorted(self._combos, combined).clip(0, self._combos.size - 1)
        found = self._combos[pos] == combined
        if not found.all():
            self._unseen(
                [self._combo_label(k) for k in np.unique(combined[~found]).tolist()],
                self.labels_,
            )
        return [Grouping(pos.astype(np.intp, copy=False), len(self.labels_))]

    def _marginal(self, codes):
        names = [f"attribute {j}" for j in range(len(codes))] if len(codes) > 1 else [None]
        return [
            Grouping(c, len(lab), name)
            for c, lab, name in zip(codes, self.labels_, names, strict=True)
        ]

    def _combine(self, codes):
        combined = np.zeros(codes[0].shape[0], dtype=np.int64)
        for c, lookup in zip(codes, self._lookups, strict=True):
            combined *= len(lookup.labels)
            combined += c
        return combined

    def _combo_label(self, key):
        idx = []
        for lookup in reversed(self._lookups):
            key, rem = divmod(key, len(lookup.labels))
            idx.append(rem)
        return tuple(
            _plain([lookup.labels[i]])[0]
            for lookup, i in zip(self._lookups, reversed(idx), strict=True)
        )

    def _unseen(self, unseen, known):
        raise unseen_groups_error(unseen, known)

    def index(self):
        """``{label: code}`` for one attribute's scalar labels (None otherwise): a fast path."""
        if self.n_attributes_ != 1:
            return None
        return dict(self._lookups[0].index) or None


def unseen_groups_error(unseen, known):
    """The :class:`~skfairlayer.exceptions.UnseenGroupError` for labels not seen at fit."""
    more = " ..." if len(known) > 20 else ""
    return UnseenGroupError(
        f"Sensitive group(s) {format_labels(unseen[:10])} were not seen during fit (known "
        f"groups: {format_labels(known[:20])}{more}). Refit with data that contains them, or "
        "map them to a known group."
    )


def encode(sensitive_features, mode="intersectional", n_samples=None):
    """Groupings and labels of one batch on its own (no fitted labels): ``(groupings, labels)``."""
    encoder = GroupEncoder(mode)
    groupings = encoder.fit_transform(sensitive_features, n_samples)
    return groupings, encoder.labels_
