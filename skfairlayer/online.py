"""Streaming inference: a pooled-gap guarantee for rows served one by one or in small batches.

Rows arrive one at a time (or in small batches) and each output is final once
served. The quantity users audit is the *pooled* gap: over everything served
since the last reset, the group means of the served probabilities (or the group
selection rates of the served decisions) must differ by at most ``epsilon``.
Nothing here touches an estimator: arrays in, arrays out, and a picklable state.

Pooled algorithm (default, MATH.md section 4 plus an exact safeguard)
--------------------------------------------------------------------
For a group ``g`` let ``N_g`` be its served rows, ``S_g`` the sum of its served
outputs and ``m_g = S_g / N_g`` its pooled mean. Each group carries a *slack*
``b_g = b(N_g)`` that depends on its count only.

1. **Proposal (primal-dual).** One dual per ordered pair of groups, for the
   pooled constraint ``m_g - m_h <= epsilon`` scaled by the harmonic count
   ``n_gh = N_g N_h / (N_g + N_h)`` (so that one row moves it by O(1))::

       V_gh(T) = n_gh (m_g - m_h - epsilon) + H_gh,
       u_gh(T) = max(0, u_gh(0) + eta V_gh(T)).

   This is MATH.md's increment update ``u <- max(0, u + eta dV)`` written in
   closed form (it telescopes), with a margin ``H_gh = min(H, n_gh epsilon)``
   that aims the proposal slightly inside the band; the margin in gap units,
   ``H / n_gh``, vanishes as the stream grows. The duals start at the training
   projection (``u_gh(0)`` reproduces the fitted shifts), so the first rows are
   already corrected. A row of group ``a`` gets the shift
   ``nu_a = c + sum_h (u_ah - u_ha) N_h / (N_a + N_h)`` (the Lagrangian gradient
   of the pairwise constraints; ``c`` a constant offset of the fitted shifts) and
   the proposal ``clip(s - nu_a, 0, 1)``; for decisions, ``s >= (1 + nu_a) / 2``
   (maximal expected accuracy ``sum yhat (2 s - 1)`` under the same duals).

2. **Safeguard (exact, served-aware).** With the pooled sums known, the row's
   output is clipped to the interval that keeps every pair of present groups
   within ``epsilon + b_g + b_h`` *after* serving it::

       max_h (m_h - b_h) - epsilon - b_a' <= (S_a + p) / (N_a + 1)
                                          <= min_h (m_h + b_h) + epsilon + b_a',

   ``b_a' = b(N_a + 1)``; a decision takes the other value when its proposal
   leaves the band. This interval is never empty, so the guarantee holds at
   every ``T``, for any order of rows, any number of groups, single-group
   prefixes and drifting group shares, provided the slack schedule satisfies

   * ``b(n - 1) - b(n) <= (epsilon + b(n)) / n`` (the band of a group shrinks no
     faster than one row can move its mean: if ``m_a`` lies above the new band
     then ``m_a >= epsilon + b(n)`` and the row ``p = 0`` lowers it by
     ``m_a / n``), and
   * for decisions, ``b(n) >= (1 / n - epsilon) / 2`` (the band of a group is at
     least ``epsilon + 2 b(n)`` wide, so one of the two rates ``C / n`` and
     ``(C + 1) / n``, which are ``1 / n`` apart, lies in it).

   The schedule used is ``b(n) = max((c_b / sqrt(n) - epsilon)_+, floors)``: a
   few standard errors of a mean of ``n`` rows (forcing parity on noisy small
   samples is what costs distortion), reaching exactly 0 after about
   ``(c_b / epsilon)^2`` rows for ``epsilon > 0`` (400 rows at ``epsilon =
   0.02``; for decisions, not before ``1 / epsilon`` rows).

**Certificate.** At every ``T``, ``pooled gap(T) <= epsilon + b(N_(1)) + b(N_(2))``
with ``N_(1) <= N_(2)`` the two smallest counts among the groups served so far:
``epsilon + O(1 / sqrt(min_g N_g))`` while the groups are small, exactly
``epsilon`` once every group has about ``(c_b / epsilon)^2`` rows. It holds by
construction (to floating-point rounding, 1e-12), not asymptotically, and it is
non-increasing while no new group appears.

Paper algorithm (``algorithm="paper"``, for reproduction)
---------------------------------------------------------
Troxell, Montufar and Roemer (ICML 2026), per batch ``t`` of ``B_t`` rows:
batches with at least ``b_tau`` rows get the exact per-batch projection
(supplied by the caller) and no dual update; smaller batches get
``p_t = argmin_{0 <= p <= 1} ||p - s_t||^2 + lambda B_t gap_t(p)`` and then
``lambda <- max(0, lambda + eta_0 / sqrt(t) B_t (gap_t - epsilon))``, with
``t`` counting the small batches. ``gap_t`` is the batch's max-minus-min of
group means, 0 for a batch with a single group (so with one row per batch the
dual only decays and nothing is ever corrected). Decisions threshold the
probabilities. It has no finite-time certificate.
"""

import math
import threading
from dataclasses import dataclass

import numpy as np

from ._validation import check_scores, check_tolerance

__all__ = [
    "ALGORITHMS",
    "StreamReport",
    "StreamState",
    "decompose_shifts",
    "penalized_projection",
    "slack_schedule",
]

#: Streaming algorithms.
ALGORITHMS = ("pooled", "paper")
#: Default dual step of each algorithm (``eta`` for pooled, ``eta_0`` for paper).
DEFAULT_STEP = {"pooled": 0.02, "paper": 0.5}
#: Pseudo-rows (spread by the fitted shares) in the counts that scale the duals,
#: so that the first rows of the stream use the fitted shifts.
PRIOR_ROWS = 100.0
#: Margin ``H`` of the proposal, in row units (``H / n_gh`` in gap units).
MARGIN_ROWS = 8.0
#: ``c_b`` of the slack schedule ``b(n) = (c_b / sqrt(n) - epsilon)_+``.
SLACK_SCALE = 0.4
#: Batch size from which the paper's algorithm projects each batch exactly.
PAPER_B_TAU = 64
_OUTPUTS = ("proba", "decisions")


def slack_schedule(n, tolerance, previous=None, *, decisions=False):
    """Slack ``b(n)`` of a group with ``n`` served rows.

    Parameters
    ----------
    n : int
        Number of served rows of the group (``>= 1``).
    tolerance : float
        The parity tolerance ``epsilon``.
    previous : float, default=None
        ``b(n - 1)``; ``None`` for ``n = 1``.
    decisions : bool, default=False
        Whether the stream serves 0/1 decisions (adds the width floor).

    Returns
    -------
    slack : float
        ``max((c_b / sqrt(n) - epsilon)_+, (n b(n-1) - epsilon) / (n + 1),
        [(1 / n - epsilon) / 2])``: the target, and the floors that keep the
        safeguard's interval non-empty (see the module docstring).

    Examples
    --------
    >>> from skfairlayer.online import slack_schedule
    >>> b = None
    >>> for n in range(1, 1001):
    ...     b = slack_schedule(n, 0.02, b)
    >>> b
    0.0
    """
    target = SLACK_SCALE / math.sqrt(n) - tolerance
    floor = 0.0 if previous is None else (n * previous - tolerance) / (n + 1)
    width = 0.5 * (1.0 / n - tolerance) if decisions else 0.0
    return max(target, floor, width, 0.0)


def decompose_shifts(shifts, shares):
    """Pairwise duals ``u_gh >= 0`` that reproduce per-group shifts.

    The pooled constraint of the pair ``(g, h)`` contributes
    ``u_gh * shares_h / (shares_g + shares_h)`` to the shift of ``g`` and the
    opposite to ``h``. With ``x_gh = u_gh * n_gh`` (``n_gh`` the harmonic share)
    the shifts are the net flows ``shares_g nu_g = sum_h x_gh - x_hg``: a
    transport from the groups shifted down to the groups shifted up.

    Parameters
    ----------
    shifts : array-like of shape (n_groups,)
        Per-group shifts ``nu_g`` (positive: moved down).
    shares : array-like of shape (n_groups,)
        Group shares (positive, summing to one).

    Returns
    -------
    duals : ndarray of shape (n_groups, n_groups)
        Non-negative pairwise duals, zero on the diagonal.
    offset : float
        The share-weighted mean shift ``sum_g shares_g nu_g``, removed before the
        decomposition (a common shift of every group; 0 for a projection).

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer.online import decompose_shifts
    >>> duals, offset = decompose_shifts([0.1, -0.2], [2 / 3, 1 / 3])
    >>> duals.round(3)
    array([[0. , 0.3],
           [0. , 0. ]])
    """
    nu = np.asarray(shifts, dtype=np.float64)
    pi = np.asarray(shares, dtype=np.float64)
    k = nu.size
    offset = float(pi @ nu) if k else 0.0
    flow = pi * (nu - offset)
    duals = np.zeros((k, k))
    sources = [[g, flow[g]] for g in np.argsort(-flow) if flow[g] > 0]
    sinks = [[h, -flow[h]] for h in np.argsort(flow) if flow[h] < 0]
    i = j = 0
    while i < len(sources) and j < len(sinks):
        g, h = sources[i][0], sinks[j][0]
        amount = min(sources[i][1], sinks[j][1])
        duals[g, h] += amount * (pi[g] + pi[h]) / (pi[g] * pi[h])
        sources[i][1] -= amount
        sinks[j][1] -= amount
        if sources[i][1] <= 1e-15:
            i += 1
        if sinks[j][1] <= 1e-15:
            j += 1
    return duals, offset


@dataclass(frozen=True)
class StreamReport:
    """Live state of one output stream since its last reset.

    Returned by :meth:`StreamState.report` and
    :meth:`~skfairlayer.FairnessLayerClassifier.stream_report`.

    Parameters
    ----------
    output : str
        ``"proba"`` (served probabilities) or ``"decisions"`` (served 0/1 decisions).
    algorithm : str
        ``"pooled"`` or ``"paper"``.
    groups : ndarray of shape (n_groups,)
        Group labels, in code order.
    counts : ndarray of shape (n_groups,)
        Rows served per group.
    means : ndarray of shape (n_groups,)
        Pooled mean of the served outputs per group (the selection rate for
        decisions); NaN for a group not served yet.
    gap : float
        Pooled gap: largest difference of two groups' means (0 with fewer than
        two groups served).
    tolerance : float
        The parity tolerance ``epsilon``.
    certificate : float
        Guaranteed upper bound on ``gap`` at this time: ``epsilon + b(N_(1)) +
        b(N_(2))`` for the pooled algorithm; ``inf`` for the paper's algorithm,
        which has no finite-time guarantee.
    duals : ndarray
        Current duals: the pairwise ``u_gh`` of shape (n_groups, n_groups)
        (pooled), or ``[lambda]`` (paper).
    shifts : ndarray of shape (n_groups,)
        Shift the next row of each group would get before the safeguard
        (probabilities move by ``-shift``; decisions use the threshold
        ``(1 + shift) / 2``). Paper: the shifts at the current dual for a
        two-group batch are not defined; NaN.
    n_served : int
        Rows served since the last reset.
    n_adjusted : int
        Rows whose output the safeguard changed (pooled algorithm; 0 for paper).

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer.online import StreamState
    >>> state = StreamState("pooled", 0.1, shifts=[0.0, 0.0], thresholds=[0.5, 0.5],
    ...                     shares=[0.5, 0.5], groups=np.array(["a", "b"]))
    >>> _ = state.partial_proba(np.array([0.9, 0.2, 0.8, 0.3]), np.array([0, 1, 0, 1]))
    >>> report = state.report("proba")
    >>> report.counts.tolist(), bool(report.gap <= report.certificate)
    ([2, 2], True)
    """

    output: str
    algorithm: str
    groups: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    gap: float
    tolerance: float
    certificate: float
    duals: np.ndarray
    shifts: np.ndarray
    n_served: int
    n_adjusted: int

    @property
    def holds(self):
        """Whether the pooled gap is within the certificate (true by construction, to 1e-12)."""
        return bool(self.gap <= self.certificate + 1e-12)


def _pooled_gap(counts, sums):
    means = [s / n for n, s in zip(counts, sums, strict=True) if n > 0]
    return (max(means) - min(means)) if len(means) > 1 else 0.0


def _means(counts, sums):
    return np.array([s / n if n > 0 else np.nan for n, s in zip(counts, sums, strict=True)])


class PooledPrimalDual:
    """Pooled-gap primal-dual with the exact safeguard (see the module docstring).

    Parameters
    ----------
    tolerance : float
        The parity tolerance ``epsilon``.
    shifts : array-like of shape (n_groups,)
        Fitted per-group shifts the duals start from (for decisions, ``2
        threshold - 1``).
    shares : array-like of shape (n_groups,)
        Fitted group shares.
    output : {"proba", "decisions"}, default="proba"
        What the stream serves.
    step : float, default=0.02
        Dual step ``eta``.
    """

    algorithm = "pooled"

    def __init__(self, tolerance, shifts, shares, *, output="proba", step=DEFAULT_STEP["pooled"]):
        self.tolerance = check_tolerance(tolerance)
        self.output = output
        self.step = float(step)
        shares = np.asarray(shares, dtype=np.float64)
        duals, offset = decompose_shifts(shifts, shares)
        self.prior = duals.tolist()
        self.offset = offset
        self.shares = shares.tolist()
        self.reset()

    @property
    def n_groups(self):
        return len(self.shares)

    def reset(self):
        """Forget everything served; keep the fitted starting point."""
        k = self.n_groups
        self.counts = [0] * k
        self.sums = [0.0] * k
        self.slacks = [math.inf] * k
        self.n_served = 0
        self.n_adjusted = 0

    # -- per-row pieces --------------------------------------------------------
    def _shift(self, a, counts, sums):
        """Proposal shift of a row of group ``a`` given the pooled sums."""
        eps, eta, w0 = self.tolerance, self.step, PRIOR_ROWS
        shares, prior = self.shares, self.prior
        n_a = counts[a]
        e_a = n_a + w0 * shares[a]
        m_a = sums[a] / n_a if n_a else 0.0
        nu = self.offset
        for h in range(len(counts)):
            if h == a:
                continue
            e_h = counts[h] + w0 * shares[h]
            total = e_a + e_h
            if total <= 0.0:
                continue
            u_ah, u_ha = prior[a][h], prior[h][a]
            if n_a and counts[h]:
                n = e_a * e_h / total
                d = m_a - sums[h] / counts[h]
                margin = min(MARGIN_ROWS, n * eps)
                u_ah += eta * (n * (d - eps) + margin)
                u_ha += eta * (n * (-d - eps) + margin)
                u_ah = u_ah if u_ah > 0.0 else 0.0
                u_ha = u_ha if u_ha > 0.0 else 0.0
            nu += (u_ah - u_ha) * (e_h / total)
        return nu

    def _band(self, a, counts, sums, slacks, new_slack):
        """Band of group ``a``'s pooled mean after one more row, or None if alone."""
        lo, hi = -math.inf, math.inf
        for h in range(len(counts)):
            if h != a and counts[h]:
                m_h = sums[h] / counts[h]
                lo = max(lo, m_h - slacks[h])
                hi = min(hi, m_h + slacks[h])
        if lo == -math.inf:
            return None
        eps = self.tolerance
        return lo - eps - new_slack, hi + eps + new_slack

    def step_rows(self, scores, codes):
        """Serve a batch row by row; return the outputs and the new state (not applied).

        ``scores`` and ``codes`` are lists (validated by the caller).
        """
        counts, sums, slacks = list(self.counts), list(self.sums), list(self.slacks)
        decisions = self.output == "decisions"
        out = []
        adjusted = 0
        for s, a in zip(scores, codes, strict=True):
            nu = self._shift(a, counts, sums)
            n_new = counts[a] + 1
            b_new = slack_schedule(
                n_new, self.tolerance, None if n_new == 1 else slacks[a], decisions=decisions
            )
            band = self._band(a, counts, sums, slacks, b_new)
            if decisions:
                y = 1 if 2.0 * s - 1.0 >= nu else 0
                if band is not None:
                    y2 = _feasible_decision(y, sums[a], n_new, band)
                    adjusted += y2 != y
                    y = y2
                value = y
            else:
                p = s - nu
                p = 1.0 if p > 1.0 else (0.0 if p < 0.0 else p)
                if band is not None:
                    lo = max(band[0] * n_new - sums[a], 0.0)
                    hi = min(band[1] * n_new - sums[a], 1.0)
                    q = hi if p > hi else (lo if p < lo else p)
                    adjusted += q != p
                    p = q
                value = p
            out.append(value)
            counts[a] = n_new
            sums[a] += value
            slacks[a] = b_new
        return out, (counts, sums, slacks, adjusted)

    def commit(self, new_state, n_rows):
        self.counts, self.sums, self.slacks, adjusted = new_state
        self.n_served += n_rows
        self.n_adjusted += adjusted

    # -- reporting -------------------------------------------------------------
    def certificate(self):
        present = sorted((b for n, b in zip(self.counts, self.slacks, strict=True) if n), reverse=True)
        extra = present[0] + present[1] if len(present) > 1 else 0.0
        return self.tolerance + extra

    def duals(self):
        k = self.n_groups
        u = np.array(self.prior, dtype=np.float64).reshape(k, k)
        eps, eta = self.tolerance, self.step
        for g in range(k):
            for h in range(k):
                if g != h and self.counts[g] and self.counts[h]:
                    e_g = self.counts[g] + PRIOR_ROWS * self.shares[g]
                    e_h = self.counts[h] + PRIOR_ROWS * self.shares[h]
                    n = e_g * e_h / (e_g + e_h)
                    d = self.sums[g] / self.counts[g] - self.sums[h] / self.counts[h]
                    u[g, h] = max(0.0, u[g, h] + eta * (n * (d - eps) + min(MARGIN_ROWS, n * eps)))
        return u

    def report(self, groups):
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=np.asarray(groups),
            counts=np.array(self.counts, dtype=np.int64),
            means=_means(self.counts, self.sums),
            gap=_pooled_gap(self.counts, self.sums),
            tolerance=self.tolerance,
            certificate=self.certificate(),
            duals=self.duals(),
            shifts=np.array([self._shift(a, self.counts, self.sums) for a in range(self.n_groups)]),
            n_served=self.n_served,
            n_adjusted=self.n_adjusted,
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        # Exact float64 arrays (for skops and readable pickles); lists again on load.
        for name in ("counts", "sums", "slacks", "shares"):
            state[name] = np.array(state[name], dtype=np.int64 if name == "counts" else np.float64)
        state["prior"] = np.array(state["prior"], dtype=np.float64).reshape(len(state["shares"]), -1)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.counts = [int(v) for v in np.asarray(self.counts)]
        for name in ("sums", "slacks", "shares"):
            setattr(self, name, [float(v) for v in np.asarray(getattr(self, name))])
        self.prior = [[float(v) for v in row] for row in np.asarray(self.prior)]


def _feasible_decision(y, positives, n_new, band):
    """The proposed decision if it keeps the rate in ``band``, else the other one."""
    lo, hi = band
    rate = (positives + y) / n_new
    if lo <= rate <= hi:
        return y
    other = 1 - y
    rate_other = (positives + other) / n_new
    if lo <= rate_other <= hi:
        return other
    # Unreachable but for rounding: keep the smaller violation.
    viol = max(lo - rate, rate - hi)
    viol_other = max(lo - rate_other, rate_other - hi)
    return y if viol <= viol_other else other


class PaperPrimalDual:
    """The paper's online primal-dual inference (reproduction; see the module docstring).

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
        step=DEFAULT_STEP["paper"],
        threshold=0.5,
        b_tau=PAPER_B_TAU,
    ):
        self.tolerance = check_tolerance(tolerance)
        self.output = output
        self.step = float(step)
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

    def step_batch(self, scores, codes, project=None):
        """Serve one batch; return the outputs and the new state (not applied)."""
        n = scores.shape[0]
        lam, updates = self.lam, self.updates
        if n >= self.b_tau:
            if project is None:
                raise ValueError(
                    f"The paper's algorithm projects batches of at least b_tau={self.b_tau} rows "
                    "exactly; pass project=callable(scores, codes) -> outputs."
                )
            p = np.asarray(project(scores, codes), dtype=np.float64)
        else:
            p = penalized_projection(scores, codes, self._k, lam * n)
            updates += 1
            gap = _batch_gap(p, codes, self._k)
            lam = max(0.0, lam + self.step / math.sqrt(updates) * n * (gap - self.tolerance))
        out = (p >= self.threshold).astype(np.int64) if self.output == "decisions" else p
        counts = self.counts + np.bincount(codes, minlength=self._k)
        sums = self.sums + np.bincount(codes, weights=out.astype(np.float64), minlength=self._k)
        return out, (lam, updates, counts, sums)

    def commit(self, new_state, n_rows):
        self.lam, self.updates, self.counts, self.sums = new_state
        self.n_served += n_rows

    def report(self, groups):
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=np.asarray(groups),
            counts=self.counts.copy(),
            means=_means(self.counts, self.sums),
            gap=_pooled_gap(self.counts, self.sums),
            tolerance=self.tolerance,
            certificate=math.inf,
            duals=np.array([self.lam]),
            shifts=np.full(self._k, np.nan),
            n_served=self.n_served,
            n_adjusted=0,
        )


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
    >>> from skfairlayer.online import penalized_projection
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


class StreamState:
    """Streaming state of a fitted layer: one stream per output kind, and its lock.

    Owns a :class:`threading.Lock` around every state update (several threads may
    serve rows concurrently); the lock is dropped when pickling and recreated
    when loading, so the state pickles, deep-copies and persists with skops.

    Parameters
    ----------
    algorithm : {"pooled", "paper"}
        Streaming algorithm.
    tolerance : float
        Parity tolerance ``epsilon``.
    shifts : array-like of shape (n_groups,)
        Fitted per-group probability shifts (start of the probability stream).
    thresholds : array-like of shape (n_groups,)
        Fitted per-group decision thresholds (start of the decision stream).
    shares : array-like of shape (n_groups,)
        Fitted group shares.
    step : float or None, default=None
        Dual step; ``None`` means the algorithm's default
        (:data:`DEFAULT_STEP`).
    threshold : float, default=0.5
        Decision threshold of the paper's algorithm.
    groups : array-like of shape (n_groups,), default=None
        Group labels (for reports, and the fast label lookup of
        :meth:`codes_of`); ``None`` means ``0 .. n_groups - 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer.online import StreamState
    >>> state = StreamState("pooled", 0.05, shifts=[-0.1, 0.1], thresholds=[0.4, 0.6],
    ...                     shares=[0.5, 0.5])
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(2000):
    ...     g = rng.integers(2)
    ...     _ = state.partial_proba(np.array([rng.beta(2 + 2 * g, 4 - 2 * g)]), np.array([g]))
    >>> report = state.report("proba")
    >>> bool(report.gap <= report.certificate == 0.05)
    True
    """

    def __init__(self, algorithm, tolerance, shifts, thresholds, shares, *, step=None,
                 threshold=0.5, groups=None):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}. Got {algorithm!r} instead.")
        self.algorithm = algorithm
        self.tolerance = check_tolerance(tolerance)
        self.step = DEFAULT_STEP[algorithm] if step is None else float(step)
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step must be a positive number. Got {step!r} instead.")
        shifts = np.asarray(shifts, dtype=np.float64)
        thresholds = np.asarray(thresholds, dtype=np.float64)
        shares = np.asarray(shares, dtype=np.float64)
        if not (shifts.shape == thresholds.shape == shares.shape and shifts.ndim == 1):
            raise ValueError(
                "shifts, thresholds and shares must be 1-D arrays of the same length. Got shapes "
                f"{shifts.shape}, {thresholds.shape} and {shares.shape} instead."
            )
        self._k = shifts.size
        self.shares = shares
        self.threshold = float(threshold)
        self.config = (algorithm, self.tolerance, step, self.threshold)
        self.groups = np.arange(self._k) if groups is None else np.asarray(groups)
        if self.groups.shape != (self._k,):
            raise ValueError(
                f"groups must hold one label per group ({self._k}). Got an array of shape "
                f"{self.groups.shape} instead."
            )
        self._index = _label_index(self.groups)
        if algorithm == "pooled":
            self.streams = {
                "proba": PooledPrimalDual(self.tolerance, shifts, shares, step=self.step),
                "decisions": PooledPrimalDual(
                    self.tolerance, 2.0 * thresholds - 1.0, shares, output="decisions",
                    step=self.step,
                ),
            }
        else:
            self.streams = {
                out: PaperPrimalDual(self.tolerance, self._k, output=out, step=self.step,
                                     threshold=threshold)
                for out in _OUTPUTS
            }
        self._lock = threading.Lock()

    @property
    def n_groups(self):
        """Number of groups."""
        return self._k

    def _check(self, scores, codes):
        """Validated scores and codes (arrays and lists); raises before any state change."""
        if (
            self.algorithm == "pooled"
            and type(codes) is list
            and type(scores) is np.ndarray
            and scores.ndim == 1
            and 0 < len(codes) == scores.shape[0]
            and all(type(c) is int and 0 <= c < self._k for c in codes)
        ):  # fast path: codes from codes_of()
            score_list = scores.tolist()
            if all(map(math.isfinite, score_list)):
                return scores, None, score_list, codes
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        codes = np.asarray(codes)
        if scores.ndim != 1 or scores.shape[0] == 0:
            check_scores(scores, name="scores")  # raises the detailed error
            raise ValueError(
                f"scores must be of shape (n_samples,). Got an array of shape {scores.shape} "
                "instead."
            )
        if codes.shape != scores.shape or codes.dtype.kind not in "iu":
            raise ValueError(
                "codes must be integer group codes of the same shape as scores "
                f"{scores.shape}. Got {codes.dtype} codes of shape {codes.shape} instead."
            )
        score_list, code_list = scores.tolist(), codes.tolist()
        if not all(map(math.isfinite, score_list)):
            check_scores(scores, name="scores")  # raises: NaN or infinity
        lo, hi = min(code_list), max(code_list)
        if lo < 0 or hi >= self._k:
            raise ValueError(
                f"codes must lie in [0, {self._k}). Got values in [{lo}, {hi}] instead."
            )
        return scores, codes.astype(np.intp, copy=False), score_list, code_list

    def _serve(self, output, scores, codes, project):
        scores, codes, score_list, code_list = self._check(scores, codes)
        stream = self.streams[output]
        with self._lock:
            if self.algorithm == "pooled":
                out, new = stream.step_rows(score_list, code_list)
            else:
                out, new = stream.step_batch(scores, codes, project)
            stream.commit(new, len(code_list))
        if self.algorithm == "pooled":
            out = np.array(out, dtype=np.int64 if output == "decisions" else np.float64)
        return out

    def partial_proba(self, scores, codes, project=None):
        """Serve probabilities for a batch and update the probability stream.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,)
            Base positive-class probabilities.
        codes : ndarray of shape (n_samples,)
            Group codes.
        project : callable, default=None
            ``project(scores, codes) -> proba``, the exact per-batch projection
            used by the paper's algorithm for batches of at least ``b_tau`` rows.

        Returns
        -------
        proba : ndarray of shape (n_samples,)
            Served positive-class probabilities.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer.online import StreamState
        >>> state = StreamState("pooled", 0.1, [0.2, -0.2], [0.6, 0.4], [0.5, 0.5])
        >>> state.partial_proba(np.array([0.9, 0.1]), np.array([0, 1])).round(2)
        array([0.7, 0.3])
        """
        return self._serve("proba", scores, codes, project)

    def partial_decisions(self, scores, codes, project=None):
        """Serve 0/1 decisions for a batch and update the decision stream.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,)
            Base positive-class probabilities.
        codes : ndarray of shape (n_samples,)
            Group codes.
        project : callable, default=None
            As in :meth:`partial_proba` (paper's algorithm only).

        Returns
        -------
        decisions : ndarray of shape (n_samples,)
            Served decisions (0 or 1).

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer.online import StreamState
        >>> state = StreamState("pooled", 0.1, [0.0, 0.0], [0.7, 0.3], [0.5, 0.5])
        >>> state.partial_decisions(np.array([0.6, 0.4]), np.array([0, 1]))
        array([0, 1])
        """
        return self._serve("decisions", scores, codes, project)

    def reset(self):
        """Forget every served row (both streams); keep the fitted starting point.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer.online import StreamState
        >>> state = StreamState("pooled", 0.1, [0.0, 0.0], [0.5, 0.5], [0.5, 0.5])
        >>> _ = state.partial_decisions(np.array([0.9, 0.2]), np.array([0, 1]))
        >>> state.reset()
        >>> state.report("decisions").n_served
        0
        """
        with self._lock:
            for stream in self.streams.values():
                stream.reset()

    def report(self, output="proba", groups=None):
        """Live report of one stream.

        Parameters
        ----------
        output : {"proba", "decisions"}, default="proba"
            Which stream.
        groups : array-like of shape (n_groups,), default=None
            Labels to report; ``None`` means the state's ``groups``.

        Returns
        -------
        report : StreamReport
            Counts, pooled means and gap, certificate and duals.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer.online import StreamState
        >>> state = StreamState("paper", 0.1, [0.0, 0.0], [0.5, 0.5], [0.5, 0.5])
        >>> _ = state.partial_proba(np.array([0.9, 0.2]), np.array([0, 1]))
        >>> state.report().duals  # 0.5 / sqrt(1) * 2 rows * (gap 0.7 - 0.1)
        array([0.6])
        """
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}. Got {output!r} instead.")
        groups = self.groups if groups is None else groups
        with self._lock:
            return self.streams[output].report(groups)

    def codes_of(self, values):
        """Group codes of a list of (scalar) labels, or None if one is not a known label.

        A fast path for small batches; ``None`` sends the caller to the full
        encoding (:func:`~skfairlayer._validation.encode_groups`), which raises
        the detailed error for unknown or missing labels.

        Parameters
        ----------
        values : list
            One label per row (Python scalars).

        Returns
        -------
        codes : list of int or None
            The code of each label, or None when a label is unknown, missing
            or the groups combine several attributes.

        Examples
        --------
        >>> import numpy as np
        >>> from skfairlayer.online import StreamState
        >>> state = StreamState("pooled", 0.1, [0.0, 0.0], [0.5, 0.5], [0.5, 0.5],
        ...                     groups=np.array(["F", "M"]))
        >>> state.codes_of(["M", "F"]), state.codes_of(["X"])
        ([1, 0], None)
        """
        index = self._index
        if index is None:
            return None
        try:
            codes = [index[v] for v in values]
        except (KeyError, TypeError):
            return None
        return codes

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state.pop("_index", None)  # rebuilt on load (keys of any type)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._index = _label_index(self.groups)
        self._lock = threading.Lock()


def _label_index(groups):
    """``{label: code}`` for single-attribute labels (None for tuples or unhashable labels)."""
    labels = groups.tolist()
    if any(isinstance(v, tuple | list) for v in labels):  # several attributes
        return None
    try:
        index = {v: i for i, v in enumerate(labels)}
    except TypeError:
        return None
    return index if len(index) == len(labels) else None
