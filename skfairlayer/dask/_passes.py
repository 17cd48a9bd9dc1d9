"""The per-partition passes of the global exact projection (numpy in, small results out).

Each function runs on one partition and returns per-group aggregates (``O(k)``
numbers) plus at most a bounded number of rows; the ``merge_*`` functions
combine them up a tree. See :mod:`skfairlayer.dask._project` for the driver.
"""

import numpy as np

from ._blocks import as_float, block_codes, global_codes, group_sums, label_keys


def _strided(idx, target):
    """Evenly spaced ``target`` (or all) of the positions ``idx``."""
    stride = max(1, -(-idx.size // max(target, 1)))
    return idx[stride // 2 :: stride] if stride > 1 else idx


def _check_finite(s):
    if s.size and not np.isfinite(s).all():
        raise ValueError(
            "scores contain NaN or infinite values. Every score must be a finite number."
        )


def _stratified(s, codes, chosen, k, target):
    """Per group of the rows ``chosen``, an evenly spaced sample of ``target`` rows.

    Returns the sampled scores, codes, expansion weights (rows of the stratum per
    sampled row: the sample sums to the stratum's exact count) and stratum ids.
    """
    cs = codes[chosen] if chosen is not None else codes
    counts = np.bincount(cs, minlength=k)
    picks, weights, strata = [], [], []
    order = np.argsort(cs, kind="stable") if k > 1 else np.arange(cs.size)
    starts = np.concatenate(([0], np.cumsum(counts)))
    for g in np.flatnonzero(counts):
        idx = order[starts[g] : starts[g + 1]]
        take = _strided(idx, target)
        picks.append(take)
        weights.append(np.full(take.size, counts[g] / take.size))
        strata.append(np.full(take.size, g, dtype=np.intp))
    if not picks:
        empty = np.zeros(0)
        return empty, np.zeros(0, dtype=np.intp), empty, np.zeros(0, dtype=np.intp)
    take = np.concatenate(picks)
    rows = chosen[take] if chosen is not None else take
    return s[rows], codes[rows], np.concatenate(weights), np.concatenate(strata)


def block_stats(s_raw, g_raw, target):
    """Pass 1: group labels, counts, sums of scores, and a stratified sample of rows."""
    s = as_float(s_raw)
    _check_finite(s)
    codes, labels = block_codes(g_raw)
    if codes.shape[0] != s.shape[0]:
        raise ValueError(
            "A partition of sensitive_features has a different number of rows than the "
            f"matching partition of the scores. Got {codes.shape[0]} and {s.shape[0]} instead."
        )
    k = len(labels)
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    sums = group_sums(codes, s, k)
    ss, gs, ws, hs = _stratified(s, codes, None, k, target)
    return {"keys": label_keys(labels), "counts": counts, "sums": sums,
            "s": ss, "g": gs, "w": ws, "h": hs, "n_strata": k, "rows": s.shape[0]}


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


def block_bracket(s_raw, g_raw, lookup, bracket, cap, target):
    """A bracket pass: rows certain on the bracket aggregated, the uncertain ones extracted.

    ``bracket`` holds per-group thresholds on ``s``: a row of group ``g`` is free
    between ``free_lo[g]`` and ``free_hi[g]``, at the top from ``top[g]``, at the
    bottom up to ``bot[g]``, uncertain otherwise. At most ``cap`` uncertain rows are
    returned whole; above that, a stratified sample of ``target`` per group.
    """
    free_lo, free_hi, top, bot = bracket
    k = free_lo.size
    s = as_float(s_raw)
    codes = global_codes(g_raw, lookup)
    lo, hi = free_lo[codes], free_hi[codes]
    free = (s >= lo) & (s <= hi)
    out = np.flatnonzero(~free)
    so, go = s[out], codes[out]
    at_top = so >= top[go]
    at_bot = so <= bot[go]
    unc = ~(at_top | at_bot)
    res = {
        "nfree": np.bincount(codes, weights=free, minlength=k),
        "sfree": group_sums(codes, np.where(free, s, 0.0), k),
        "ntop": np.bincount(go, weights=at_top, minlength=k),
        "nbot": np.bincount(go, weights=at_bot, minlength=k),
        "nunc": np.bincount(go, weights=unc, minlength=k),
        "sunc": np.bincount(go[unc], weights=so[unc], minlength=k),
    }
    su, gu = so[unc], go[unc]
    if su.size <= cap:
        res.update(s=su, g=gu, w=np.ones(su.size), h=gu.copy(), n_strata=k, exact=True)
    else:
        ss, gs, ws, hs = _stratified(su, gu, None, k, target)
        res.update(s=ss, g=gs, w=ws, h=hs, n_strata=k, exact=False)
    return res


def merge_bracket(parts):
    """Combine bracket-pass results (sums added, rows concatenated)."""
    res = {key: np.sum([p[key] for p in parts], axis=0)
           for key in ("nfree", "sfree", "ntop", "nbot", "nunc", "sunc")}
    offsets = np.cumsum([0] + [p["n_strata"] for p in parts])
    for key in ("s", "g", "w"):
        res[key] = np.concatenate([p[key] for p in parts])
    res["h"] = np.concatenate([p["h"] + off for p, off in zip(parts, offsets, strict=False)])
    res["n_strata"] = int(offsets[-1])
    res["exact"] = all(p["exact"] for p in parts)
    return res


def block_output(s_raw, g_raw, lookup, shifts, lb, ub):
    """The output pass: ``clip(s - shift_g, lb, ub)`` and its per-group verification sums."""
    s = as_float(s_raw)
    codes = global_codes(g_raw, lookup)
    out = np.clip(s - shifts[codes], lb, ub)
    k = shifts.size
    stats = {
        "sums": group_sums(codes, out, k),
        "lo": float(out.min()) if out.size else np.inf,
        "hi": float(out.max()) if out.size else -np.inf,
    }
    return out, stats


def merge_output_stats(parts):
    """Combine the verification sums of the output pass."""
    return {"sums": np.sum([p["sums"] for p in parts], axis=0),
            "lo": min(p["lo"] for p in parts), "hi": max(p["hi"] for p in parts)}
