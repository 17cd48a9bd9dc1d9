"""The optional compiled passes over rows and group codes (``_kernels.c``).

``kernels`` is the extension module, or ``None`` when it was not built (no C
compiler at install time) or the environment variable
``SKFAIRLAYER_PURE_NUMPY`` is set to a non-empty value other than ``0``; callers
then run their numpy passes, which give the same results. The kernels read
group codes as ``uint8``: :func:`small_codes` makes that copy (once per family
or layout, which cache it).
"""

import os
import threading
from contextlib import contextmanager

import numpy as np

try:
    from . import _kernels as kernels
except ImportError:  # built without a C compiler: numpy passes only
    kernels = None

if os.environ.get("SKFAIRLAYER_PURE_NUMPY", "") not in ("", "0"):
    kernels = None

__all__ = [
    "MAX_GROUPS", "active", "group_sums", "kernels", "numpy_passes", "scratch", "small_codes",
]

#: Largest number of groups the kernels take (codes are stored as uint8).
MAX_GROUPS = 255


_state = {"enabled": kernels is not None}


def active():
    """Whether callers should use the kernels (built, and not switched off)."""
    return _state["enabled"]


@contextmanager
def numpy_passes(simd=None):
    """Within the block, callers run their numpy passes (``simd=None``), or the
    kernels with (``True``) or without (``False``) their AVX-512 loops.

    For tests and benchmarks that compare the paths; not thread-safe.
    """
    enabled, was_simd = _state["enabled"], kernels.simd() if kernels is not None else False
    _state["enabled"] = simd is not None and kernels is not None
    if kernels is not None and simd is not None:
        kernels.set_simd(simd)
    try:
        yield
    finally:
        _state["enabled"] = enabled
        if kernels is not None:
            kernels.set_simd(was_simd)


def small_codes(codes, n_groups, *, checked=False):
    """``codes`` as ``uint8`` for the kernels, or None when they cannot take them.

    None when the kernels are not available, there are more than
    :data:`MAX_GROUPS` groups, or a row is outside every group (code ``-1``).

    Parameters
    ----------
    codes : ndarray of shape (n_samples,), dtype=intp
        Group of each row, in ``[0, n_groups)`` (``-1`` outside the groups).
    n_groups : int
        Number of groups.
    checked : bool, default=False
        Whether the caller knows every code is in ``[0, n_groups)`` (skips the
        check for rows outside the groups).

    Returns
    -------
    small : ndarray of shape (n_samples,), dtype=uint8, or None
        The codes, as a contiguous ``uint8`` array.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._compiled import kernels, small_codes
    >>> small = small_codes(np.array([0, 1, 1]), 2)
    >>> small is None or small.dtype == np.uint8
    True
    """
    if not active() or not 1 <= n_groups <= MAX_GROUPS or codes.size == 0:
        return None
    if not checked and codes.min() < 0:
        return None
    return np.ascontiguousarray(codes, dtype=np.uint8)


def group_sums(values, small, n_groups):
    """Per-group sums of ``values`` by the kernels, or None when they cannot take them.

    None when ``small`` is None (see :func:`small_codes`) or ``values`` is not a
    contiguous float64 array; callers then sum with numpy.

    Parameters
    ----------
    values : ndarray of shape (n_samples,)
        Values to sum.
    small : ndarray of shape (n_samples,), dtype=uint8, or None
        Group codes from :func:`small_codes`.
    n_groups : int
        Number of groups.

    Returns
    -------
    sums : ndarray of shape (n_groups,) or None
    """
    if small is None or values.dtype != np.float64 or not values.flags.c_contiguous:
        return None
    sums = np.empty(n_groups)
    kernels.group_sums(values, small, sums)
    return sums


_SCRATCH = threading.local()


#: Largest scratch buffer (items) a thread keeps between calls.
SCRATCH_KEEP = 1 << 21


def scratch(n, dtype=np.intp):
    """A per-thread buffer of ``n`` items of ``dtype``, reused across calls.

    A fresh multi-megabyte temporary costs page faults that can exceed the
    pass that fills it. Buffers up to :data:`SCRATCH_KEEP` items are kept
    (16 MB of intp); a larger request gets a fresh ``np.empty`` (whose pages
    cost only where they are written). The buffer is valid until the next call
    from the same thread; callers use it within one function call and never
    return it.
    """
    if n > SCRATCH_KEEP:
        return np.empty(n, dtype=dtype)
    key = np.dtype(dtype).str
    buf = getattr(_SCRATCH, key, None)
    if buf is None or buf.shape[0] < n:
        buf = np.empty(max(n, 1024), dtype=dtype)
        setattr(_SCRATCH, key, buf)
    return buf[:n]
