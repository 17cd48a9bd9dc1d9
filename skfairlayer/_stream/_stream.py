"""The stream wrapper: one engine per output kind, a lock, the label index, input checks.

:func:`start_stream` chooses the engine from the shape of the problem
(:class:`StreamStart`, plain data describing the fitted start), so that one
problem described two ways gets the same engine and the same outputs.
"""

import dataclasses
import math
import threading
from dataclasses import dataclass

import numpy as np

from .._groups import label_index
from .._validation import check_scores, check_tolerance
from ._families import PooledFamilies
from ._paper import PAPER_STEP, PaperPrimalDual
from ._pooled import DEFAULT_STEP, PooledPrimalDual
from ._residual import PooledResidual

__all__ = ["ALGORITHMS", "KINDS", "OUTPUTS", "Stream", "StreamStart", "start_stream"]

#: Streaming algorithms.
ALGORITHMS = ("pooled", "paper")
#: What a stream keeps within the tolerance: group parity, or the plug-in mean residual.
KINDS = ("parity", "residual")
#: The output kinds, one engine each.
OUTPUTS = ("proba", "decisions")


@dataclass(frozen=True, kw_only=True, eq=False)
class StreamStart:
    """Plain data describing where a stream starts: the fitted layer, and the stream's parameters.

    Parameters
    ----------
    tolerance : float
        The tolerance ``epsilon``.
    labels : tuple of array-like
        Per grouping (one: intersectional; several: marginal, one per
        attribute), the group labels in code order.
    n_classes : int, default=2
        Number of classes; 2 means binary outputs, whose scores are the
        probabilities of class 1, of shape (n_samples,).
    kind : {"parity", "residual"}, default="parity"
        Group parity of (weighted) pooled means, or the plug-in mean residual.
    columns : tuple of int or None, default=None
        Constrained class columns; ``None`` means every column (binary: ``(1,)``,
        the only choice).
    weight_class : int or None, default=None
        Class whose base posterior weighs each row (plug-in equal
        opportunity); ``None``: demographic parity.
    coefs : tuple of array-like or None, default=None
        Per grouping, fitted shift coefficients of shape (k_j, len(columns))
        (a row moves by ``w * coef``); ``None`` means zeros.
    offsets : tuple of array-like or None, default=None
        Per grouping, fitted decision offsets of shape (k_j, n_classes): a row
        takes ``argmax_c(values_c - sum_j offsets_j[g_j, c])`` with binary
        values ``[1 - s, s]``; ``None`` means zeros.
    shares : tuple of array-like or None, default=None
        Per grouping, fitted (weighted) group shares of shape (k_j,); ``None``
        means uniform.
    algorithm : {"pooled", "paper"}, default="pooled"
        The certified pooled algorithm, or the paper's (binary demographic
        parity, one grouping; for reproduction).
    step : float or None, default=None
        Dual step; ``None`` means the algorithm's default.
    threshold : float, default=0.5
        Decision threshold of the paper's algorithm.
    criterion : str or None, default=None
        Name shown in reports; ``None``: the engine's (demographic parity,
        equal opportunity or mean residual).
    """

    tolerance: float
    labels: tuple
    n_classes: int = 2
    kind: str = "parity"
    columns: tuple | None = None
    weight_class: int | None = None
    coefs: tuple | None = None
    offsets: tuple | None = None
    shares: tuple | None = None
    algorithm: str = "pooled"
    step: float | None = None
    threshold: float = 0.5
    criterion: str | None = None

    @property
    def config(self):
        """``(algorithm, tolerance, step, threshold)``: the parameters a caller may change."""
        return (self.algorithm, self.tolerance, self.step, self.threshold)


def _per_grouping(name, values, sizes, shape, default):
    """Validated float64 arrays, one per grouping, of shape ``shape(k)`` (``default`` if None)."""
    if values is None:
        return [default(k) for k in sizes]
    if len(values) != len(sizes):
        raise ValueError(
            f"{name} must hold one array per grouping ({len(sizes)}). Got {len(values)} instead."
        )
    out = []
    for v, k in zip(values, sizes, strict=True):
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape != shape(k) or not np.isfinite(arr).all():
            raise ValueError(
                f"{name} must hold finite arrays of shape {shape(k)} per grouping. Got an "
                f"array of shape {arr.shape} instead."
            )
        out.append(arr)
    return out


def _check_start(start):
    """The validated layout of a start: labels, sizes, columns, coefs, offsets, shares, step."""
    if start.algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}. Got {start.algorithm!r} instead.")
    if start.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Got {start.kind!r} instead.")
    tolerance = check_tolerance(start.tolerance)
    default = PAPER_STEP if start.algorithm == "paper" else DEFAULT_STEP["pooled"]
    step = default if start.step is None else float(start.step)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a positive number. Got {start.step!r} instead.")
    K = int(start.n_classes)
    if K < 2:
        raise ValueError(f"n_classes must be at least 2. Got {start.n_classes!r} instead.")
    labels = [np.asarray(g) for g in start.labels] if isinstance(start.labels, list | tuple) else []
    if not labels or any(g.ndim != 1 or g.size == 0 for g in labels):
        raise ValueError(
            "labels must hold one non-empty 1-D array of group labels per grouping. Got "
            f"{start.labels!r} instead."
        )
    sizes = [g.size for g in labels]
    binary = K == 2
    columns = start.columns
    if columns is None:
        columns = (1,) if binary else tuple(range(K))
    columns = tuple(int(c) for c in columns)
    if not columns or not all(0 <= c < K for c in columns) or (binary and columns != (1,)):
        raise ValueError(
            f"columns must be class indices in [0, {K}) ((1,) for binary outputs). Got "
            f"{start.columns!r} instead."
        )
    if start.weight_class is not None and not 0 <= int(start.weight_class) < K:
        raise ValueError(f"weight_class must lie in [0, {K}). Got {start.weight_class!r} instead.")
    m = len(columns)
    coefs = _per_grouping("coefs", start.coefs, sizes, lambda k: (k, m), lambda k: np.zeros((k, m)))
    offsets = _per_grouping("offsets", start.offsets, sizes, lambda k: (k, K),
                            lambda k: np.zeros((k, K)))
    shares = _per_grouping("shares", start.shares, sizes, lambda k: (k,),
                           lambda k: np.full(k, 1.0 / k))
    return {
        "tolerance": tolerance, "step": step, "labels": labels, "sizes": sizes,
        "columns": columns, "coefs": coefs, "offsets": offsets, "shares": shares,
    }


def _engine(start, layout, output):
    """The engine of one output kind, chosen by the shape of the problem."""
    tol, step, sizes = layout["tolerance"], layout["step"], layout["sizes"]
    binary = start.n_classes == 2
    dp_binary_one = (binary and len(sizes) == 1 and start.weight_class is None
                     and start.kind == "parity")
    if start.algorithm == "paper":
        if not dp_binary_one:
            raise ValueError(
                "algorithm='paper' reproduces the paper's online algorithm, defined for binary "
                "demographic parity with one grouping (intersectional groups); use "
                f"algorithm='pooled'. Got kind={start.kind!r}, n_classes={start.n_classes}, "
                f"weight_class={start.weight_class!r}, {len(sizes)} groupings instead."
            )
        return PaperPrimalDual(tol, sizes[0], output=output, step=step,
                               threshold=float(start.threshold))
    if start.kind == "residual":
        return PooledResidual(tol, n_classes=start.n_classes, binary=binary, group_sizes=sizes,
                              output=output)
    if dp_binary_one:
        if output == "proba":
            shifts = layout["coefs"][0][:, 0]
        else:  # 1 iff s - o_1 >= 1 - s - o_0, i.e. 2 s - 1 >= o_1 - o_0
            shifts = layout["offsets"][0][:, 1] - layout["offsets"][0][:, 0]
        return PooledPrimalDual(tol, shifts, layout["shares"][0], output=output, step=step)
    return PooledFamilies(
        tol, n_classes=start.n_classes, binary=binary, columns=layout["columns"],
        group_sizes=sizes, weight_class=start.weight_class, coefs=layout["coefs"],
        offsets=layout["offsets"], shares=layout["shares"], output=output, step=step,
    )


def start_stream(start):
    """A new, empty stream from a fitted start; the engine follows the shape of the problem.

    ``algorithm="paper"``: the paper's algorithm (binary demographic parity,
    one grouping; else ``ValueError``). ``kind="residual"``: the mean-residual
    engine. Binary outputs, one grouping, demographic parity: the pooled
    primal-dual with the exact safeguard. Everything else (multiclass, plug-in
    equal opportunity, several groupings): the pooled primal-dual with a
    common centre.

    Parameters
    ----------
    start : StreamStart
        The fitted start and the stream's parameters.

    Returns
    -------
    stream : Stream

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._stream import StreamStart, start_stream
    >>> start = StreamStart(tolerance=0.1, labels=(np.array(["F", "M"]),),
    ...                     coefs=(np.array([[0.2], [-0.2]]),), shares=(np.array([0.5, 0.5]),))
    >>> stream = start_stream(start)
    >>> type(stream.engine("proba")).__name__
    'PooledPrimalDual'
    >>> stream.serve("proba", np.array([0.9, 0.1]), stream.codes_of(["F", "M"])).round(2)
    array([0.7, 0.3])
    """
    if not isinstance(start, StreamStart):
        raise TypeError(f"start must be a StreamStart. Got {type(start).__name__} instead.")
    layout = _check_start(start)
    engines = {output: _engine(start, layout, output) for output in OUTPUTS}
    return Stream(start, engines, layout["labels"])


class Stream:
    """A served stream: one engine per output kind, updated under a lock.

    Built by :func:`start_stream`. Several threads may serve rows at once
    (each update is serialized); the lock is dropped when pickling and
    recreated when loading, so the stream pickles, deep-copies and persists
    with skops. An invalid batch raises before any state change.

    Codes are per grouping: with one grouping, an int array (or list) of
    shape (n_samples,); with several, an int array of shape (n_samples,
    n_groupings) (one column per grouping, as :meth:`codes_of` returns) or a
    list / tuple of one array of shape (n_samples,) per grouping.
    """

    def __init__(self, start, engines, labels):
        self.start = start
        self.engines = engines
        self.labels = labels
        self.group_sizes = tuple(g.size for g in labels)
        self.n_classes = int(start.n_classes)
        self._index = label_index(labels[0] if len(labels) == 1 else labels)
        self._lock = threading.Lock()

    @property
    def algorithm(self):
        """``"pooled"`` or ``"paper"``."""
        return self.start.algorithm

    @property
    def config(self):
        """``(algorithm, tolerance, step, threshold)`` the stream was started with."""
        return self.start.config

    def engine(self, output):
        """The engine serving ``output`` (``"proba"`` or ``"decisions"``)."""
        return self.engines[_check_output(output)]

    def restarted(self, config):
        """A new, empty stream from the same fit with ``config = (algorithm, tolerance, step,
        threshold)``.

        Parameters
        ----------
        config : tuple
            The new streaming parameters.

        Returns
        -------
        stream : Stream
        """
        algorithm, tolerance, step, threshold = config
        return start_stream(dataclasses.replace(
            self.start, algorithm=algorithm, tolerance=tolerance, step=step, threshold=threshold))

    def serve(self, output, scores, codes):
        """Serve a batch of one output kind and update its engine.

        Parameters
        ----------
        output : {"proba", "decisions"}
            Which stream.
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base probabilities (binary: of class 1).
        codes : array-like
            Group codes, per grouping (see the class docstring).

        Returns
        -------
        outputs : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Served probabilities (binary: of class 1), or class indices
            (decisions).
        """
        engine = self.engines[_check_output(output)]
        scores, codes = self._check(scores, codes)
        with self._lock:
            out, new = engine.step(scores, codes)
            engine.commit(new, scores.shape[0])
        return out

    def serves_rows(self, output):
        """Whether :meth:`serve_one` serves ``output`` (one grouping, an engine with a
        one-row step: every engine but the paper's)."""
        return len(self.group_sizes) == 1 and hasattr(self.engines[_check_output(output)],
                                                      "step_one")

    def serve_one(self, output, score, code):
        """Serve one row given as Python numbers: the one-row path, no array built.

        The same outputs and updates as :meth:`serve` of a batch of that row.

        Parameters
        ----------
        output : {"proba", "decisions"}
            Which stream (one that :meth:`serves_rows`).
        score : float or list of float
            The row's base probability of class 1 (binary), or of every class.
        code : int
            Its group code (one grouping).

        Returns
        -------
        served : float, list of float or int
            The served probability (of class 1, binary), probabilities, or class index.
        """
        engine = self.engines[_check_output(output)]
        if not (type(code) is int and 0 <= code < self.group_sizes[0] and (
            type(score) is float and math.isfinite(score) if self.n_classes == 2 else
            type(score) is list and len(score) == self.n_classes
            and all(type(x) is float and math.isfinite(x) for x in score)
        )):  # the batch path raises the detailed error
            return self.serve(output, np.array([score], dtype=np.float64),
                              np.array([code])).tolist()[0]
        with self._lock:
            out, new = engine.step_one(score, code)
            engine.commit(new, 1)
        return out

    def reset(self):
        """Forget every served row (both outputs); keep the fitted starting point."""
        with self._lock:
            for engine in self.engines.values():
                engine.reset()

    def report(self, output="proba"):
        """Live report of one output's stream.

        Parameters
        ----------
        output : {"proba", "decisions"}, default="proba"
            Which stream.

        Returns
        -------
        report : StreamReport
            Counts, pooled means and gap, certificate and duals.
        """
        engine = self.engines[_check_output(output)]
        labels = self.labels[0] if len(self.labels) == 1 else list(self.labels)
        with self._lock:
            report = engine.report(labels)
        if self.start.criterion is not None:
            report = dataclasses.replace(report, criterion=self.start.criterion)
        return report

    def codes_of(self, values):
        """Group codes of labels: a fast path for small batches (None: use the full encoding).

        Parameters
        ----------
        values : list
            One label per row (one grouping), or one list of labels per row
            (several groupings, in grouping order).

        Returns
        -------
        codes : list of int, ndarray of shape (n_samples, n_groupings), or None
            The codes, or None when a label is unknown or missing, or the
            labels are not hashable scalars.
        """
        index = self._index
        if index is None:
            return None
        try:
            if isinstance(index, dict):
                return [index[v] for v in values]
            codes = [[block[v] for block, v in zip(index, row, strict=True)] for row in values]
        except (KeyError, TypeError, ValueError):
            return None
        return np.array(codes, dtype=np.intp).reshape(-1, len(index))

    def _check(self, scores, codes):
        """Validated scores (float64) and codes of shape (n, n_groupings); raises on bad input."""
        binary = self.n_classes == 2
        sizes = self.group_sizes
        if (  # fast path: a float64 batch and list codes of one grouping (codes_of)
            type(scores) is np.ndarray
            and type(codes) is list
            and len(sizes) == 1
            and scores.dtype == np.float64
            and 0 < len(codes) == scores.shape[0]
            and scores.ndim == (1 if binary else 2)
            and (binary or scores.shape[1] == self.n_classes)
            and set(map(type, codes)) == {int}
            and min(codes) >= 0
            and max(codes) < sizes[0]
            and all(map(math.isfinite, scores.ravel().tolist()))
        ):
            return scores, np.array(codes, dtype=np.intp).reshape(-1, 1)
        scores = _check_scores(scores, binary, self.n_classes)
        return scores, _check_codes(codes, scores.shape[0], sizes)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_index", None)  # rebuilt on load (keys of any type)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        labels = self.labels
        self._index = label_index(labels[0] if len(labels) == 1 else labels)
        self._lock = threading.Lock()


def _check_output(output):
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}. Got {output!r} instead.")
    return output


def _check_scores(scores, binary, n_classes):
    scores = np.asarray(scores, dtype=np.float64)
    if binary and scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != (1 if binary else 2) or scores.shape[0] == 0 or (
        not binary and scores.shape[1] != n_classes
    ):
        check_scores(scores, name="scores")  # raises the detailed error when it applies
        shape = "(n_samples,)" if binary else f"(n_samples, {n_classes})"
        raise ValueError(
            f"scores must be of shape {shape}. Got an array of shape {scores.shape} instead."
        )
    return check_scores(scores, name="scores")  # NaN or infinity


def _check_codes(codes, n, sizes):
    """Codes of shape (n, n_groupings), validated against the group counts."""
    n_groupings = len(sizes)
    if isinstance(codes, list | tuple) and n_groupings > 1:
        columns = [np.asarray(c) for c in codes]
        if len(columns) != n_groupings or any(c.shape != (n,) for c in columns):
            raise ValueError(
                f"codes must hold {n_groupings} arrays of shape ({n},), one per grouping. Got "
                f"{[c.shape for c in columns]} instead."
            )
        codes = np.column_stack(columns)
    codes = np.asarray(codes)
    if codes.ndim == 1 and n_groupings == 1:
        codes = codes[:, None]
    if codes.shape != (n, n_groupings) or codes.dtype.kind not in "iu":
        expected = f"({n},)" if n_groupings == 1 else f"({n}, {n_groupings})"
        raise ValueError(
            f"codes must be integer group codes of shape {expected}, the same shape as the "
            f"scores' rows ({n_groupings} grouping(s)). Got {codes.dtype} codes of shape "
            f"{codes.shape} instead."
        )
    low, high = codes.min(axis=0), codes.max(axis=0)
    if low.min() < 0 or np.any(high >= np.array(sizes)):
        bounds = f"[0, {sizes[0]})" if n_groupings == 1 else f"[0, n_groups) per grouping {sizes}"
        raise ValueError(
            f"codes must lie in {bounds}. Got values in [{low.min()}, {high.max()}] instead."
        )
    return codes.astype(np.intp, copy=False)
