"""Group reductions of the sensitivities, and the fast path for one dense uniform family.

:class:`_GroupSums` takes per-group sums of a family and gathers per-group
values back to the rows. :class:`_DenseUniformPasses` computes the Jacobian
products of binary outputs with scalar bounds under one family of weights
``1 / n_g`` covering every row (demographic parity) in about three passes,
block by block, without building the general system of
:class:`~skfairlayer._sensitivity.Linearization`.
"""

import numpy as np

from ._numeric import dot


def _single_family_multipliers(c, r):
    """``(lambda, mu)`` solving ``c_g lambda_g + mu = r_g``, ``sum_g lambda_g = 0``."""
    pinned = c <= 0.0  # a group without free outputs: its mean is fixed, so mu = 0
    if not pinned.any():
        inv = 1.0 / c
        mu = float(r @ inv / inv.sum())
        return (r - mu) * inv, mu
    return np.where(pinned, 0.0, r / np.where(pinned, 1.0, c)), 0.0


def _dense_uniform_family(problem, p):
    """The family of the fast path (:class:`_DenseUniformPasses`), or None.

    Binary outputs with scalar bounds, no extra rows, and one family of score-free
    weights ``1 / n_g`` covering every row.
    """
    if p.ndim != 1 or problem.simplex or problem.rows is not None or len(problem.families) != 1:
        return None
    fam = problem.families[0]
    if fam.plug_in_class is not None or not fam.dense_uniform:
        return None
    if np.ndim(problem.lower) != 0 or np.ndim(problem.upper) != 0:
        return None
    return fam if np.all(fam.totals > 0) else None


class _DenseUniformPasses:
    """Jacobian products for one dense uniform family of binary outputs.

    With every row in a group of weight ``1 / n_g``, scalar bounds and no other
    constraint, ``J v = M (v - shift_{g_i})``: ``M`` keeps the free outputs
    (``lo < P_i < hi``) and ``shift_g = lambda_g / n_g`` on the active groups
    (zero elsewhere), the multipliers of the diagonal system of
    ``Linearization._solve_single`` with ``c_g = n_gF / n_g**2`` (``n_gF`` free
    outputs in ``g``) and ``r_g = (1 / n_g) * sum_{free i in g} v_i``.

    Building keeps ``M`` as booleans and counts the free outputs per group (no
    ``n``-float array: fresh pages cost more than a pass). A product makes
    two passes, block by block, over its output: ``M v`` and its group sums
    (two groups: the total and a dot product with the ``uint8`` codes of the
    family converted per block; more: ``bincount``), then the shifts of the
    active groups, masked, subtracted.
    """

    def __init__(self, fam, p, lo, hi):
        self.codes, self.small = fam.codes, fam._small_codes  # uint8 for two groups
        self.k, self.n = fam.n_groups, p.shape[0]
        self.mask = (p > lo) & (p < hi)
        self.totals = np.asarray(fam.totals, dtype=np.float64)
        self.inv_totals = 1.0 / self.totals
        self.idx, self.counts = None, None

    def free(self):
        """The bound mask (``Linearization.free``)."""
        return self.mask

    def _blocks(self):
        step = max(1, min(self.n, 1 << 16))
        return [slice(a, min(a + step, self.n)) for a in range(0, self.n, step)]

    def set_active(self, act):
        """Fix the active groups (and count the free outputs of each group)."""
        if not act.any():
            return
        self.idx = np.flatnonzero(act)
        if self.k == 2:
            one = np.count_nonzero(self.mask & self.small.view(bool))
            self.counts = np.array([np.count_nonzero(self.mask) - one, one], dtype=np.float64)
            return
        self.counts = np.zeros(self.k)
        for sl in self._blocks():
            self.counts += np.bincount(self.codes[sl][self.mask[sl]], minlength=self.k)

    def project(self, v):
        """``J v`` for a vector of the outputs' shape (a new array)."""
        v = np.asarray(v, dtype=np.float64)
        out = np.empty(self.n)
        blocks = self._blocks()
        if self.idx is None:
            return np.multiply(v, self.mask, out=out)
        buf = np.empty(blocks[0].stop)
        sums = np.zeros(self.k)
        for sl in blocks:  # M v and its group sums
            o, f = out[sl], buf[: sl.stop - sl.start]
            np.multiply(v[sl], self.mask[sl], out=o)
            if self.k == 2:
                np.copyto(f, self.small[sl])
                one = dot(f, o)
                sums += (float(o.sum()) - one, one)
            else:
                sums += np.bincount(self.codes[sl], weights=o, minlength=self.k)
        idx, inv = self.idx, self.inv_totals[self.idx]
        lam, _ = _single_family_multipliers(self.counts[idx] * inv * inv, sums[idx] * inv)
        shifts = np.zeros(self.k)
        shifts[idx] = lam * inv
        for sl in blocks:  # minus M shift_g
            o, f = out[sl], buf[: sl.stop - sl.start]
            if self.k == 2:
                np.multiply(self.small[sl], shifts[1] - shifts[0], out=f)
                f += shifts[0]
            else:
                np.take(shifts, self.codes[sl], out=f, mode="clip")
            f *= self.mask[sl]
            o -= f
        return out


class _GroupSums:
    """Per-group sums ``sum_{i in g} x_i`` of one family, and the inverse gather.

    ``bincount`` and ``take``; with two groups covering every row, a float
    indicator and dot products, several times faster.
    """

    def __init__(self, fam):
        self.k = fam.n_groups
        inside = fam.codes >= 0
        self.inside = None if inside.all() else inside
        self.codes = fam.codes if self.inside is None else np.where(inside, fam.codes, 0)
        self.indicator = None
        if self.k == 2 and self.inside is None:
            # The family's shared 0/1 indicator (cached on it by the solver and verification).
            self.indicator = fam._indicator if fam.group_ids is None else None
            if self.indicator is None:
                self.indicator = self.codes.astype(np.float64)

    def mask(self, x):
        """``x`` with rows outside the family set to zero."""
        return np.where(self.inside, x, 0.0)

    def __call__(self, x):
        if self.indicator is not None:
            one = dot(self.indicator, x)
            return np.array([float(x.sum()) - one, one])
        return np.bincount(self.codes, weights=x, minlength=self.k)

    def expand(self, values, out=None):
        """``values[g_i]`` for every row (rows outside the family get ``values[0]``)."""
        if self.indicator is not None:
            out = np.multiply(self.indicator, values[1] - values[0], out=out)
            out += values[0]
            return out
        return np.take(values, self.codes, out=out, mode="clip")


def _group_present(fam):
    """Groups of a family with at least one row (in the family)."""
    codes = fam.codes
    if codes.size and codes.min() < 0:
        codes = codes[codes >= 0]
    return np.bincount(codes, minlength=fam.n_groups) > 0
