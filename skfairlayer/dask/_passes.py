"""The per-partition passes of the global exact projection (numpy in, small results out).

Each function runs on one partition and returns per-group aggregates (``O(k)``
numbers) plus at most a bounded number of rows; the ``merge_*`` functions
combine them up a tree. See :mod:`skfairlayer.dask._project` for the driver.
"""

import numpy as np

from ._blocks import (
    SUB,
    as_float,
    block_codes,
    global_codes,
    group_sums,
    indicator,
    indicator_sums,
    label_keys,
    sub_blocks,
    two_valued,
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
        total, s1 = indicator_sums(ind, s)  # one read of the scores, in cache
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
    keys = []
    index = {}
    for p in parts:
        for key in p["keys"]:
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
    k = len(keys)
    counts, sums = np.zeros(k), np.zeros(k)
    s, g, w, h = [], [], [], []
    offset = 0
    for p in parts:
        where = np.fromiter((index[key] for key in p["keys"]), dtype=np.intp,
                            count=len(p["keys"]))
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


def _flagged(s, g_raw, lookup, center, low, high):
    """Rows whose shifted score ``s - center_g`` is outside ``[low, high]``, and their codes.

    Two groups: ``s + (c_0 - c_1) f`` against ``[low + c_0, high + c_0]`` (``f``: the
    indicator of group 1, converted in the multiply), sub-block by sub-block, as the
    core's bracket pass; rows within rounding of an edge are classified exactly later.
    """
    ind = indicator(g_raw, lookup)
    if ind is None:
        codes = global_codes(g_raw, lookup)
        u = s - center[codes]
        idx = np.flatnonzero((u < low) | (u > high))
        return idx, codes[idx]
    d, lo, hi = center[0] - center[1], low + center[0], high + center[0]
    size = min(SUB, s.size)
    buf, below, above = np.empty(size), np.empty(size, dtype=bool), np.empty(size, dtype=bool)
    parts = []
    for sl in sub_blocks(s.size):
        m = sl.stop - sl.start
        t, x1, x2 = buf[:m], below[:m], above[:m]
        np.multiply(ind[sl], d, out=t)
        np.add(t, s[sl], out=t)
        np.less(t, lo, out=x1)
        np.greater(t, hi, out=x2)
        np.logical_or(x1, x2, out=x1)
        idx = np.flatnonzero(x1)
        parts.append(idx + sl.start if sl.start else idx)
    idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return idx, ind[idx].astype(np.intp)


def block_bracket(s_raw, g_raw, lookup, center, hh, lb, ub, cap, target):
    """A bracket pass: rows certain on the bracket aggregated, the uncertain ones extracted.

    A row of group ``g`` is free for every shift within ``hh[g]`` of ``center[g]``
    when ``lb + hh[g] <= s - center[g] <= ub - hh[g]``, at the top when
    ``s - center[g] >= ub + hh[g]``, at the bottom when ``<= lb - hh[g]``,
    uncertain otherwise. Rows well inside (for the widest ``hh``) are only
    counted by the driver (pass-1 sums less the others); the rest are
    classified here. At most ``cap`` uncertain rows are returned whole, else a
    stratified sample of ``target`` per group.
    """
    k = center.size
    s = as_float(s_raw)
    wide = float(hh.max())
    idx, go = _flagged(s, g_raw, lookup, center, lb + wide, ub - wide)
    so = s[idx]
    u = so - center[go]
    h = hh[go]
    at_top = u >= ub + h
    at_bot = u <= lb - h
    free = (u >= lb + h) & (u <= ub - h)
    unc = ~(at_top | at_bot | free)
    res = {
        "nout": np.bincount(go, minlength=k).astype(np.float64),
        "sout": np.bincount(go, weights=so, minlength=k),
        "nfree_x": np.bincount(go, weights=free, minlength=k),
        "sfree_x": np.bincount(go, weights=np.where(free, so, 0.0), minlength=k),
        "ntop": np.bincount(go, weights=at_top, minlength=k),
        "nbot": np.bincount(go, weights=at_bot, minlength=k),
        "nunc": np.bincount(go, weights=unc, minlength=k),
        "sunc": np.bincount(go[unc], weights=so[unc], minlength=k),
    }
    su, gu = so[unc], go[unc]
    if su.size <= cap:
        res.update(s=su, g=gu, w=np.ones(su.size), h=gu.copy(), n_strata=k, exact=True)
    else:
        counts = np.bincount(gu, minlength=k)
        rows, ws, hs = _sample(su.size, lambda i: gu[i], lambda g: gu == g, counts, target)
        res.update(s=su[rows], g=gu[rows], w=ws, h=hs, n_strata=k, exact=False)
    return res


def merge_bracket(parts):
    """Combine bracket-pass results (sums added, rows concatenated)."""
    res = {key: np.sum([p[key] for p in parts], axis=0)
           for key in ("nout", "sout", "nfree_x", "sfree_x", "ntop", "nbot", "nunc", "sunc")}
    offsets = np.cumsum([0] + [p["n_strata"] for p in parts])
    for key in ("s", "g", "w"):
        res[key] = np.concatenate([p[key] for p in parts])
    res["h"] = np.concatenate([p["h"] + off for p, off in zip(parts, offsets, strict=False)])
    res["n_strata"] = int(offsets[-1])
    res["exact"] = all(p["exact"] for p in parts)
    return res


def block_output(s_raw, g_raw, lookup, shifts, lb, ub):
    """The output pass: ``clip(s - shift_g, lb, ub)`` and its per-group verification sums.

    Two groups: sub-block by sub-block, the minimum, maximum and group sums taken
    while the sub-block is in cache (as the core's output pass).
    """
    s = as_float(s_raw)
    k = shifts.size
    ind = indicator(g_raw, lookup)
    if ind is None:
        codes = global_codes(g_raw, lookup)
        out = np.clip(s - shifts[codes], lb, ub)
        sums = group_sums(codes, out, k)
        lo = float(out.min()) if out.size else np.inf
        hi = float(out.max()) if out.size else -np.inf
        return out, {"sums": sums, "lo": lo, "hi": hi}
    out = np.empty(s.size)
    c0, d = shifts[0], shifts[0] - shifts[1]
    buf = np.empty(min(SUB, s.size))
    total = one = 0.0
    lo, hi = np.inf, -np.inf
    for sl in sub_blocks(s.size):
        m = sl.stop - sl.start
        o, f = out[sl], buf[:m]
        np.copyto(f, ind[sl])
        np.multiply(f, d, out=o)
        o += s[sl]
        o -= c0  # s - c0 - f (c1 - c0)
        np.clip(o, lb, ub, out=o)
        if m:
            total += float(o.sum())
            one += float(np.einsum("i,i->", f, o))
            lo, hi = np.minimum(lo, o.min()), np.maximum(hi, o.max())  # NaN propagates
    return out, {"sums": np.array([total - one, one]), "lo": float(lo), "hi": float(hi)}


def merge_output_stats(parts):
    """Combine the verification sums of the output pass."""
    return {"sums": np.sum([p["sums"] for p in parts], axis=0),
            "lo": min(p["lo"] for p in parts), "hi": max(p["hi"] for p in parts)}
