"""Numeric primitives of the full-data passes: a dot product on one thread, the two-group
sums built on it, the clip ufunc.

``np.dot`` of two long vectors is BLAS's ``ddot``, which OpenBLAS splits across
its threads beyond 10,000 elements: fast on an idle machine, but a thread that
the system does not schedule at once stalls the caller (a Dask worker, a busy
two-core machine). ``einsum`` stays on one thread at about half of ``ddot``'s
single-thread speed. :func:`dot` calls ``ddot`` on rows of 8,192 elements, each
on the calling thread, in one ``vecdot``.
"""

import numpy as np

__all__ = ["MIN_SCALE", "clip", "dot", "indicator_sums"]

try:  # the ufunc itself: np.clip adds Python dispatch that costs more than a small block
    from numpy._core.umath import clip
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.umath import clip

#: Smallest ``|c|`` by which a pass divides ``dot(c f, x)`` to get ``f . x`` (a 0/1 indicator
#: ``f`` scaled by the shift difference ``c`` it already holds): far from underflow.
MIN_SCALE = 1e-150

#: Elements per BLAS call: OpenBLAS computes up to 10,000 on the calling thread.
_ROW = 8192

_vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0


def dot(a, b):
    """``a . b`` (a Python float) of two C-contiguous 1-D float64 arrays of one size."""
    if _vecdot is None:  # pragma: no cover - numpy < 2
        return float(np.einsum("i,i->", a, b))
    m = a.shape[0] - a.shape[0] % _ROW
    total = float(_vecdot(a[:m].reshape(-1, _ROW), b[:m].reshape(-1, _ROW)).sum()) if m else 0.0
    return total + float(np.dot(a[m:], b[m:])) if m < a.shape[0] else total


def indicator_sums(ind, x, buf):
    """``(sum(x), sum of x where ind is 1)`` for a 0/1 indicator ``ind`` (any numeric or
    boolean dtype), block by block in one read of ``x``.

    Each block of ``buf.shape[0]`` rows has its indicator converted into the float64
    buffer ``buf`` (read as is when already float64), and its total and dot product with
    the indicator are taken while it is in cache: no ``n``-float array is written.
    """
    step, total, one = buf.shape[0], 0.0, 0.0
    for start in range(0, x.shape[0], step):
        xs = x[start : start + step]
        if ind.dtype == np.float64:
            f = ind[start : start + step]
        else:
            f = buf[: xs.shape[0]]
            np.copyto(f, ind[start : start + step])
        total += float(xs.sum())
        one += dot(f, xs)
    return total, one
