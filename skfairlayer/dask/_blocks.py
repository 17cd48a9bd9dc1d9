"""Partitions of Dask collections as aligned blocks, group labels, tree reductions.

Every pass of :mod:`skfairlayer.dask` maps a numpy function over the aligned
(scores, groups) blocks of the collections and combines the small per-block
results pairwise up a tree (so sums keep ``~log(n_blocks)`` roundings, not
``n_blocks``). A :class:`Pass` writes that graph directly (one layer; a
``dask.delayed`` call per block cost more on the driver than the cluster's
work). Group labels are discovered per block and merged on the driver: the
global labels are sorted as the in-memory :func:`~skfairlayer.project` sorts
them.
"""

import operator
import sys
import threading

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from .._groups import _unique, encode
from ..exceptions import UnseenGroupError

try:  # explicit task references (dask >= 2024.12): keys of persisted blocks stay references
    from dask._task_spec import Alias, List, Task, TaskRef
except ImportError:  # pragma: no cover (older dask: tuple tasks)
    Alias = List = Task = TaskRef = None


def _task(key, func, *args):
    """The task ``func(*args)`` under ``key``; ``args`` of type :class:`_Ref` are other tasks."""
    if Task is None:  # pragma: no cover
        return (func, *[a.key if isinstance(a, _Ref) else a for a in args])
    return Task(key, func, *[TaskRef(a.key) if isinstance(a, _Ref) else a for a in args])


def _list_task(key, func, refs):
    """The task ``func([results of refs])``."""
    if Task is None:  # pragma: no cover
        return (func, [r.key for r in refs])
    return Task(key, func, List(*[TaskRef(r.key) for r in refs]))


def _alias(key, target):
    if Alias is None:  # pragma: no cover
        return target
    return Alias(key, target)


class _Ref:
    """A reference to the result of the task ``key`` (an argument of :func:`_task`)."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


#: Rows per sub-block of a per-block group sum (bincount adds sequentially; the
#: sub-block results are then summed pairwise).
_SUB = 1 << 15
#: Fan-in of the tree reductions.
_SPLIT = 8


def _is_frame(x):
    return hasattr(x, "to_delayed") and hasattr(x, "npartitions")


def as_blocks(scores, sensitive_features):
    """Aligned lists of delayed blocks of the scores and the groups, and the scores' chunks.

    Parameters
    ----------
    scores : dask.array.Array of shape (n_samples,) or dask.dataframe.Series
        Scores, one value per row.
    sensitive_features : dask.array.Array or dask Series / DataFrame
        Group of each row: one column, or several (intersectional groups).

    Returns
    -------
    score_blocks, group_blocks : list of Delayed
    chunks : tuple of float
        Rows per block (NaN when unknown).
    """
    if isinstance(scores, da.Array):
        if scores.ndim != 1:
            raise ValueError(
                "scores must be a 1-D Dask array (binary scores) or a 2-D one (class "
                f"scores, multiclass). Got an array of shape {scores.shape} instead."
            )
        chunks = scores.chunks[0]
        score_blocks = list(scores.to_delayed().ravel())
    elif _is_frame(scores) and getattr(scores, "ndim", 1) == 1:
        chunks = (np.nan,) * scores.npartitions
        score_blocks = list(scores.to_delayed())
    else:
        raise TypeError(
            "scores must be a Dask array or a Dask Series. "
            f"Got {type(scores).__name__} instead; use skfairlayer.project for in-memory data."
        )
    group_blocks = aligned_blocks(sensitive_features, chunks, "scores")
    return score_blocks, group_blocks, tuple(chunks)


def aligned_blocks(sensitive_features, chunks, other="scores"):
    """Delayed blocks of ``sensitive_features`` aligned with row ``chunks`` of ``other``.

    Parameters
    ----------
    sensitive_features : dask.array.Array or dask Series / DataFrame
        Group of each row: one column, or several.
    chunks : tuple of float
        Rows per block of the collection they describe (NaN when unknown).
    other : str, default="scores"
        Name of that collection, for messages.

    Returns
    -------
    group_blocks : list of Delayed
    """
    groups = sensitive_features
    if isinstance(groups, da.Array):
        if groups.ndim not in (1, 2):
            raise ValueError(
                "sensitive_features must be 1-D or 2-D. "
                f"Got an array of shape {groups.shape} instead."
            )
        if groups.ndim == 2 and groups.numblocks[1] > 1:
            groups = groups.rechunk({1: -1})
        if groups.chunks[0] != tuple(chunks):
            n_rows, n_groups = sum(chunks), groups.shape[0]
            if not np.isnan(n_rows) and not np.isnan(n_groups) and n_rows != n_groups:
                raise ValueError(
                    f"sensitive_features has {n_groups} rows but {other} has {n_rows}; "
                    "they must describe the same samples, in the same order."
                )
            if any(np.isnan(chunks)) or any(np.isnan(groups.chunks[0])):
                raise ValueError(
                    f"sensitive_features and {other} must have the same row chunks when their "
                    f"sizes are unknown. Got {groups.chunks[0]!r} and {tuple(chunks)!r} instead."
                )
            groups = groups.rechunk({0: tuple(chunks)})
        group_blocks = list(groups.to_delayed().reshape(-1))
    elif _is_frame(groups):
        group_blocks = list(groups.to_delayed())
    else:
        raise TypeError(
            f"sensitive_features must be a Dask array, Series or DataFrame aligned with the "
            f"{other}. Got {type(groups).__name__} instead."
        )
    if len(group_blocks) != len(chunks):
        raise ValueError(
            f"sensitive_features and {other} must have the same number of partitions. "
            f"Got {len(group_blocks)} and {len(chunks)} instead."
        )
    return group_blocks


def _merged(blocks):
    """The union of the graphs of delayed ``blocks`` (blocks of one collection share one)."""
    graphs = {}
    for b in blocks:
        graphs.setdefault(id(b.dask), b.dask)
    return HighLevelGraph.merge(*graphs.values())


class Pass:
    """One pass over aligned delayed blocks, its graph written directly.

    ``dask.delayed`` calls cost about a millisecond each on the driver (argument
    traversal, tokenizing, one graph per call); a pass over hundreds of
    partitions spent more building its graph than the cluster spent computing
    it. Here one layer holds a task per block (``func(scores, groups)``,
    ``func`` a :func:`functools.partial` holding the small parameters) and the
    tree reductions.

    Parameters
    ----------
    score_blocks, group_blocks : list of Delayed
        Aligned blocks.
    func : callable
        ``func(scores_block, groups_block)`` for each pair (a partial).
    name : str
        Prefix of the task keys.
    extra : list, default=None
        One more argument per block: ``func(scores_block, groups_block, extra[i])``.
    """

    def __init__(self, score_blocks, group_blocks, func, name, extra=None):
        base = _merged(list(score_blocks) + list(group_blocks))
        more = [()] * len(score_blocks) if extra is None else [(x,) for x in extra]
        token = tokenize(func, [b.key for b in score_blocks], [b.key for b in group_blocks],
                         more)
        self.name = f"{name}-{token}"
        self.layer = {
            (self.name, i): _task((self.name, i), func, _Ref(s.key), _Ref(g.key), *x)
            for i, (s, g, x) in enumerate(zip(score_blocks, group_blocks, more, strict=True))
        }
        self.keys = list(self.layer)
        self._base, self._n = base, 0

    def _key(self, tag):
        self._n += 1
        return (f"{self.name}-{tag}", self._n)

    def item(self, keys, index):
        """Keys of ``result[index]`` of each task of ``keys``."""
        out = []
        for k in keys:
            new = self._key(f"item{index}")
            self.layer[new] = _task(new, operator.getitem, _Ref(k), index)
            out.append(new)
        return out

    def reduce(self, keys, combine, split_every=_SPLIT):
        """Key of ``keys`` combined with ``combine(list) -> part``, ``split_every`` at a time."""
        keys = list(keys)
        if not keys:
            raise ValueError("The collection has no partitions.")
        while len(keys) > 1:
            level = []
            for i in range(0, len(keys), split_every):
                new = self._key("reduce")
                self.layer[new] = _list_task(new, combine,
                                             [_Ref(k) for k in keys[i : i + split_every]])
                level.append(new)
            keys = level
        return keys[0]

    def task(self, func, *keys):
        """Key of a new task ``func(*results)``, ``results`` those of the tasks ``keys``."""
        new = self._key("task")
        self.layer[new] = _task(new, func, *[_Ref(k) for k in keys])
        return new

    def graph(self):
        """The pass's graph over the blocks' graphs."""
        own = HighLevelGraph({self.name: MaterializedLayer(dict(self.layer))},
                             {self.name: set(self._base.layers)})
        return HighLevelGraph.merge(self._base, own)

    def delayed(self, key):
        """A Delayed of the task ``key``."""
        return Delayed(key, self.graph(), layer=self.name)

    def array(self, keys, chunks, dtype, columns=None):
        """A Dask array whose blocks are the tasks ``keys`` (``chunks`` rows each): 1-D, or
        2-D with ``columns`` columns in one block."""
        shape = (tuple(chunks),) if columns is None else (tuple(chunks), (columns,))
        if (columns is None and list(keys) == self.keys
                and len(self.layer) == len(keys)):  # the pass's own tasks
            return da.Array(self.graph(), self.name, shape, dtype=dtype)
        name = f"{self.name}-array"
        tail = () if columns is None else (0,)
        aliases = {(name, i, *tail): _alias((name, i, *tail), k) for i, k in enumerate(keys)}
        own = HighLevelGraph({name: MaterializedLayer(aliases)}, {name: {self.name}})
        return da.Array(HighLevelGraph.merge(self.graph(), own), name, shape, dtype=dtype)


def compute(*objs):
    """``dask.compute`` with the active scheduler (a distributed Client if one is set)."""
    return dask.compute(*objs)


# ------------------------------------------------------------------ groups of one block


def block_codes(raw):
    """Local codes and sorted local labels of one block of group values."""
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 1:
        if arr.size == 0:
            return np.zeros(0, dtype=np.intp), arr[:0]
        labels, codes = _unique(arr)
        return codes, labels
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=np.intp), np.empty(0, dtype=object)
    (grouping,), labels = encode(raw if hasattr(raw, "iloc") else arr)
    return grouping.codes, labels


def label_keys(labels):
    """Hashable keys of labels (numpy scalars as Python scalars, tuples kept)."""
    return [lab.item() if hasattr(lab, "item") else lab for lab in labels]


def union_keys(parts):
    """The union of the parts' label keys (first-seen order) and, per part, where its keys
    stand in it: ``(keys, wheres)`` with ``wheres[j]`` an ``intp`` array for part ``j``."""
    keys, index = [], {}
    for p in parts:
        for key in p["keys"]:
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
    wheres = [np.fromiter((index[key] for key in p["keys"]), dtype=np.intp, count=len(p["keys"]))
              for p in parts]
    return keys, wheres


def global_labels(keys):
    """Sorted labels (as the in-memory encoder sorts them) from a set of keys."""
    ordered = sorted(keys)
    if ordered and isinstance(ordered[0], tuple):
        out = np.empty(len(ordered), dtype=object)
        out[:] = ordered
        return out
    return np.asarray(ordered)


def known_codes(raw, lookup):
    """Global codes of one block of group values (``lookup`` maps label keys to codes), or
    None when the block holds a label not in ``lookup``."""
    local, labels = block_codes(raw)
    keys = label_keys(labels)
    if any(key not in lookup for key in keys):
        return None
    if local.size == 0:
        return local
    return np.fromiter((lookup[key] for key in keys), dtype=np.intp, count=len(keys))[local]


def global_codes(raw, lookup):
    """:func:`known_codes`, raising :class:`~skfairlayer.exceptions.UnseenGroupError` for a
    label not in ``lookup``."""
    codes = known_codes(raw, lookup)
    if codes is None:
        missing = [key for key in label_keys(block_codes(raw)[1]) if key not in lookup]
        raise UnseenGroupError(
            f"Group label(s) {missing[:5]!r} were not seen when the groups were fixed. "
            f"Known groups: {list(lookup)[:20]!r}."
        )
    return codes


def group_sums(codes, values, k):
    """Per-group sums of ``values``: bincount on sub-blocks, summed pairwise across them."""
    n = codes.shape[0]
    if n <= _SUB:
        return np.bincount(codes, weights=values, minlength=k)
    parts = [np.bincount(codes[a : a + _SUB], weights=values[a : a + _SUB], minlength=k)
             for a in range(0, n, _SUB)]
    return np.sum(parts, axis=0)


def as_float(raw):
    """One block of scores as a contiguous float64 vector."""
    arr = np.ascontiguousarray(np.asarray(raw, dtype=np.float64))
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


# ------------------------------------------------------------------ two groups, fast

#: Rows per sub-block of the two-group passes (temporaries stay in cache).
SUB = 1 << 16


def sub_blocks(n):
    """Slices of at most ``SUB`` rows covering ``range(n)``."""
    return [slice(a, min(a + SUB, n)) for a in range(0, n, SUB)] or [slice(0, 0)]


def _numeric(raw):
    """``raw`` as a 1-D integer or float array (a column of a 2-D block flattened), or None."""
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        return None
    return arr


def two_valued(raw):
    """Sorted labels and the indicator of the second, for a 1-D integer or float block
    with at most two distinct values (no NaN); None otherwise (the general path then runs)."""
    arr = _numeric(raw)
    if arr is None or arr.size == 0:
        return None
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        return arr[:1], np.zeros(arr.size, dtype=bool)
    ind = arr == hi
    consecutive = arr.dtype.kind in "iu" and hi - lo == 1  # then no third value
    if not consecutive and np.count_nonzero(arr == lo) + np.count_nonzero(ind) != arr.size:
        return None  # a third value, or NaN
    return np.array([lo, hi], dtype=arr.dtype), ind


def indicator(raw, lookup):
    """Boolean indicator of global group 1 when there are two numeric groups, else None."""
    if len(lookup) != 2:
        return None
    arr = _numeric(raw)
    if arr is None:
        return None
    keys = sorted(lookup, key=lookup.get)
    if not all(isinstance(key, int | float | np.integer | np.floating)
               and not isinstance(key, bool | np.bool_) for key in keys):
        return None
    ind = arr == keys[1]
    if arr.size and arr.dtype.kind in "iu" and keys[1] - keys[0] == 1:  # the range decides
        if arr.min() < keys[0] or arr.max() > keys[1]:
            return None  # an unseen label: the general path raises
    elif np.count_nonzero(ind) + np.count_nonzero(arr == keys[0]) != arr.size:
        return None
    return ind


class TwoGroups:
    """The indicator of global group 1 on one block of two numeric groups, handed out
    sub-block by sub-block (as numbers or booleans).

    Integer labels ``(a, a + 1)`` are converted straight from the block, checked by its
    minimum and maximum: no ``n``-row boolean array is written (whose fresh pages cost
    more than the pass on a Dask worker). Other labels go through :func:`indicator`.
    """

    def __init__(self, source, offset):
        self.source, self.offset = source, offset

    @classmethod
    def of(cls, raw, lookup):
        """The block's :class:`TwoGroups`, or None (not two numeric groups, or a label
        missing from ``lookup``: the general path handles the block)."""
        if len(lookup) != 2:
            return None
        arr = _numeric(raw)
        keys = sorted(lookup, key=lookup.get)
        if arr is not None and arr.dtype.kind in "iu" and all(
            isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_)
            for key in keys
        ) and keys[1] - keys[0] == 1:
            if arr.size and (arr.min() < keys[0] or arr.max() > keys[1]):
                return None  # an unseen label: the general path raises
            return cls(arr, keys[0])
        ind = indicator(raw, lookup)
        return None if ind is None else cls(ind, 0)

    @property
    def size(self):
        return self.source.shape[0]

    def values(self, rows, out):
        """The indicator (global codes 0 or 1) on ``rows`` (a slice or positions), written
        into ``out`` (floats for the sums, integers for lookups)."""
        np.copyto(out, self.source[rows], casting="unsafe")
        if self.offset:
            out -= self.offset
        return out

    def scaled(self, rows, factor, out):
        """``factor`` times the indicator on the slice ``rows``, into ``out`` (floats; the
        labels converted in the multiply)."""
        if self.offset:
            np.subtract(self.source[rows], self.offset, out=out, casting="unsafe")
            return np.multiply(out, factor, out=out)
        return np.multiply(self.source[rows], factor, out=out)

    def mask(self, rows, out):
        """The indicator on ``rows`` (a slice or positions) as booleans, into ``out``."""
        if self.source.dtype == bool:
            np.copyto(out, self.source[rows])
            return out
        return np.not_equal(self.source[rows], self.offset, out=out)

    def count(self):
        """Rows of group 1 (sub-block by sub-block: no row-sized temporary)."""
        if not self.offset:
            return float(np.count_nonzero(self.source))
        buf = scratch("count", bool)
        return float(sum(np.count_nonzero(self.mask(sl, buf[: sl.stop - sl.start]))
                         for sl in sub_blocks(self.size)))


#: This thread's scratch buffers of the two-group passes (``SUB`` elements each, by name and
#: dtype), kept from block to block: a Dask worker gives freed memory back to the system
#: at once (``MALLOC_TRIM_THRESHOLD_``), so buffers allocated per block would cost page
#: faults on every block. Only performance depends on them.
_SCRATCH = threading.local()


def recycled(shape, dtype=np.float64):
    """An array of ``shape`` and ``dtype`` for a block's output: one this thread returned
    before that nothing else holds any more, else a new one (see ``_SCRATCH``).

    A pass whose output is consumed block by block (``proba.sum()``, a write to
    storage) then reuses the pages of the previous block. An array still referenced
    (held by the worker, a view, a result) is never handed out again: Python's
    reference count, read under the GIL, says so. This thread keeps at most
    ``_RECYCLED`` of them.
    """
    pool = getattr(_SCRATCH, "outputs", None)
    if pool is None:
        pool = _SCRATCH.outputs = []
    shape, dtype = (shape,) if isinstance(shape, int) else tuple(shape), np.dtype(dtype)
    for arr in pool:
        # the references: the pool, ``arr`` and getrefcount's argument
        if arr.shape == shape and arr.dtype == dtype and sys.getrefcount(arr) == 3:
            return arr
    arr = np.empty(shape, dtype=dtype)
    if len(pool) >= _RECYCLED:
        pool.pop(0)  # still in use elsewhere: let it go
    pool.append(arr)
    return arr


#: Output arrays a thread keeps for :func:`recycled`.
_RECYCLED = 2


def scratch(name, dtype=np.float64, size=SUB):
    """This thread's buffer ``name`` of at least ``size`` elements of ``dtype`` (see
    ``_SCRATCH``). A function must not hand a buffer to another that asks for the same name."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = {}
    key = (name, np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = np.empty(max(size, SUB), dtype=dtype)
    return buf
