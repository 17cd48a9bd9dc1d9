"""The paper's online primal-dual inference (Troxell, Montufar, Roemer, ICML 2026): reproduction.

Batches of at least ``b_tau`` rows get the exact projection
(:func:`skfairlayer.project`); smaller ones a penalised projection
followed by a dual step. Binary demographic parity, one grouping; no
finite-time certificate. Details in the user guide (docs/user_guide/streaming.rst).
"""

import math

import numpy as np

from .._projection import project
from .._validation import check_tolerance
from ._report import StreamReport, pooled_gap, pooled_means

__all__ = ["PAPER_B_TAU", "PAPER_STEP", "PaperPrimalDual", "penalized_projection"]

#: Batch size from which the paper's algorithm projects each batch exactly.
PAPER_B_TAU = 64
#: Default initial dual step ``eta_0``.
PAPER_STEP = 0.5

class PaperPrimalDual:
    """The paper's online primal-dual inference (reproduction; see the user guide).

    Parameters
    ----------
    tolerance : float
        The parity tolerance ``epsilon``.
    n_groups : int
        Number of groups.
    output : {"proba", "decisions"}, default="proba"
        What the stream serves; decisions are ``proba >= threshold``.
    step : float, default=0.5
        Initial dual step ``eta_0``.
    threshold : float, default=0.5
        Decision threshold on the probabilities.
    b_tau : int, default=64
        Batch size from which batches are projected exactly, without dual update.
    """

    algorithm = "paper"

    def __init__(
        self,
        tolerance,
        n_groups,
        *,
        output="proba",
        step=PAPER_STEP,
        threshold=0.5,
        b_tau=PAPER_B_TAU,
    ):
        self.tolerance = check_tolerance(tolerance)
        self.output = output
        self.eta = float(step)
        self.threshold = float(threshold)
        self.b_tau = int(b_tau)
        self._k = int(n_groups)
        self.reset()

    @property
    def n_groups(self):
        return self._k

    def reset(self):
        """Forget everything served: ``lambda = 0``, no dual update yet."""
        self.lam = 0.0
        self.updates = 0
        self.counts = np.zeros(self._k, dtype=np.int64)
        self.sums = np.zeros(self._k)
        self.n_served = 0
        self.n_adjusted = 0

    def step(self, scores, codes):
        """Serve one batch; return the outputs and the new state (not applied).

        ``scores`` of shape (n,), ``codes`` of shape (n, 1) (validated by the caller).
        """
        codes = codes[:, 0]
        n = scores.shape[0]
        lam, updates = self.lam, self.updates
        if n >= self.b_tau:
            p = _exact_projection(scores, codes, self.tolerance)
        else:
            p = penalized_projection(scores, codes, self._k, lam * n)
            updates += 1
            gap = _batch_gap(p, codes, self._k)
            lam = max(0.0, lam + self.eta / math.sqrt(updates) * n * (gap - self.tolerance))
        out = (p >= self.threshold).astype(np.int64) if self.output == "decisions" else p
        counts = self.counts + np.bincount(codes, minlength=self._k)
        sums = self.sums + np.bincount(codes, weights=out.astype(np.float64), minlength=self._k)
        return out, (lam, updates, counts, sums)

    def commit(self, new_state, n_rows):
        self.lam, self.updates, self.counts, self.sums = new_state
        self.n_served += n_rows

    def certificate(self):
        """No finite-time guarantee: ``inf``."""
        return math.inf

    def report(self, labels):
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=labels,
            counts=self.counts.copy(),
            means=pooled_means(self.counts, self.sums),
            gap=pooled_gap(self.counts, self.sums),
            tolerance=self.tolerance,
            certificate=math.inf,
            duals=np.array([self.lam]),
            shifts=np.full(self._k, np.nan),
            n_served=self.n_served,
            n_adjusted=0,
        )


def _exact_projection(scores, codes, tolerance):
    """The exact projection of one batch onto the tolerance (clipped scores for one group)."""
    present = np.unique(codes)
    if present.size < 2:
        return np.clip(scores, 0.0, 1.0)
    return project(scores, codes, tolerance=tolerance).proba


def _batch_gap(p, codes, k):
    counts = np.bincount(codes, minlength=k)
    present = counts > 0
    if present.sum() < 2:
        return 0.0
    means = np.bincount(codes, weights=p, minlength=k)[present] / counts[present]
    return float(means.max() - means.min())


def _shift_for_mean(desc, prefix, target):
    """Shift ``nu >= 0`` with ``mean(max(s - nu, 0)) = target`` (``desc`` sorted descending)."""
    n = desc.size
    if target <= 0.0:
        return float(desc[0])
    j = np.arange(1, n + 1)
    nu = (prefix - n * target) / j
    nxt = np.append(desc[1:], -np.inf)
    ok = (nu <= desc) & (nu >= nxt)
    return max(0.0, float(nu[np.argmax(ok)])) if ok.any() else 0.0


class _Group:
    """Sorted scores of one group, for exact inverse shifts in both directions."""

    def __init__(self, s):
        self.n = s.size
        self.mean = float(s.mean())
        self.down = np.sort(s)[::-1]
        self.down_prefix = np.cumsum(self.down)
        self.up = np.sort(1.0 - s)[::-1]
        self.up_prefix = np.cumsum(self.up)

    def shift_to(self, level):
        """Signed shift (positive: down) bringing the group mean to ``level``."""
        if level < self.mean:
            return _shift_for_mean(self.down, self.down_prefix, level)
        if level > self.mean:
            return -_shift_for_mean(self.up, self.up_prefix, 1.0 - level)
        return 0.0


def _bisect(func, lo, hi, iters=60):
    """Root of a non-increasing ``func`` on ``[lo, hi]`` (``func(lo) >= 0 >= func(hi)``)."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if func(mid) > 0.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15:
            break
    return 0.5 * (lo + hi)


def _two_group_penalized(s, codes, present, weight):
    """Solution of the two-group penalized problem when the gap stays positive, else None."""
    a, b = present
    in_a, in_b = codes == a, codes == b
    if s[in_a].mean() < s[in_b].mean():
        a, b, in_a, in_b = b, a, in_b, in_a
    nu = np.zeros(codes.max() + 1)
    nu[a] = weight / (2.0 * np.count_nonzero(in_a))
    nu[b] = -weight / (2.0 * np.count_nonzero(in_b))
    p = np.clip(s - nu[codes], 0.0, 1.0)
    return p if p[in_a].mean() >= p[in_b].mean() else None


def penalized_projection(scores, codes, n_groups, weight):
    """``argmin_{0 <= p <= 1} ||p - s||^2 + weight * (max_g m_g(p) - min_g m_g(p))``.

    The paper's per-batch primal step. KKT: ``p_i = clip(s_i - nu_g)`` where the
    groups above a top level ``U`` are brought down to it with
    ``sum_g 2 n_g nu_g = weight`` and symmetrically below a bottom level ``L``;
    if the penalty closes the gap (``U < L``) all groups meet at one level with
    balanced shifts ``sum_g n_g nu_g = 0``. Fewer than two groups: ``clip(s)``.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Base scores in ``[0, 1]``.
    codes : ndarray of shape (n_samples,)
        Group codes in ``[0, n_groups)``.
    n_groups : int
        Number of groups.
    weight : float
        Penalty weight (``lambda * B`` in the paper).

    Returns
    -------
    proba : ndarray of shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._stream import penalized_projection
    >>> p = penalized_projection(np.array([0.9, 0.1]), np.array([0, 1]), 2, 0.4)
    >>> p.round(3)
    array([0.7, 0.3])
    """
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    present = np.flatnonzero(np.bincount(codes, minlength=n_groups))
    if present.size < 2 or weight <= 0.0:
        return s
    if present.size == 2:
        # Two groups: unless the penalty closes the gap, the top group moves down by
        # weight / (2 n_top) and the bottom one up by weight / (2 n_bottom).
        fast = _two_group_penalized(s, codes, present, weight)
        if fast is not None:
            return fast
    groups = {g: _Group(s[codes == g]) for g in present}
    means = [grp.mean for grp in groups.values()]
    hi_mean, lo_mean = max(means), min(means)

    def down_pull(level):  # sum_g 2 n_g nu_g over groups above level, minus weight
        return sum(2 * gr.n * max(gr.shift_to(level), 0.0) for gr in groups.values()) - weight

    def up_pull(level):  # sum_g 2 n_g (-nu_g) over groups below level, minus weight
        return weight - sum(2 * gr.n * max(-gr.shift_to(level), 0.0) for gr in groups.values())

    closes = down_pull(lo_mean) <= 0 or up_pull(hi_mean) >= 0
    if not closes:
        top = _bisect(down_pull, lo_mean, hi_mean)
        bottom = _bisect(up_pull, lo_mean, hi_mean)
        closes = top < bottom
    if closes:
        # The penalty closes the gap: one common level with balanced multipliers.
        def balance(level):
            return sum(gr.n * gr.shift_to(level) for gr in groups.values())

        level = _bisect(balance, lo_mean, hi_mean)
        shifts = {g: gr.shift_to(level) for g, gr in groups.items()}
    else:
        shifts = {g: gr.shift_to(min(max(gr.mean, bottom), top)) for g, gr in groups.items()}
    nu = np.zeros(n_groups)
    for g, v in shifts.items():
        nu[g] = v
    return np.clip(s - nu[codes], 0.0, 1.0)

