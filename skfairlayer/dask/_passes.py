"""The per-partition passes of the global exact projection (numpy in, small results out).

Each function runs on one partition and returns per-group aggregates (``O(k)``
numbers) plus at most a bounded number of rows; the ``merge_*`` functions
combine them up a tree. See :mod:`skfairlayer.dask._project` for the driver.
"""

import numpy as np

from .._numeric import MIN_SCALE, clip, dot, indicator_sums
from .._solvers._reduced import _row_states
from ..exceptions import SolverError
from ._blocks import (
    SUB,
    TwoGroups,
    as_float,
    block_codes,
    global_codes,
    group_sums,
    known_codes,
    label_keys,
    recycled,
    scratch,
    sub_blocks,
    two_valued,
    union_keys,
)


def _strided(idx, target):
    """Evenly spaced ``target`` (or all) of the positions ``idx``."""
    stride = max(1, -(-idx.size // max(target, 1)))
    return idx[stride // 2 :: stride] if stride > 1 else idx


def _check_finite(s, total=None):
    """Raise unless ``s`` is finite (``total``: its sum, when already taken)."""
    total = s.sum() if total is None else total
    if s.size and not np.isfinite(total) and not np.isfinite(s).all():
        raise ValueError(
            "scores contain NaN or infinite values. Every score must be a finite number."
        )


def _sample(n, codes_of, group_mask, counts, target):
    """Per group, an evenly spaced sample of ``target`` of its rows (all of a small group).

    Rows are first taken at one stride over the block (``codes_of(positions)``
    gives their groups); a group under-represented there is sampled from all
    its rows (``group_mask(g)``). Returns the positions, expansion weights (rows
    of the group per sampled row: they sum to its exact count) and stratum ids.
    """
    k = counts.size
    stride = max(1, n // (4 * target * max(k, 1)))
    pos = np.arange(stride // 2, n, stride)
    cs = codes_of(pos)
    picks, weights, strata = [], [], []
    for g in np.flatnonzero(counts):
        idx = pos[cs == g]
        if idx.size < min(target, counts[g]):
            idx = np.flatnonzero(group_mask(g))
        take = _strided(idx, target)
        picks.append(take)
        weights.append(np.full(take.size, counts[g] / take.size))
        strata.append(np.full(take.size, g, dtype=np.intp))
    if not picks:
        return np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0, dtype=np.intp)
    return np.concatenate(picks), np.concatenate(weights), np.concatenate(strata)


def _check_rows(m, n):
    if m != n:
        raise ValueError(
            "A partition of sensitive_features has a different number of rows than the "
            f"matching partition of the scores. Got {m} and {n} instead."
        )


def block_stats(s_raw, g_raw, target):
    """Pass 1: group labels, counts, sums of scores, and a stratified sample of rows."""
    s = as_float(s_raw)
    n = s.shape[0]
    two = two_valued(g_raw)
    if two is not None:
        labels, ind = two
        _check_rows(ind.shape[0], n)
        k = len(labels)
        n1 = float(np.count_nonzero(ind))
        total, s1 = indicator_sums(ind, s, scratch("indicator")[:SUB])  # one read, in cache
        _check_finite(s, total)
        if k == 1:
            s1 = 0.0
        counts = np.array([n - n1, n1][:k])
        sums = np.array([total - s1, s1][:k])

        def codes_of(idx):
            return ind[idx].astype(np.intp)

        def group_mask(g):
            return ind if g == 1 else ~ind
    else:
        _check_finite(s)
        codes, labels = block_codes(g_raw)
        _check_rows(codes.shape[0], n)
        k = len(labels)
        counts = np.bincount(codes, minlength=k).astype(np.float64)
        sums = group_sums(codes, s, k)

        def codes_of(idx):
            return codes[idx]

        def group_mask(g):
            return codes == g
    rows, ws, hs = _sample(n, codes_of, group_mask, counts, target)
    return {"keys": label_keys(labels), "counts": counts, "sums": sums,
            "s": s[rows], "g": codes_of(rows), "w": ws, "h": hs, "n_strata": k, "rows": n}


def merge_stats(parts):
    """Combine pass-1 results: union of labels, sums added, samples concatenated."""
    keys, wheres = union_keys(parts)
    k = len(keys)
    counts, sums = np.zeros(k), np.zeros(k)
    s, g, w, h = [], [], [], []
    offset = 0
    for p, where in zip(parts, wheres, strict=True):
        counts[where] += p["counts"]
        sums[where] += p["sums"]
        s.append(p["s"])
        g.append(where[p["g"]] if where.size else p["g"])
        w.append(p["w"])
        h.append(p["h"] + offset)
        offset += p["n_strata"]
    return {"keys": keys, "counts": counts, "sums": sums, "s": np.concatenate(s),
            "g": np.concatenate(g), "w": np.concatenate(w), "h": np.concatenate(h),
            "n_strata": offset, "rows": sum(p["rows"] for p in parts)}


def _states(so, go, center, hh, lb, ub, k):
    """Per group, the counts and score sums of the rows ``so`` (groups ``go``) in each state
    on the bracket (shape ``(4, k)``: uncertain, bottom, top, free) and which are uncertain.

    A row of group ``g`` is free for every shift within ``hh[g]`` of ``center[g]`` when
    ``lb + hh[g] <= s - center[g] <= ub - hh[g]``, at the top when ``>= ub + hh[g]``, at
    the bottom when ``<= lb - hh[g]``, uncertain otherwise.
    """
    bottom, top, free = _row_states(so - center[go], hh[go], lb, ub)
    state = bottom.view(np.uint8) + 2 * top + 3 * free  # 0: uncertain
    code = go * 4 + state
    n = np.bincount(code, minlength=4 * k).reshape(k, 4).T.astype(np.float64)
    t = np.bincount(code, weights=so, minlength=4 * k).reshape(k, 4).T
    return n, t, state == 0


def _classified(s, g_raw, lookup, center, hh, lb, ub):
    """Group counts and score sums of the block, the :func:`_states` aggregates of its rows
    outside the widest bracket's interior, and its uncertain rows (scores, codes); None when
    the block holds a label missing from ``lookup``.

    Rows inside ``[lb + max hh, ub - max hh]`` once shifted are free on the bracket (the
    caller counts them as the rest). Two groups: ``s + (c_0 - c_1) f`` against the interior
    shifted by ``c_0`` (``f``: the indicator of group 1 as floats), sub-block by sub-block,
    the sums taken and the rows outside classified while the sub-block is in cache (no
    array of the block's size is written).
    """
    k = center.size
    wide = float(hh.max())
    low, high = lb + wide, ub - wide
    two = TwoGroups.of(g_raw, lookup)
    if two is None:
        codes = known_codes(g_raw, lookup)
        if codes is None:
            return None
        _check_rows(codes.shape[0], s.shape[0])
        sums = group_sums(codes, s, k)
        _check_finite(s, sums.sum())
        u = s - center[codes]
        idx = np.flatnonzero((u < low) | (u > high))
        so, go = s[idx], codes[idx]
        n, t, unc = _states(so, go, center, hh, lb, ub, k)
        return np.bincount(codes, minlength=k).astype(np.float64), sums, n, t, so[unc], go[unc]
    _check_rows(two.size, s.shape[0])
    d, lo, hi = center[0] - center[1], low + center[0], high + center[0]
    f, buf = scratch("indicator"), scratch("shifted")
    below, above = scratch("below", bool), scratch("above", bool)
    outside, total, one = [], 0.0, 0.0
    scaled = abs(d) > MIN_SCALE  # group 1's sum against d f, else against f itself
    for sl in sub_blocks(s.size):
        m = sl.stop - sl.start
        x, x1, x2, ss = buf[:m], below[:m], above[:m], s[sl]
        two.scaled(sl, d, x)
        total += float(ss.sum())
        one += dot(x, ss) / d if scaled else dot(two.values(sl, f[:m]), ss)
        np.add(x, ss, out=x)
        np.less(x, lo, out=x1)
        np.greater(x, hi, out=x2)
        np.logical_or(x1, x2, out=x1)
        idx = np.flatnonzero(x1)
        idx += sl.start
        outside.append(idx)
    _check_finite(s, total)
    idx = np.concatenate(outside)  # few rows: classified once for the block
    so, go = s[idx], two.values(idx, np.empty(idx.size, dtype=np.intp))
    n, t, unc = _states(so, go, center, hh, lb, ub, k)
    n1 = two.count()
    return (np.array([s.size - n1, n1]), np.array([total - one, one]), n, t, so[unc], go[unc])


#: The per-group aggregates of a bracket pass, the rows of its ``summed`` array (one
#: array per result: partial results travel between workers as few buffers).
SUMMED = ("counts", "sums", "nout", "sout", "nfree_x", "sfree_x", "ntop", "nbot", "nunc",
          "sunc")


def _unseen(s_raw, g_raw, k, target):
    """The bracket-pass result of a block holding a label the pass did not know: its
    pass-1 statistics (labels, counts, sums, a stratified sample), nothing else."""
    return {"summed": np.zeros((len(SUMMED), k)), "s": np.zeros(0),
            "g": np.zeros(0, dtype=np.intp), "w": np.zeros(0), "h": np.zeros(0, dtype=np.intp),
            "runs": np.zeros((0, 2), dtype=np.int64), "n_strata": 0, "exact": True,
            "new": [block_stats(s_raw, g_raw, target)], "blocks": None}


def block_bracket(s_raw, g_raw, index, lookup, center, hh, lb, ub, cap, target, keep):
    """A bracket pass: group counts and sums, the rows certain on the bracket aggregated,
    the uncertain ones extracted.

    A row of group ``g`` is free for every shift within ``hh[g]`` of ``center[g]``
    when ``lb + hh[g] <= s - center[g] <= ub - hh[g]``, at the top when
    ``s - center[g] >= ub + hh[g]``, at the bottom when ``<= lb - hh[g]``,
    uncertain otherwise. Rows well inside (for the widest ``hh``) are counted as
    the group totals less the others; the rest are classified here. At most
    ``cap`` uncertain rows are returned whole (with ``index``, the block's
    position), else a stratified sample of ``target`` per group. ``keep``: also
    return the block's own free, top and bottom aggregates (``blocks``), from
    which the driver predicts the block's output sums. A block holding a label
    missing from ``lookup`` returns its statistics instead (``new``).
    """
    k = center.size
    s = as_float(s_raw)
    rows = _classified(s, g_raw, lookup, center, hh, lb, ub)
    if rows is None:
        return _unseen(s_raw, g_raw, k, target)
    counts, sums, n, t, su, gu = rows
    res = {"summed": np.stack([counts, sums, n.sum(axis=0), t.sum(axis=0), n[3], t[3], n[2],
                               n[1], n[0], t[0]]), "new": []}
    res["blocks"] = (np.array([index]), np.stack([
        counts - n[0] - n[1] - n[2], sums - t[0] - t[1] - t[2], n[2], n[1], counts])[None]
    ) if keep else None
    small = np.uint8 if k <= 256 else np.int32
    if su.size <= cap:  # every row: unit weights and strata by group, left implicit (w None)
        res.update(s=su, g=gu.astype(small), w=None, h=None, n_strata=k, exact=True)
    else:
        counts = np.bincount(gu, minlength=k)
        rows, ws, hs = _sample(su.size, lambda i: gu[i], lambda g: gu == g, counts, target)
        res.update(s=su[rows], g=gu[rows].astype(small), w=ws, h=hs, n_strata=k, exact=False)
    res["runs"] = np.array([[index, res["s"].size]])  # the block of the rows, run by run
    return res


def merge_bracket(parts):
    """Combine bracket-pass results (sums added, rows and per-block aggregates concatenated).

    Rows returned whole have unit weights and one stratum per group of their part; they
    travel without them (``w`` and ``h`` None) until a part with sampled rows joins them.
    """
    res = {"summed": np.sum([p["summed"] for p in parts], axis=0)}
    offsets = np.cumsum([0] + [p["n_strata"] for p in parts])
    for key in ("s", "g", "runs"):
        res[key] = np.concatenate([p[key] for p in parts])
    if all(p["w"] is None for p in parts):
        res["w"] = res["h"] = None
    else:
        res["w"] = np.concatenate([np.ones(p["s"].size) if p["w"] is None else p["w"]
                                   for p in parts])
        res["h"] = np.concatenate([(p["g"] if p["h"] is None else p["h"]).astype(np.intp) + off
                                   for p, off in zip(parts, offsets, strict=False)])
    res["n_strata"] = int(offsets[-1])
    res["exact"] = all(p["exact"] for p in parts)
    res["new"] = [x for p in parts for x in p["new"]]
    kept = [p["blocks"] for p in parts if p["blocks"] is not None]
    res["blocks"] = (np.concatenate([b[0] for b in kept]),
                     np.concatenate([b[1] for b in kept])) if kept else None
    return res


def block_output(s_raw, g_raw, lookup, shifts, lb, ub):
    """The output pass: ``clip(s - shift_g, lb, ub)`` and its per-group verification sums.

    Two groups: sub-block by sub-block, the group sums taken while the sub-block is
    in cache (as the core's output pass); the clip puts every output within the
    bounds, so the range reported is the bounds' (NaN if a sum is: a NaN output; at
    an open end, the outputs' own extreme).
    """
    s = as_float(s_raw)
    k = shifts.size
    two = TwoGroups.of(g_raw, lookup)
    if two is None:
        codes = global_codes(g_raw, lookup)
        out = np.clip(s - shifts[codes], lb, ub)
        sums = group_sums(codes, out, k)
        lo = float(out.min()) if out.size else np.inf
        hi = float(out.max()) if out.size else -np.inf
        return out, {"sums": sums, "lo": lo, "hi": hi}
    _check_rows(two.size, s.shape[0])
    out = recycled(s.size)
    c0, d = shifts[0], shifts[0] - shifts[1]
    f, buf = scratch("indicator"), scratch("shifted")
    scaled = abs(d) > MIN_SCALE  # group 1's sum against d f, else against f itself
    total = one = 0.0
    for sl in sub_blocks(s.size):
        m = sl.stop - sl.start
        o, t = out[sl], two.scaled(sl, d, buf[:m])
        np.add(t, s[sl], out=o)
        o -= c0  # s - c0 - f (c1 - c0)
        clip(o, lb, ub, out=o)
        if m:
            total += float(o.sum())
            one += dot(t, o) / d if scaled else dot(two.values(sl, f[:m]), o)
    if not s.size:
        lo, hi = np.inf, -np.inf
    elif not np.isfinite(total + one):
        lo, hi = np.nan, np.nan
    else:  # within the bounds by the clip; at an open end the outputs' own extreme
        lo = float(lb) if np.isfinite(lb) else float(out.min())
        hi = float(ub) if np.isfinite(ub) else float(out.max())
    return out, {"sums": np.array([total - one, one]), "lo": lo, "hi": hi}


def merge_output_stats(parts):
    """Combine the verification sums of the output pass."""
    return {"sums": np.sum([p["sums"] for p in parts], axis=0),
            # numpy's min and max propagate NaN (the built-ins drop it after a number)
            "lo": float(np.min([p["lo"] for p in parts])),
            "hi": float(np.max([p["hi"] for p in parts]))}


def block_output_checked(s_raw, g_raw, expected, lookup, shifts, lb, ub, slack):
    """The output block, released only if it meets the bounds and its group sums match.

    ``expected``: the block's per-group output sums predicted by the driver from the
    certifying bracket pass (row 0) and its rows per group (row 1), or None (one group:
    only the bounds are checked). The sums must agree to ``slack`` per row; the driver
    has checked that the predicted sums meet parity on the whole collection.
    """
    out, stats = block_output(s_raw, g_raw, lookup, shifts, lb, ub)
    if out.size and not (stats["lo"] >= lb and stats["hi"] <= ub):
        raise SolverError(
            f"The global exact solver returned outputs outside the bounds [{lb}, {ub}] (or "
            f"non-finite) in a partition: [{stats['lo']:.6g}, {stats['hi']:.6g}]. This is a bug; "
            "please report it."
        )
    if expected is not None:
        # the two sides differ by rounding too: a sum is taken over the whole block and
        # one group's part of it subtracted (about eps * rows * |bound| at worst; at an
        # open end, the largest output instead of the bound)
        scale = (max(abs(lb), abs(ub)) if np.isfinite(lb) and np.isfinite(ub) else
                 max(abs(stats["lo"]), abs(stats["hi"])) if out.size else 0.0)
        rounding = 64 * np.finfo(np.float64).eps * max(scale, 1.0) * out.size
        diff = np.abs(stats["sums"] - expected[0])
        if not np.all(diff <= slack * expected[1] + rounding):
            raise SolverError(
                "An output partition does not match the certified solution: its group sums "
                f"differ from the predicted ones by up to {float(np.max(diff)):.3g}, more than "
                f"{slack:g} per row (the data changed between passes, or a bug: please report "
                "it)."
            )
    return out
