"""Pooled primal-dual with a common centre: parity of weighted group means on the simplex.

Serves demographic parity (binary or multiclass outputs) and plug-in equal
opportunity (one conditioning class), over one grouping (intersectional) or
several (marginal). Per row: the centre moves, then the proposal is projected
onto a box intersected with the simplex (:func:`project_box_simplex`).
Decisions round a fractional virtual stream by the largest deficit of the
row's cell. Invariant, step and certificate: docs/user_guide/streaming.rst.
"""

import math

import numpy as np

from .._validation import check_tolerance
from ._pooled import DEFAULT_STEP, MARGIN_ROWS, PRIOR_ROWS, decompose_shifts
from ._report import SLACK_SCALE, StreamReport

__all__ = ["CENTER_MARGIN", "PooledFamilies", "project_box_simplex"]

#: ``delta / epsilon``: margin of the common centre.
CENTER_MARGIN = 0.25
#: The per-block state lists (copied one level deep for a batch's working state).
_BLOCK_STATE = ("weights", "squares", "slacks", "counts", "cells", "sums", "served")

def project_box_simplex(v, lower, upper):
    """Euclidean projection of ``v`` onto ``{p : sum(p) = 1, lower <= p <= upper}``.

    The solution is ``clip(v - tau, lower, upper)``; ``tau`` is found by one
    sweep over the sorted breakpoints ``v - upper`` and ``v - lower``. The
    bounds are intersected with ``[0, 1]``; the set must not be empty (beyond
    rounding, which is repaired: the result then meets the bounds up to
    rounding).

    Parameters
    ----------
    v : array-like of shape (n_classes,)
        Point to project.
    lower, upper : array-like of shape (n_classes,)
        Box bounds.

    Returns
    -------
    p : ndarray of shape (n_classes,)
        ``p >= 0`` within the bounds, summing to one (to rounding).

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._stream import project_box_simplex
    >>> project_box_simplex([0.7, 0.2, 0.1], [0.0, 0.0, 0.2], [0.5, 1.0, 1.0])
    array([0.5, 0.3, 0.2])
    """
    v = [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
    lo = [float(x) for x in np.asarray(lower, dtype=np.float64).ravel()]
    hi = [float(x) for x in np.asarray(upper, dtype=np.float64).ravel()]
    return np.array(_box_simplex(v, lo, hi))


def _box_simplex(v, lo, hi):
    """:func:`project_box_simplex` on Python lists (the per-row path)."""
    lo = [x if x > 0.0 else 0.0 for x in lo]
    hi = [x if x < 1.0 else 1.0 for x in hi]
    for c in range(len(v)):
        if lo[c] > hi[c]:  # rounding-level inconsistency: meet in the middle
            lo[c] = hi[c] = 0.5 * (lo[c] + hi[c])
    s_lo, s_hi = math.fsum(lo), math.fsum(hi)
    if s_lo >= 1.0:
        return [x / s_lo for x in lo]
    if s_hi <= 1.0:
        return [x / s_hi for x in hi]
    return _sweep(v, lo, hi)



def _simplex(v):
    """The projection of ``v`` onto the probability simplex (the box ``[0, 1]``)."""
    k = len(v)
    return _box_simplex(v, [0.0] * k, [1.0] * k)


def _in_box(v, lo, hi):
    """The projection of ``v`` onto the simplex within a box inside ``[0, 1]``, or None.

    None when the box misses the simplex (exact comparisons, as a row's box
    is judged before it is served).
    """
    if len(lo) == 2:  # one addition is correctly rounded, as fsum
        if lo[0] > hi[0] or lo[1] > hi[1]:
            return None
        s_lo, s_hi = lo[0] + lo[1], hi[0] + hi[1]
    else:
        for a, b in zip(lo, hi, strict=True):
            if a > b:
                return None
        s_lo, s_hi = math.fsum(lo), math.fsum(hi)
    if not s_lo <= 1.0 <= s_hi:
        return None
    if s_lo == 1.0 or s_hi == 1.0:  # the box touches the simplex at one corner
        return list(lo) if s_lo == 1.0 else list(hi)
    return _sweep(v, lo, hi)


def _sweep(v, lo, hi):
    """``clip(v - tau, lo, hi)`` summing to one, for a box whose sums straddle one."""
    k = len(v)
    if k == 2:  # the segment p = (1 - x, x): clip the unconstrained x to it
        x = min(max(0.5 * (v[1] - v[0] + 1.0), lo[1], 1.0 - hi[0]), hi[1], 1.0 - lo[0])
        return [min(max(1.0 - x, lo[0]), hi[0]), x]  # 1 - x rounds: keep it in its bounds
    tau = (math.fsum(v) - 1.0) / k  # every coordinate free: the common case
    p = [x - tau for x in v]
    for a, x, b in zip(lo, p, hi, strict=True):
        if not a <= x <= b:
            break
    else:
        return _unit_sum(p, lo, hi)
    # f(tau) = sum clip(v - tau, lo, hi) falls from sum(hi) to sum(lo); coordinate c is
    # free (slope -1) between the breakpoints v_c - hi_c and v_c - lo_c.
    events = sorted([(v[c] - hi[c], 1) for c in range(k)] + [(v[c] - lo[c], -1) for c in range(k)])
    f, free, prev = math.fsum(hi), 0, events[0][0]
    tau = events[-1][0]
    for t, change in events:
        f_t = f - free * (t - prev)
        if f_t <= 1.0 and free:
            tau = prev + (f - 1.0) / free
            break
        f, prev, free = f_t, t, free + change
    return _unit_sum([min(max(v[c] - tau, lo[c]), hi[c]) for c in range(k)], lo, hi)


def _unit_sum(p, lo, hi):
    """``p`` with its rounding residual ``1 - sum(p)`` on the coordinate with most room."""
    r = 1.0 - math.fsum(p)
    if r != 0.0:
        k = len(p)
        room = [hi[c] - p[c] for c in range(k)] if r > 0 else [p[c] - lo[c] for c in range(k)]
        j = room.index(max(room))
        p[j] = min(max(p[j] + r, lo[j]), hi[j])
    return p


def _next_slack(weight, slack, new_weight, tolerance, delta, rounding=0.0, lowest=0.0,
                effective=None):
    """``b(W')`` of a group: the target, and the floor ``W' (delta + b') >= W (delta + b)``.

    The target is ``(c_b / sqrt(n_eff) - epsilon)_+``, a few standard errors of
    a weighted mean of effective size ``n_eff = W'^2 / sum w^2`` (``effective``;
    ``W'`` when ``None``, as for unit weights). ``rounding`` (decisions: ``D``
    times the cells a group can span) is taken off the target, so that the
    certificate's ``b + D cells / W`` follows the target; ``lowest`` is ``0``
    for probabilities and ``-delta`` for the virtual stream of decisions. Only
    the floor matters for the guarantee; the target may be anything.
    """
    n_eff = new_weight if effective is None else effective
    target = max(SLACK_SCALE / math.sqrt(n_eff) - tolerance, 0.0) - rounding / new_weight
    if weight > 0.0:
        target = max(target, weight * (delta + slack) / new_weight - delta)
    return max(target, lowest)


def _top_two(values):
    if values.size < 2:
        return 0.0
    part = np.partition(values, values.size - 2)
    return float(part[-1] + part[-2])


def _squeeze(items, single_block, single_column=False):
    if single_column:
        items = [x[..., 0] if x.ndim and x.shape[-1] == 1 else x for x in items]
    return items[0] if single_block else items



class PooledFamilies:
    """Pooled primal-dual with a common centre: parity of weighted group means on the simplex.

    Serves demographic parity (binary or multiclass outputs) and plug-in equal
    opportunity (one conditioning class), over one block of groups
    (intersectional) or several (marginal). See the user guide for the
    invariant, the step and the certificate (user guide). The per-row work is on Python
    lists (small groups and classes: faster than numpy); the state pickles as
    float64 arrays.

    Parameters
    ----------
    tolerance : float
        The parity tolerance ``epsilon``.
    n_classes : int
        Number of output columns ``K`` (2 for binary outputs).
    binary : bool
        Whether scores are 1-D positive-class probabilities (the shift then
        moves the positive column down and the negative one up, ``p =
        clip(s - nu)``).
    columns : sequence of int
        Constrained output columns (binary: ``(1,)``).
    group_sizes : sequence of int
        Number of groups of each block.
    weight_class : int or None
        Class whose base posterior weighs each row (plug-in equal
        opportunity); ``None``: every row weighs one.
    coefs : list of ndarray of shape (n_groups_j, n_columns)
        Fitted plug-in shift coefficients (a row moves by ``w * coef``).
    offsets : list of ndarray of shape (n_groups_j, n_classes)
        Fitted decision offsets (a row takes ``argmax(S - sum_j offsets)``).
    shares : list of ndarray of shape (n_groups_j,)
        Fitted weighted group shares (pseudo-counts of the duals).
    output : {"proba", "decisions"}, default="proba"
        What the stream serves.
    step : float, default=0.02
        Dual step ``eta``.
    """

    algorithm = "pooled"

    def __init__(self, tolerance, *, n_classes, binary, columns, group_sizes, weight_class,
                 coefs, offsets, shares, output="proba", step=DEFAULT_STEP["pooled"]):
        self.tolerance = check_tolerance(tolerance)
        self.delta = CENTER_MARGIN * self.tolerance
        self.output = output
        self.eta = float(step)
        self.n_classes = int(n_classes)
        self.binary = bool(binary)
        self.columns = [int(c) for c in columns]
        self.group_sizes = [int(k) for k in group_sizes]
        self.weight_class = None if weight_class is None else int(weight_class)
        m, K = len(self.columns), self.n_classes
        self.coefs = [np.asarray(c, dtype=np.float64).reshape(k, m).tolist()
                      for c, k in zip(coefs, self.group_sizes, strict=True)]
        self.offsets = [np.asarray(o, dtype=np.float64).reshape(k, K).tolist()
                        for o, k in zip(offsets, self.group_sizes, strict=True)]
        self.shares = [np.asarray(s, dtype=np.float64).reshape(k).tolist()
                       for s, k in zip(shares, self.group_sizes, strict=True)]
        self._start_duals()
        # Rounding of decisions: deficit bound D per cell, and the most cells a group spans.
        k_total = math.prod(self.group_sizes)
        self.rounding = (K - 1) ** 2 / K
        self.max_cells = max(k_total // k for k in self.group_sizes)
        self.reset()

    @property
    def decisions(self):
        return self.output == "decisions"

    def _start_duals(self):
        """The fitted starting point as pairwise prior duals plus a per-column offset.

        As in the binary algorithm (:func:`decompose_shifts`): the fitted shifts
        are reproduced at the start, follow drifting group counts without
        moving the overall level, and wear off as the stream's duals take over.
        Probabilities start from the plug-in coefficients; decisions of
        unit-weight criteria from the decision offsets (binary: ``off_1 -
        off_0``), those of weighted criteria keep their fitted offsets fixed.
        """
        K, cols = self.n_classes, self.columns
        offsets = [np.asarray(o) for o in self.offsets]
        self.fixed = [np.zeros((k, K)) for k in self.group_sizes]
        if not self.decisions:
            base = [np.asarray(c) for c in self.coefs]
        elif self.weight_class is not None:
            base = [np.zeros((k, len(cols))) for k in self.group_sizes]
            self.fixed = offsets
        elif self.binary:
            base = [(o[:, 1] - o[:, 0])[:, None] for o in offsets]
        else:
            base = [o[:, cols] for o in offsets]
            for fixed, o in zip(self.fixed, offsets, strict=True):
                free = [c for c in range(K) if c not in cols]
                fixed[:, free] = o[:, free]
        self.fixed = [f.tolist() for f in self.fixed]
        self.prior, self.prior_offset = [], []
        for b, shares in zip(base, self.shares, strict=True):
            shares = np.asarray(shares)
            total = shares.sum()
            if total > 0:
                parts = [decompose_shifts(b[:, c], shares / total) for c in range(len(cols))]
            else:
                parts = [(np.zeros((b.shape[0],) * 2), 0.0) for _ in cols]
            self.prior.append([d.tolist() for d, _ in parts])
            self.prior_offset.append([float(o) for _, o in parts])

    def reset(self):
        """Forget everything served; keep the fitted starting point."""
        m, K = len(self.columns), self.n_classes
        self.weights = [[0.0] * k for k in self.group_sizes]
        self.squares = [[0.0] * k for k in self.group_sizes]  # sum of squared row weights
        self.sums = [[[0.0] * m for _ in range(k)] for k in self.group_sizes]  # (virtual) sums
        self.slacks = [[math.inf] * k for k in self.group_sizes]
        self.counts = [[0] * k for k in self.group_sizes]
        self.served = [[[0.0] * m for _ in range(k)] for k in self.group_sizes]  # decisions
        self.cells = [[0] * k for k in self.group_sizes]
        self.cell_index = {}
        self.cell_errors = []
        self.center = [1.0 / K] * K
        self.n_served = 0
        self.n_adjusted = 0

    # -- per-row pieces --------------------------------------------------------
    @staticmethod
    def _means(weights, sums):
        return [[x / w for x in s] if w > 0.0 else None for w, s in zip(weights, sums, strict=True)]

    def _dual_shift(self, j, a, weights, squares, means, shift):
        """Add the duals' shift coefficient of block ``j`` for a row of group ``a`` to ``shift``.

        ``u_ah = max(0, prior_ah + eta (n_ah (m_a - m_h - epsilon) + H))`` for
        served pairs (the prior alone otherwise); the margin ``H`` is in rows,
        scaled by ``sum w^2 / W`` (1 for unit weights) so that weighted means
        aim ``H / n_eff`` inside the band.
        """
        eps, eta = self.tolerance, self.eta
        shares, prior = self.shares[j], self.prior[j]
        m_a = means[a]
        e_a = weights[a] + PRIOR_ROWS * shares[a]
        rho_a = squares[a] / weights[a] if m_a is not None else 0.0
        for c, x in enumerate(self.prior_offset[j]):
            shift[c] += x
        for h, m_h in enumerate(means):
            if h == a:
                continue
            e_h = weights[h] + PRIOR_ROWS * shares[h]
            total = e_a + e_h
            if total <= 0.0:
                continue
            frac = e_h / total
            if m_a is None or m_h is None:
                for c in range(len(shift)):
                    shift[c] += (prior[c][a][h] - prior[c][h][a]) * frac
                continue
            n = e_a * e_h / total
            margin = min(MARGIN_ROWS * 0.5 * (rho_a + squares[h] / weights[h]), n * eps)
            for c, (x, y) in enumerate(zip(m_a, m_h, strict=True)):
                up = prior[c][a][h] + eta * (n * (x - y - eps) + margin)
                down = prior[c][h][a] + eta * (n * (y - x - eps) + margin)
                shift[c] += ((up if up > 0.0 else 0.0) - (down if down > 0.0 else 0.0)) * frac

    def _state(self):
        """Working copy of the state (a batch is committed only when it succeeds).

        Each block's lists are copied; the rows of ``sums``, ``served`` and
        ``cell_errors`` and the centre are replaced, never changed in place, so
        they are shared.
        """
        st = {name: list(map(list, getattr(self, name))) for name in _BLOCK_STATE}
        st["cell_errors"] = list(self.cell_errors)
        st["cell_index"] = dict(self.cell_index)
        st["center"] = self.center
        return st

    def step(self, scores, codes):
        """Serve a batch row by row; return the outputs and the new state (not applied).

        ``scores`` is of shape (n,) (binary) or (n, K); ``codes`` of shape (n,
        n_blocks) (validated by the caller).
        """
        st = self._state()
        out = []
        adjusted = 0
        for score, groups in zip(scores.tolist(), codes.tolist(), strict=True):
            value, changed = self._served(st, score, groups)
            out.append(value)
            adjusted += changed
        if self.decisions:
            return np.array(out, dtype=np.int64), (st, adjusted)
        return np.array(out, dtype=np.float64), (st, adjusted)

    def step_one(self, score, code):
        """:meth:`step` of one row given as Python numbers (one block); returns its output:
        a probability (binary), a list of them, or a class index."""
        st = self._state()
        value, changed = self._served(st, score, [code])
        return value, (st, int(changed))

    def _served(self, st, score, groups):
        """One row given as Python numbers (binary: the probability of class 1; else a
        list): its weight (the plug-in posterior of ``weight_class`` clipped to ``[0, 1]``,
        else 1) and its row on the simplex, served by :meth:`_row`."""
        wc = self.weight_class
        if wc is None:
            w = 1.0
        else:
            x = (score if wc == 1 else 1.0 - score) if self.binary else score[wc]
            w = min(max(x, 0.0), 1.0)
        row = [1.0 - score, score] if self.binary else score  # _row copies it
        return self._row(st, row, groups, w)

    def _row(self, st, row, groups, w):
        """Serve one row: proposal, centre, the row's box, then the update (and rounding)."""
        blocks = []
        shift = [0.0] * len(self.columns)
        for j, a in enumerate(groups):
            weights, sums, squares = st["weights"][j], st["sums"][j], st["squares"][j]
            means = self._means(weights, sums)
            self._dual_shift(j, a, weights, squares, means, shift)
            blocks.append((a, weights, sums, st["slacks"][j], means, squares))
        v, proposed = self._proposal(row, groups, w, shift)
        for j, a in enumerate(groups):
            st["counts"][j][a] += 1
        if w <= 0.0:  # the row is in no statistic
            if self.decisions:
                return proposed, False
            p = _simplex(v)
            return (p[1] if self.binary else p), False
        center = self._center(st["center"], blocks, v)
        lower, upper, updates = self._row_box(blocks, center, w)
        # Otherwise rounding-level (tiny weights): the reference row is feasible exactly.
        p = _in_box(v, lower, upper)
        if p is None:
            p = list(center)
        cols = self.columns
        for (a, weights, sums, slacks, _, squares), (b_new, w_new) in zip(
            blocks, updates, strict=True
        ):
            sums[a] = [x + w * p[col] for x, col in zip(sums[a], cols, strict=True)]
            weights[a] = w_new
            squares[a] += w * w
            slacks[a] = b_new
        st["center"] = center
        if not self.decisions:
            for x, lo, hi in zip(p, lower, upper, strict=True):
                if (x == lo and lo > 0.0) or (x == hi and hi < 1.0):
                    # A safeguard bound is active: compare with the unconstrained projection.
                    free = _simplex(v)
                    changed = any(abs(x - y) > 1e-12 for x, y in zip(p, free, strict=True))
                    return (p[1] if self.binary else p), changed
            return (p[1] if self.binary else p), False
        return self._round(st, p, groups, w, proposed)

    def _proposal(self, row, groups, w, shift):
        """The proposal ``s - w nu`` (binary: ``p = clip(s - nu)``), or the proposed class.

        Returns the row to project (decisions: the proposed vertex) and the
        proposed class (``None`` for probabilities). Binary decisions: class 1
        on ties (the ``s >= threshold`` rule).
        """
        cols = self.columns
        if self.decisions:
            values = list(row)
            for j, a in enumerate(groups):
                for c, o in enumerate(self.fixed[j][a]):
                    values[c] -= o
            for c, x in zip(cols, shift, strict=True):
                values[c] -= w * x
            if self.binary:
                proposed = 1 if values[1] >= values[0] else 0
            else:
                proposed = values.index(max(values))
            v = [0.0] * self.n_classes
            v[proposed] = 1.0
            return v, proposed
        v = list(row)
        if self.binary:
            v[1] -= w * shift[0]
            v[0] += w * shift[0]
        else:
            for c, x in zip(cols, shift, strict=True):
                v[c] -= w * x
        return v, None

    def _center(self, center, blocks, v):
        """Step 1: the midpoints of the group means, projected onto Delta ∩ (I2)."""
        eps, delta, cols = self.tolerance, self.delta, self.columns
        m, K = len(cols), self.n_classes
        inf = math.inf
        lo_mu, hi_mu = [-inf] * m, [inf] * m
        low, high = [inf] * m, [-inf] * m
        served_any = False
        for _, _, _, slacks, means, _ in blocks:
            for m_g, b_g in zip(means, slacks, strict=True):
                if m_g is None:
                    continue
                served_any = True
                r = eps - delta + b_g
                for c, x in enumerate(m_g):
                    if x - r > lo_mu[c]:
                        lo_mu[c] = x - r
                    if x + r < hi_mu[c]:
                        hi_mu[c] = x + r
                    if x < low[c]:
                        low[c] = x
                    if x > high[c]:
                        high[c] = x
        if not served_any:
            return _simplex(v)
        target, lower, upper = list(center), [0.0] * K, [1.0] * K
        for c, col in enumerate(cols):
            target[col] = 0.5 * (low[c] + high[c])
            lower[col] = max(lo_mu[c], 0.0)
            upper[col] = min(hi_mu[c], 1.0)
        p = _in_box(target, lower, upper)
        return center if p is None else p  # None: rounding-level, the centre is in the set

    def _row_box(self, blocks, center, w):
        """Step 2: the row's box, (I1) and (I2) after serving it, in every block."""
        eps, delta, cols, K = self.tolerance, self.delta, self.columns, self.n_classes
        lower, upper = [0.0] * K, [1.0] * K
        lowest = -delta if self.decisions else 0.0
        rounding = self.rounding * self.max_cells if self.decisions else 0.0
        updates = []
        for a, weights, sums, slacks, means, squares in blocks:
            w_a = weights[a]
            w_new = w_a + w
            n_eff = w_new * w_new / (squares[a] + w * w)
            b_new = _next_slack(w_a, slacks[a], w_new, eps, delta, rounding, lowest, n_eff)
            updates.append((b_new, w_new))
            radius = eps - delta + b_new
            lo = [center[col] - radius for col in cols]
            hi = [center[col] + radius for col in cols]
            for h, (m_h, b_h) in enumerate(zip(means, slacks, strict=True)):
                if h == a or m_h is None:
                    continue
                for c, x in enumerate(m_h):
                    if x - b_h - eps - b_new > lo[c]:
                        lo[c] = x - b_h - eps - b_new
                    if x + b_h + eps + b_new < hi[c]:
                        hi[c] = x + b_h + eps + b_new
            s_a = sums[a]
            for c, col in enumerate(cols):
                bound = (lo[c] * w_new - s_a[c]) / w
                if bound > lower[col]:
                    lower[col] = bound
                bound = (hi[c] * w_new - s_a[c]) / w
                if bound < upper[col]:
                    upper[col] = bound
        return lower, upper, updates

    def _round(self, st, p, groups, w, proposed):
        """Decisions: round the virtual row by the largest deficit of the row's cell."""
        cols = self.columns
        key = 0
        for a, k in zip(groups, self.group_sizes, strict=True):
            key = key * k + a
        cell = st["cell_index"].get(key)
        if cell is None:
            cell = st["cell_index"][key] = len(st["cell_errors"])
            st["cell_errors"].append([0.0] * self.n_classes)
            for j, a in enumerate(groups):
                st["cells"][j][a] += 1
        deficit = [e + w * x for e, x in zip(st["cell_errors"][cell], p, strict=True)]
        best = max(deficit)
        y = proposed if deficit[proposed] >= best else deficit.index(best)
        deficit[y] -= w
        st["cell_errors"][cell] = deficit
        if y in cols:
            c = cols.index(y)
            for served, a in zip(st["served"], groups, strict=True):
                row = list(served[a])
                row[c] += w
                served[a] = row
        return y, y != proposed

    def commit(self, new_state, n_rows):
        st, adjusted = new_state
        self.__dict__.update(st)  # the working copy of _state()
        self.n_served += n_rows
        self.n_adjusted += adjusted

    # -- reporting -------------------------------------------------------------
    def _arrays(self, name):
        values = getattr(self, name)
        dtype = np.int64 if name in ("counts", "cells") else np.float64
        return [np.array(x, dtype=dtype) for x in values]

    def certificate(self):
        extra = 0.0
        for j, weights in enumerate(self.weights):
            bounds = []
            for g, w in enumerate(weights):
                if w > 0.0:
                    b = self.slacks[j][g]
                    if self.decisions:
                        b += self.rounding * self.cells[j][g] / w
                    bounds.append(b)
            extra = max(extra, _top_two(np.array(bounds)))
        return self.tolerance + extra

    def means(self):
        source = self.served if self.decisions else self.sums
        out = []
        for weights, sums in zip(self.weights, source, strict=True):
            means = self._means(weights, sums)
            out.append(np.array([x if x is not None else [np.nan] * len(self.columns)
                                 for x in means]))
        return out

    def gap(self):
        worst = 0.0
        for means, weights in zip(self.means(), self.weights, strict=True):
            served = means[np.array(weights) > 0.0]
            if served.shape[0] > 1:
                worst = max(worst, float((served.max(axis=0) - served.min(axis=0)).max()))
        return worst

    def duals(self):
        eps, eta, m = self.tolerance, self.eta, len(self.columns)
        out = []
        for j, (weights, sums) in enumerate(zip(self.weights, self.sums, strict=True)):
            k, squares = len(weights), self.squares[j]
            means = self._means(weights, sums)
            e = [w + PRIOR_ROWS * s for w, s in zip(weights, self.shares[j], strict=True)]
            u = np.array(self.prior[j], dtype=np.float64).reshape(m, k, k)
            for g in range(k):
                for h in range(k):
                    if g != h and means[g] is not None and means[h] is not None:
                        n = e[g] * e[h] / (e[g] + e[h])
                        rho = 0.5 * (squares[g] / weights[g] + squares[h] / weights[h])
                        margin = min(MARGIN_ROWS * rho, n * eps)
                        for c in range(m):
                            d = means[g][c] - means[h][c]
                            u[c, g, h] = max(u[c, g, h] + eta * (n * (d - eps) + margin), 0.0)
            out.append(u)
        return out

    def shifts(self):
        cols = self.columns
        out = []
        for j, (weights, sums) in enumerate(zip(self.weights, self.sums, strict=True)):
            means = self._means(weights, sums)
            rows = []
            for a in range(len(weights)):
                shift = [0.0] * len(cols)
                self._dual_shift(j, a, weights, self.squares[j], means, shift)
                if self.decisions:
                    shift = [x + self.fixed[j][a][c] for x, c in zip(shift, cols, strict=True)]
                rows.append(shift)
            out.append(np.array(rows))
        return out

    def report(self, labels):
        single = len(self.group_sizes) == 1
        one = len(self.columns) == 1
        duals = [u[0] if one else u for u in self.duals()]
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=labels,
            counts=_squeeze(self._arrays("counts"), single),
            means=_squeeze(self.means(), single, one),
            gap=self.gap(),
            tolerance=self.tolerance,
            certificate=self.certificate(),
            duals=_squeeze(duals, single),
            shifts=_squeeze(self.shifts(), single, one),
            n_served=self.n_served,
            n_adjusted=self.n_adjusted,
            criterion="demographic_parity" if self.weight_class is None else "equal_opportunity",
            weights=None if self.weight_class is None else _squeeze(
                self._arrays("weights"), single),
        )

    def __getstate__(self):
        # float64 / int64 arrays (exact; readable by skops), lists again on load.
        state = self.__dict__.copy()
        for name in ("weights", "squares", "sums", "slacks", "counts", "served", "cells",
                     "coefs", "offsets", "shares", "fixed", "prior", "prior_offset"):
            dtype = np.int64 if name in ("counts", "cells") else np.float64
            state[name] = [np.array(x, dtype=dtype) for x in state[name]]
        state["cell_errors"] = np.array(self.cell_errors, dtype=np.float64).reshape(
            -1, self.n_classes)
        state["center"] = np.array(self.center, dtype=np.float64)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for name in ("weights", "squares", "sums", "slacks", "counts", "served", "cells",
                     "coefs", "offsets", "shares", "fixed", "prior", "prior_offset"):
            setattr(self, name, [np.asarray(x).tolist() for x in getattr(self, name)])
        self.cell_errors = np.asarray(self.cell_errors).tolist()
        self.center = np.asarray(self.center).tolist()
