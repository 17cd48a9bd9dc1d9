"""The per-partition passes of the global multiclass projection (numpy in, small results out).

Each function runs on one partition of class scores ``S`` (rows on the
simplex after the projection ``P_i = proj_simplex(S_i - L_{g_i})``) and
returns per-group aggregates (``O(k K^2)`` numbers) plus, for the start, a
bounded sample of rows; the ``merge_*`` functions combine them up a tree.
See :mod:`skfairlayer.dask._simplex` for the driver.
"""

import numpy as np

from .._solvers._simplex import (
    PATTERN_CLASSES,
    _project_columns,
    pattern_curvatures,
    sorted_curvatures,
    support_patterns,
)
from ..exceptions import SolverError
from ._blocks import (
    block_codes,
    global_codes,
    group_sums,
    known_codes,
    label_keys,
    recycled,
    scratch,
    union_keys,
)
from ._passes import _check_rows, _sample

#: Largest deviation of an output row's sum from one (as :func:`skfairlayer.project`).
SIMPLEX_TOL = 1e-12
#: Rows per sub-block of the passes: the class-major temporaries stay in cache (in this
#: thread's buffers), and the row-sized ones are small enough for the heap.
_ROWS = 1 << 13


def as_rows(raw, n_classes):
    """One partition of class scores as a float64 ``(n, n_classes)`` array, checked finite."""
    S = np.asarray(raw, dtype=np.float64)
    if S.size == 0:
        return np.zeros((0, n_classes))
    if S.ndim != 2 or S.shape[1] != n_classes:
        raise ValueError(
            f"Every partition of the scores must have {n_classes} columns (the classes). "
            f"Got a partition of shape {S.shape} instead."
        )
    if not np.isfinite(S.sum()) and not np.isfinite(S).all():
        raise ValueError(
            "scores contain NaN or infinite values. Every score must be a finite number."
        )
    return S


def block_start(s_raw, g_raw, n_classes, target):
    """The start's statistics of one partition: labels, rows per group, a stratified sample."""
    S = as_rows(s_raw, n_classes)
    codes, labels = block_codes(g_raw)
    _check_rows(codes.shape[0], S.shape[0])
    k = len(labels)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    rows, _, _ = _sample(S.shape[0], lambda i: codes[i], lambda g: codes == g, counts, target)
    return {"keys": label_keys(labels), "counts": counts, "S": S[rows], "g": codes[rows],
            "rows": S.shape[0]}


def merge_start(parts):
    """Combine start statistics: union of labels, counts added, samples concatenated."""
    keys, wheres = union_keys(parts)
    counts = np.zeros(len(keys))
    S, g = [], []
    for p, where in zip(parts, wheres, strict=True):
        counts[where] += p["counts"]
        S.append(p["S"])
        g.append(where[p["g"]] if where.size else p["g"])
    return {"keys": keys, "counts": counts, "S": np.concatenate(S), "g": np.concatenate(g),
            "rows": sum(p["rows"] for p in parts)}


def _buffer(name, shape):
    """This thread's float buffer ``name`` viewed as an array of ``shape`` (see
    :func:`~skfairlayer.dask._blocks.scratch`: fresh arrays per sub-block would cost a
    worker page faults on every one)."""
    size = shape[0] * shape[1]
    return scratch(name, np.float64, size)[:size].reshape(shape)


def _projected(S, codes, Lt):
    """``P^T`` (class-major) of ``proj_simplex(S - L[codes])``, ``S^T`` and the shifts
    ``L[codes]^T``, in this thread's buffers (valid until the next call).

    The same arithmetic as the in-memory solver's ``primal``, row by row.
    """
    shape = (Lt.shape[0], S.shape[0])
    St = _buffer("scores", shape)
    np.copyto(St, S.T)
    shift = np.take(Lt, codes, axis=1, out=_buffer("shifts", shape), mode="clip")
    V = np.subtract(St, shift, out=_buffer("outputs", shape))
    return _project_columns(V, out=V), St, shift


def _column_sums(Pt, codes, cols, k):
    """Per group and constrained column, the sum of the outputs, shape ``(k, C)``."""
    if codes.size == 0:
        return np.zeros((k, cols.size))
    return np.stack([group_sums(codes, Pt[c], k) for c in cols], axis=1)


def _slices(n):
    """Slices of at most ``_ROWS`` rows covering ``range(n)`` (at least one)."""
    return [slice(a, min(a + _ROWS, n)) for a in range(0, n, _ROWS)] or [slice(0, 0)]


def _curvature(Pt, codes, cols, k):
    """Per (group, support pattern) row counts (up to ``PATTERN_CLASSES`` classes, made into
    curvature sums once the partition is done), else the curvature sums themselves."""
    K, m = Pt.shape
    if K <= PATTERN_CLASSES:
        n_pat = 1 << K
        key = np.multiply(codes, n_pat, out=scratch("pattern keys", np.intp, m)[:m])
        key += support_patterns(Pt, out=scratch("patterns", np.uint8, m)[:m])
        return np.bincount(key, minlength=k * n_pat).reshape(k, n_pat)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(k + 1))
    return sorted_curvatures(Pt[:, order], starts, cols)


def block_primal(s_raw, g_raw, index, lookup, Lt, cols, n_classes, keep, discover, target):
    """One evaluation of the dual at the shifts ``Lt`` (class-major, ``(K, k)``).

    Returns the rows per group, the per-group sums of the constrained output
    columns, this partition's part of ``0.5 ||P - S||^2 + <L[g], P>`` (the
    driver negates the total: ``f``), the curvature sums, and with ``keep``
    the partition's own sums (``blocks``, for the output check). With
    ``discover``, a partition holding a label missing from ``lookup`` returns
    its start statistics (``new``) instead; otherwise such a label raises.
    Rows are processed ``_ROWS`` at a time (the temporaries stay in cache).
    """
    k, C = Lt.shape[1], cols.size
    S = as_rows(s_raw, n_classes)
    codes = known_codes(g_raw, lookup) if discover else global_codes(g_raw, lookup)
    if codes is None:
        res = merge_primal([])
        res["counts"], res["sums"], res["H"] = np.zeros(k), np.zeros((k, C)), np.zeros((k, C, C))
        res["new"] = [block_start(s_raw, g_raw, n_classes, target)]
        return res
    _check_rows(codes.shape[0], S.shape[0])
    sums, half, curv = np.zeros((k, C)), 0.0, 0
    for sl in _slices(S.shape[0]):
        Pt, St, shift = _projected(S[sl], codes[sl], Lt)
        diff = np.subtract(Pt, St, out=St)
        half += 0.5 * float(np.einsum("ij,ij->", diff, diff))
        half += float(np.einsum("ij,ij->", shift, Pt))
        sums += _column_sums(Pt, codes[sl], cols, k)
        curv = curv + _curvature(Pt, codes[sl], cols, k)
    H = pattern_curvatures(curv, cols, n_classes) if n_classes <= PATTERN_CLASSES else curv
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    return {"counts": counts, "sums": sums, "half": half, "H": H,
            "blocks": [(index, sums, counts)] if keep else [], "new": []}


def merge_primal(parts):
    """Combine evaluations: sums added, per-partition sums and unseen-label statistics listed."""
    res = {"blocks": [x for p in parts for x in p["blocks"]],
           "new": [x for p in parts for x in p["new"]],
           "half": float(np.sum([p["half"] for p in parts])) if parts else 0.0}
    for key in ("counts", "sums", "H"):
        res[key] = np.sum([p[key] for p in parts], axis=0) if parts else None
    return res


def block_output(s_raw, g_raw, lookup, Lt, cols, n_classes):
    """The output pass: ``P = proj_simplex(S - L[g])`` and its verification statistics.

    Statistics: per-group sums of the constrained columns, rows per group, the
    smallest entry and the largest deviation of a row sum from one (NaN
    propagates into both). Rows are processed ``_ROWS`` at a time.
    """
    k = Lt.shape[1]
    S = as_rows(s_raw, n_classes)
    codes = global_codes(g_raw, lookup)
    _check_rows(codes.shape[0], S.shape[0])
    out = recycled(S.shape)
    sums, low, off = np.zeros((k, cols.size)), np.inf, 0.0
    for sl in _slices(S.shape[0]):
        Pt, _, _ = _projected(S[sl], codes[sl], Lt)
        out[sl] = Pt.T
        sums += _column_sums(Pt, codes[sl], cols, k)
        if Pt.shape[1]:  # np.minimum and np.maximum propagate NaN
            low = float(np.minimum(low, Pt.min()))
            off = float(np.maximum(off, np.max(np.abs(Pt.sum(axis=0) - 1.0))))
    stats = {"sums": sums, "counts": np.bincount(codes, minlength=k).astype(np.float64),
             "low": low, "off": off}
    return out, stats


def merge_output_stats(parts):
    """Combine the verification statistics of the output pass."""
    return {"sums": np.sum([p["sums"] for p in parts], axis=0),
            "counts": np.sum([p["counts"] for p in parts], axis=0),
            # numpy's min and max propagate NaN (the built-ins may drop it)
            "low": float(np.min([p["low"] for p in parts])),
            "off": float(np.max([p["off"] for p in parts]))}


def check_simplex(stats, where):
    """Raise unless the outputs are finite rows on the simplex (``where``: for the message)."""
    low, off = stats["low"], stats["off"]
    if not (np.isfinite(low) or low == np.inf) or not np.isfinite(off):
        raise SolverError(f"The global multiclass solver returned non-finite outputs {where}. "
                          "This is a bug; please report it.")
    if low < 0 or off > SIMPLEX_TOL:
        raise SolverError(
            f"The global multiclass solver returned outputs off the probability simplex {where} "
            f"(smallest entry {low:.3g}, row sums off by up to {off:.3g} > {SIMPLEX_TOL:g}). "
            "This is a bug; please report it."
        )


def block_output_checked(s_raw, g_raw, expected, lookup, Lt, cols, n_classes, slack):
    """The output block, released only if its rows are on the simplex and its sums match.

    ``expected``: the partition's per-group column sums and, last, rows per group
    (shape ``(k, C + 1)``) recorded by the certifying pass (whose totals the driver
    checked for parity). The sums must agree to ``slack`` per row.
    """
    out, stats = block_output(s_raw, g_raw, lookup, Lt, cols, n_classes)
    check_simplex(stats, "in a partition")
    sums, counts = expected[:, :-1], expected[:, -1]
    if not np.array_equal(stats["counts"], counts):
        raise SolverError(
            "An output partition's rows per group differ from those of the certifying pass: "
            "the data changed between passes. Persist the collection (or make it "
            "deterministic) and project again."
        )
    rounding = 64 * np.finfo(np.float64).eps * max(out.shape[0], 1)
    diff = np.abs(stats["sums"] - sums)
    if not np.all(diff <= slack * counts[:, None] + rounding):
        raise SolverError(
            "An output partition does not match the certified solution: its group sums differ "
            f"from the predicted ones by up to {float(np.max(diff)):.3g}, more than {slack:g} "
            "per row (the data changed between passes, or a bug: please report it)."
        )
    return out
