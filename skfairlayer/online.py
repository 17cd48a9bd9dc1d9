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

Other criteria, multiclass outputs, marginal groups (:class:`CriterionStreamState`)
---------------------------------------------------------------------------------
Outputs are rows ``p`` of the simplex (binary: ``(1 - p, p)``). A *block* is a
grouping (the intersectional groups, or one attribute for marginal parity) with
its statistics: for group ``g`` and constrained column ``c``, the weighted pooled
mean ``m_gc = sum_i w_i p_ic / W_g`` with ``W_g = sum_i w_i`` over the served
rows of ``g``. Demographic parity: ``w_i = 1``, every class column (binary: the
positive one). Plug-in equal opportunity: ``w_i = S_iy``, the base posterior of
the conditioning class ``y``, column ``y``. A row's weight is known when it
arrives and is the same in every block.

**Invariant.** Per group and block a slack ``b_g = b(W_g)``; a margin
``delta = epsilon / 4``; one *centre* ``mu`` on the simplex, common to all
blocks. For every block, pair of served groups and constrained column::

    (I1)  |m_gc - m_hc| <= epsilon + b_g + b_h        (the certificate)
    (I2)  |m_gc - mu_c| <= epsilon - delta + b_g      (feasibility of the next row)

**Step** (a row of groups ``a_j``, one per block, weight ``w > 0``).

1. The centre moves to ``mu'``, the projection of the midpoints of the group
   means onto ``Delta ∩ {mu: (I2) holds for every served group}`` (not empty:
   it contains ``mu``).
2. The output is the Euclidean projection of the proposal onto ``F``. The
   proposal is ``s - w nu`` (binary: ``p = clip(s - w nu)``) with ``nu`` the
   Lagrangian shift of pairwise duals per block and column, updated and
   started from the fitted plug-in coefficients as in the binary algorithm;
   for decisions, the vertex of ``argmax(S - offsets - w nu)``. ``F`` is the
   set of rows of the simplex after which the groups ``a_j`` satisfy (I1) and
   (I2) with ``mu'`` and ``b' = b(W_{a_j} + w)``, in every block: a box
   intersected with the simplex (one sort).

``F`` is never empty, because ``p = mu'`` is in it. Per block and column pick
a level ``t`` in ``[max_g (m_g - b_g) - epsilon, min_g (m_g + b_g)] ∩ [mu'_c -
epsilon + delta, mu'_c - delta]`` (not empty by (I1), (I2) and ``delta <=
epsilon / 2``): every group lies in ``[t - b_g, t + epsilon + b_g]`` and
``mu'`` in ``[t + delta, t + epsilon - delta]``. Serving ``mu'`` moves the mean
of ``a`` to ``(W m + w mu') / W'`` (``W' = W + w``), inside ``[t - b', t +
epsilon + b']`` as soon as

    ``W' (delta + b(W')) >= W (delta + b(W))``,

a floor of the slack schedule (``b = max((c_b / sqrt(n_eff) - epsilon)_+,
floor)``, ``n_eff = W^2 / sum w^2``: the row count for unit weights).
That interval implies (I1) with every other group and (I2) with ``mu'``, in
every block at once. Without the common centre this fails: on the simplex
(three small groups near its vertices leave a per-class box whose lower ends
sum above one), and across blocks (two attributes can ask a row for
disjoint intervals).

**Decisions.** A fractional *virtual* stream runs the step above, with
slacks ``b_v`` whose target is lowered by ``D c_max / W`` (``c_max``: the most
cells a group can span) and allowed down to ``-delta`` (the proof above holds
for ``b >= -delta``), and each decision rounds it: the class of largest deficit ``e_c + w
p_c``, where ``e`` accumulates ``w (p - onehot(y))`` per *cell* (the row's
combination of groups over the blocks). The deficits sum to ``w <= 1``, so the
chosen one is at least ``w / K``: every ``e_c`` stays above ``-(K - 1) / K``,
hence below ``D = (K - 1)^2 / K`` (``1 / 2`` for binary). A group's served
weighted rate is within ``D cells_g / W_g`` of its virtual mean, so the
certificate below holds with ``b_g = b_v + D cells_g / W_g``.

**Certificate.** At every ``T``, every block's pooled gap is at most
``epsilon + B_(1) + B_(2)``, the two largest of ``B_g = b_g`` (probabilities)
or ``b_g + D cells_g / W_g`` (decisions) over its served groups: exactly
``epsilon`` once every group has weight about ``(c_b / epsilon)^2`` (and ``D
cells_g / delta`` for decisions).

**Mean residual.** Its plug-in rows ``|mean_g(S_c) - mean_g(p_c)| <=
epsilon`` are met by the base scores: probabilities pass through (residual 0).
Decisions keep, per cell, ``e = sum (S - onehot(y)) >= -R(N)`` with ``R(N) =
max(epsilon N / (K - 1), (K - 1) / K)``: the base decision ``argmax S`` when it
keeps that, else the largest deficit (which always does). A group's residual is
at most ``sum over its cells of max(epsilon N_cell, D) / N_g``.

**What cannot stream.** Equalized odds, and equal opportunity over every class
of a multiclass target, put each row in several statistics with different
plug-in weights. Served rows never change, so a stream can make the pooled
constraint unreachable: if group ``h`` is served first with separated scores
(its rates for ``Y = 1`` and ``Y = 0`` far apart) and then only rows of group
``a`` whose posteriors all equal ``1 / 2``, group ``a``'s two rates are equal
whatever is served, and one of its gaps to ``h`` stays large forever. (The
common-centre construction would hold, but only by forcing every group's rate
for ``Y = 1`` near its rate for ``Y = 0``: a useless classifier.) These raise.

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
    "CriterionStreamState",
    "StreamReport",
    "StreamState",
    "decompose_shifts",
    "penalized_projection",
    "project_box_simplex",
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
#: ``delta / epsilon``: margin of the common centre of :class:`CriterionStreamState`.
CENTER_MARGIN = 0.25
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
    criterion : str, default="demographic_parity"
        The criterion whose pooled statistics are reported. For
        ``"mean_residual"``, ``gap`` is the largest absolute residual
        ``|mean_g(base score) - mean_g(output)|`` instead of a difference
        between groups.
    weights : ndarray or None, default=None
        Plug-in criteria: per group, the summed row weights ``W_g`` (base
        posteriors of the conditioning class) the means are weighted by.
        ``None`` when every row weighs one.

    With several classes, ``means`` has one column per constrained class
    column (squeezed when there is one) and ``gap`` is the largest over them.
    With ``groups="marginal"``, ``groups``, ``counts``, ``means``, ``weights``,
    ``duals`` and ``shifts`` are lists with one entry per attribute, and
    ``gap`` and ``certificate`` are the largest over the attributes.

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
    criterion: str = "demographic_parity"
    weights: object = None

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
    """``{label: code}`` for single-attribute labels (None for tuples or unhashable labels).

    With one array of labels per block (marginal groups): a list of those, or
    None when one block has no index.
    """
    if not isinstance(groups, np.ndarray):
        indexes = [_label_index(np.asarray(g)) for g in groups]
        return None if any(i is None for i in indexes) else indexes
    labels = groups.tolist()
    if any(isinstance(v, tuple | list) for v in labels):  # several attributes
        return None
    try:
        index = {v: i for i, v in enumerate(labels)}
    except TypeError:
        return None
    return index if len(index) == len(labels) else None


# ---------------------------------------------------------------------------
# Other criteria, multiclass outputs and marginal groups (module docstring).
# ---------------------------------------------------------------------------
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
    >>> from skfairlayer.online import project_box_simplex
    >>> project_box_simplex([0.7, 0.2, 0.1], [0.0, 0.0, 0.2], [0.5, 1.0, 1.0])
    array([0.5, 0.3, 0.2])
    """
    v = [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
    lo = [float(x) for x in np.asarray(lower, dtype=np.float64).ravel()]
    hi = [float(x) for x in np.asarray(upper, dtype=np.float64).ravel()]
    return np.array(_box_simplex(v, lo, hi))


def _box_simplex(v, lo, hi):
    """:func:`project_box_simplex` on Python lists (the per-row path)."""
    k = len(v)
    lo = [x if x > 0.0 else 0.0 for x in lo]
    hi = [x if x < 1.0 else 1.0 for x in hi]
    for c in range(k):
        if lo[c] > hi[c]:  # rounding-level inconsistency: meet in the middle
            lo[c] = hi[c] = 0.5 * (lo[c] + hi[c])
    s_lo, s_hi = math.fsum(lo), math.fsum(hi)
    if s_lo >= 1.0:
        return [x / s_lo for x in lo]
    if s_hi <= 1.0:
        return [x / s_hi for x in hi]
    # f(tau) = sum clip(v - tau, lo, hi) falls from s_hi to s_lo; coordinate c is
    # free (slope -1) between the breakpoints v_c - hi_c and v_c - lo_c.
    events = sorted([(v[c] - hi[c], 1) for c in range(k)] + [(v[c] - lo[c], -1) for c in range(k)])
    f, free, prev = s_hi, 0, events[0][0]
    tau = events[-1][0]
    for t, change in events:
        f_t = f - free * (t - prev)
        if f_t <= 1.0 and free:
            tau = prev + (f - 1.0) / free
            break
        f, prev, free = f_t, t, free + change
    p = [min(max(v[c] - tau, lo[c]), hi[c]) for c in range(k)]
    r = 1.0 - math.fsum(p)
    if r != 0.0:  # rounding: put the residual on the coordinate with most room
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
    (intersectional) or several (marginal). See the module docstring for the
    invariant, the step and the certificate. The per-row work is on Python
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
    _STATE = ("weights", "squares", "sums", "slacks", "counts", "served", "cells", "cell_errors",
              "center")

    def __init__(self, tolerance, *, n_classes, binary, columns, group_sizes, weight_class,
                 coefs, offsets, shares, output="proba", step=DEFAULT_STEP["pooled"]):
        self.tolerance = check_tolerance(tolerance)
        self.delta = CENTER_MARGIN * self.tolerance
        self.output = output
        self.step = float(step)
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
    def _row_weights(self, scores):
        if self.weight_class is None:
            return [1.0] * scores.shape[0]
        if self.binary:
            w = scores if self.weight_class == 1 else 1.0 - scores
        else:
            w = scores[:, self.weight_class]
        return np.clip(w, 0.0, 1.0).tolist()

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
        eps, eta = self.tolerance, self.step
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
        """Working copy of the state (a batch is committed only when it succeeds)."""
        st = {}
        for name in ("weights", "squares", "slacks", "counts", "cells"):
            st[name] = [list(x) for x in getattr(self, name)]
        for name in ("sums", "served"):
            st[name] = [[list(r) for r in x] for x in getattr(self, name)]
        st["cell_errors"] = [list(r) for r in self.cell_errors]
        st["cell_index"] = dict(self.cell_index)
        st["center"] = list(self.center)
        return st

    def step_rows(self, scores, codes):
        """Serve a batch row by row; return the outputs and the new state (not applied).

        ``scores`` is of shape (n,) (binary) or (n, K); ``codes`` of shape (n,
        n_blocks) (validated by the caller).
        """
        st = self._state()
        weights = self._row_weights(scores)
        out = []
        adjusted = 0
        for s, groups, w in zip(scores.tolist(), codes.tolist(), weights, strict=True):
            row = [1.0 - s, s] if self.binary else s
            value, changed = self._row(st, row, groups, w)
            out.append(value)
            adjusted += changed
        return out, (st, adjusted)

    def _row(self, st, row, groups, w):
        eps, delta, cols = self.tolerance, self.delta, self.columns
        K, m, decisions = self.n_classes, len(self.columns), self.decisions
        blocks = []
        shift = [0.0] * m
        for j, a in enumerate(groups):
            weights, sums, squares = st["weights"][j], st["sums"][j], st["squares"][j]
            means = self._means(weights, sums)
            self._dual_shift(j, a, weights, squares, means, shift)
            blocks.append((a, weights, sums, st["slacks"][j], means, squares))
        # Proposal: s - w * shift (binary: p = clip(s - nu)), or the proposed class.
        if decisions:
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
            v = [0.0] * K
            v[proposed] = 1.0
        else:
            v = list(row)
            if self.binary:
                v[1] -= w * shift[0]
                v[0] += w * shift[0]
            else:
                for c, x in zip(cols, shift, strict=True):
                    v[c] -= w * x
        for j, a in enumerate(groups):
            st["counts"][j][a] += 1
        zeros, ones = [0.0] * K, [1.0] * K
        if w <= 0.0:  # the row is in no statistic
            if decisions:
                return proposed, False
            p = _box_simplex(v, zeros, ones)
            return (p[1] if self.binary else p), False

        # 1. The centre: midpoints of the group means, projected onto Delta ∩ (I2).
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
        if served_any:
            target, lower, upper = list(st["center"]), list(zeros), list(ones)
            for c, col in enumerate(cols):
                target[col] = 0.5 * (low[c] + high[c])
                lower[col] = max(lo_mu[c], 0.0)
                upper[col] = min(hi_mu[c], 1.0)
            if _consistent(lower, upper):
                center = _box_simplex(target, lower, upper)
            else:  # rounding-level: the current centre is in the set
                center = st["center"]
        else:
            center = _box_simplex(v, zeros, ones)

        # 2. The row's box: (I1) and (I2) after serving it, in every block.
        lower, upper = list(zeros), list(ones)
        lowest = -delta if decisions else 0.0
        rounding = self.rounding * self.max_cells if decisions else 0.0
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
        # Otherwise rounding-level (tiny weights): the reference row is feasible exactly.
        p = _box_simplex(v, lower, upper) if _consistent(lower, upper) else list(center)

        for (a, weights, sums, slacks, _, squares), (b_new, w_new) in zip(
            blocks, updates, strict=True
        ):
            s_a = sums[a]
            for c, col in enumerate(cols):
                s_a[c] += w * p[col]
            weights[a] = w_new
            squares[a] += w * w
            slacks[a] = b_new
        st["center"] = center
        if not decisions:
            changed = False
            if any((x == lo and lo > 0.0) or (x == hi and hi < 1.0)
                   for x, lo, hi in zip(p, lower, upper, strict=True)):
                # A safeguard bound is active: compare with the unconstrained projection.
                free = _box_simplex(v, zeros, ones)
                changed = any(abs(x - y) > 1e-12 for x, y in zip(p, free, strict=True))
            return (p[1] if self.binary else p), changed

        # Decisions: round the virtual row by the largest deficit of the row's cell.
        key = 0
        for a, k in zip(groups, self.group_sizes, strict=True):
            key = key * k + a
        cell = st["cell_index"].get(key)
        if cell is None:
            cell = st["cell_index"][key] = len(st["cell_errors"])
            st["cell_errors"].append([0.0] * K)
            for j, a in enumerate(groups):
                st["cells"][j][a] += 1
        deficit = [e + w * x for e, x in zip(st["cell_errors"][cell], p, strict=True)]
        best = max(deficit)
        y = proposed if deficit[proposed] >= best else deficit.index(best)
        deficit[y] -= w
        st["cell_errors"][cell] = deficit
        if y in cols:
            c = cols.index(y)
            for j, a in enumerate(groups):
                st["served"][j][a][c] += w
        return y, y != proposed

    def commit(self, new_state, n_rows):
        st, adjusted = new_state
        for name in self._STATE:
            setattr(self, name, st[name])
        self.cell_index = st["cell_index"]
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
        eps, eta, m = self.tolerance, self.step, len(self.columns)
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

    def report(self, groups, criterion):
        single = len(self.group_sizes) == 1
        one = len(self.columns) == 1
        duals = [u[0] if one else u for u in self.duals()]
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=groups,
            counts=_squeeze(self._arrays("counts"), single),
            means=_squeeze(self.means(), single, one),
            gap=self.gap(),
            tolerance=self.tolerance,
            certificate=self.certificate(),
            duals=_squeeze(duals, single),
            shifts=_squeeze(self.shifts(), single, one),
            n_served=self.n_served,
            n_adjusted=self.n_adjusted,
            criterion=criterion,
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


def _consistent(lower, upper):
    """Whether the box meets the simplex (up to nothing: exact comparison)."""
    return all(x <= y for x, y in zip(lower, upper, strict=True)) and (
        math.fsum(lower) <= 1.0 <= math.fsum(upper)
    )


class PooledResidual:
    """Plug-in mean residual: probabilities pass through; decisions round the base scores.

    Parameters
    ----------
    tolerance : float
        The tolerance ``epsilon`` of ``|mean_g(S_c) - mean_g(output_c)|``.
    n_classes : int
        Number of classes ``K`` (2 for binary outputs).
    binary : bool
        Whether scores are 1-D positive-class probabilities.
    group_sizes : sequence of int
        Number of groups of each block.
    output : {"proba", "decisions"}, default="proba"
        What the stream serves.
    """

    algorithm = "pooled"

    def __init__(self, tolerance, *, n_classes, binary, group_sizes, output="proba"):
        self.tolerance = check_tolerance(tolerance)
        self.n_classes = int(n_classes)
        self.binary = bool(binary)
        self.group_sizes = tuple(int(k) for k in group_sizes)
        self.output = output
        self.rounding = (self.n_classes - 1) ** 2 / self.n_classes
        self.reset()

    def reset(self):
        """Forget everything served."""
        K = self.n_classes
        self.counts = [np.zeros(k, dtype=np.int64) for k in self.group_sizes]
        self.score_sums = [np.zeros((k, K)) for k in self.group_sizes]
        self.output_sums = [np.zeros((k, K)) for k in self.group_sizes]
        self.cell_index = {}
        self.cell_groups = np.zeros((0, len(self.group_sizes)), dtype=np.int64)
        self.cell_counts = np.zeros(0, dtype=np.int64)
        self.cell_errors = np.zeros((0, K))
        self.n_served = 0
        self.n_adjusted = 0

    def step_rows(self, scores, codes):
        """Serve a batch; return the outputs and the new state (not applied)."""
        K = self.n_classes
        counts = [c.copy() for c in self.counts]
        score_sums = [s.copy() for s in self.score_sums]
        output_sums = [s.copy() for s in self.output_sums]
        index = dict(self.cell_index)
        groups = list(self.cell_groups)
        cell_counts = self.cell_counts.tolist()
        errors = [row.copy() for row in self.cell_errors]
        out, adjusted = [], 0
        for i in range(scores.shape[0]):
            s = scores[i]
            row = np.array([1.0 - s, s]) if self.binary else np.asarray(s, dtype=np.float64)
            codes_i = codes[i].tolist()
            if self.output == "proba":
                value = float(s) if self.binary else row
                served = row
            else:
                key = 0
                for a, k in zip(codes_i, self.group_sizes, strict=True):
                    key = key * k + a
                cell = index.get(key)
                if cell is None:
                    cell = index[key] = len(errors)
                    errors.append(np.zeros(K))
                    groups.append(np.array(codes_i, dtype=np.int64))
                    cell_counts.append(0)
                n_new = cell_counts[cell] + 1
                reach = max(self.tolerance * n_new / (K - 1), (K - 1) / K)
                preferred = int(s >= 0.5) if self.binary else int(np.argmax(row))
                deficit = errors[cell] + row
                if deficit[preferred] - 1.0 >= -reach:
                    value = preferred
                else:
                    value = int(np.argmax(deficit))
                    adjusted += 1
                deficit[value] -= 1.0
                errors[cell] = deficit
                cell_counts[cell] = n_new
                served = np.zeros(K)
                served[value] = 1.0
            for j, a in enumerate(codes_i):
                counts[j][a] += 1
                score_sums[j][a] += row
                output_sums[j][a] += served
            out.append(value)
        new = (counts, score_sums, output_sums, index, groups, cell_counts, errors, adjusted)
        return out, new

    def commit(self, new_state, n_rows):
        counts, score_sums, output_sums, index, groups, cell_counts, errors, adjusted = new_state
        self.counts, self.score_sums, self.output_sums = counts, score_sums, output_sums
        self.cell_index = index
        self.cell_groups = np.array(groups, dtype=np.int64).reshape(-1, len(self.group_sizes))
        self.cell_counts = np.array(cell_counts, dtype=np.int64)
        self.cell_errors = np.array(errors).reshape(-1, self.n_classes)
        self.n_served += n_rows
        self.n_adjusted += adjusted

    def _columns(self):
        return [1] if self.binary else list(range(self.n_classes))

    def means(self):
        cols = self._columns()
        out = []
        for n, s in zip(self.counts, self.output_sums, strict=True):
            with np.errstate(invalid="ignore", divide="ignore"):
                m = np.where((n > 0)[:, None], s / n[:, None], np.nan)[:, cols]
            out.append(m[:, 0] if self.binary else m)
        return out

    def gap(self):
        cols = self._columns()
        worst = 0.0
        for n, s, o in zip(self.counts, self.score_sums, self.output_sums, strict=True):
            served = n > 0
            if served.any():
                residual = (s[served] - o[served])[:, cols] / n[served][:, None]
                worst = max(worst, float(np.abs(residual).max()))
        return worst

    def certificate(self):
        if self.output == "proba":
            return self.tolerance  # the residual is exactly 0
        worst = 0.0
        per_cell = np.maximum(self.tolerance * self.cell_counts, self.rounding)
        for j, n in enumerate(self.counts):
            total = np.bincount(self.cell_groups[:, j], weights=per_cell, minlength=n.size)
            served = n > 0
            if served.any():
                worst = max(worst, float((total[served] / n[served]).max()))
        return max(worst, self.tolerance)

    def report(self, groups, criterion):
        single = len(self.group_sizes) == 1
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=groups,
            counts=_squeeze([c.copy() for c in self.counts], single),
            means=_squeeze(self.means(), single),
            gap=self.gap(),
            tolerance=self.tolerance,
            certificate=self.certificate(),
            duals=_squeeze([np.zeros((0,)) for _ in self.group_sizes], single),
            shifts=_squeeze([np.zeros(k) for k in self.group_sizes], single),
            n_served=self.n_served,
            n_adjusted=self.n_adjusted,
            criterion=criterion,
        )


#: Streaming kinds of :class:`CriterionStreamState`.
STREAM_KINDS = ("parity", "residual")


class CriterionStreamState(StreamState):
    """Streaming state for multiclass outputs, plug-in criteria and marginal groups.

    The pooled algorithm with a common centre (module docstring): demographic
    parity (binary or multiclass outputs) and plug-in equal opportunity (one
    conditioning class) with ``kind="parity"``; plug-in mean residual with
    ``kind="residual"``. One or several blocks of groups (marginal parity).
    Thread-safe and picklable like :class:`StreamState`.

    Parameters
    ----------
    kind : {"parity", "residual"}
        Which engine.
    tolerance : float
        The tolerance ``epsilon``.
    n_classes : int
        Number of classes (2 for binary outputs).
    binary : bool
        Whether scores are 1-D positive-class probabilities.
    group_sizes : sequence of int
        Number of groups of each block (one block: intersectional groups).
    columns : sequence of int, default=None
        ``kind="parity"``: the constrained output columns (binary: ``(1,)``);
        ``None`` means every column (binary: the positive one).
    weight_class : int or None, default=None
        ``kind="parity"``: class whose base posterior weighs each row
        (plug-in equal opportunity); ``None``: demographic parity.
    coefs : list of ndarray, default=None
        Per block, fitted plug-in shift coefficients of shape (n_groups,
        n_columns); ``None`` means zeros.
    offsets : list of ndarray, default=None
        Per block, fitted decision offsets of shape (n_groups, n_classes);
        ``None`` means zeros.
    shares : list of ndarray, default=None
        Per block, fitted weighted group shares; ``None`` means uniform.
    step : float or None, default=None
        Dual step ``eta``; ``None`` means :data:`DEFAULT_STEP` ``["pooled"]``.
    groups : ndarray or list of ndarray, default=None
        Group labels (a list per block for marginal groups), for reports.
    criterion : str, default="demographic_parity"
        Name reported in :class:`StreamReport`.
    config : tuple, default=None
        Parameters the stream was started with (compared by the estimator).

    Examples
    --------
    Multiclass demographic parity, one row at a time:

    >>> import numpy as np
    >>> from skfairlayer.online import CriterionStreamState
    >>> state = CriterionStreamState("parity", 0.05, n_classes=3, binary=False,
    ...                              group_sizes=[2])
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(3000):
    ...     g = int(rng.integers(2))
    ...     _ = state.partial_proba(rng.dirichlet([1 + 2 * g, 2, 3 - 2 * g])[None], [g])
    >>> report = state.report()
    >>> report.means.shape, bool(report.gap <= report.certificate == 0.05)
    ((2, 3), True)
    """

    def __init__(self, kind, tolerance, *, n_classes, binary, group_sizes, columns=None,
                 weight_class=None, coefs=None, offsets=None, shares=None, step=None,
                 groups=None, criterion="demographic_parity", config=None):
        if kind not in STREAM_KINDS:
            raise ValueError(f"kind must be one of {STREAM_KINDS}. Got {kind!r} instead.")
        self.kind = kind
        self.algorithm = "pooled"
        self.tolerance = check_tolerance(tolerance)
        self.step = DEFAULT_STEP["pooled"] if step is None else float(step)
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step must be a positive number. Got {step!r} instead.")
        self.n_classes = int(n_classes)
        self.binary = bool(binary)
        if self.n_classes < 2 or (self.binary and self.n_classes != 2):
            raise ValueError(
                "n_classes must be at least 2 (exactly 2 with binary=True). Got "
                f"{n_classes!r} instead."
            )
        self.group_sizes = tuple(int(k) for k in group_sizes)
        if not self.group_sizes or min(self.group_sizes) < 1:
            raise ValueError(
                f"group_sizes must list at least one positive size. Got {group_sizes!r} instead."
            )
        if columns is None:
            columns = (1,) if self.binary else tuple(range(self.n_classes))
        self.columns = tuple(int(c) for c in columns)
        if not self.columns or not all(0 <= c < self.n_classes for c in self.columns):
            raise ValueError(
                f"columns must be class indices in [0, {self.n_classes}). Got {columns!r} instead."
            )
        self.weight_class = weight_class
        m, K = len(self.columns), self.n_classes
        self.coefs = [np.zeros((k, m)) for k in self.group_sizes] if coefs is None else coefs
        self.offsets = [np.zeros((k, K)) for k in self.group_sizes] if offsets is None else offsets
        self.shares = [np.full(k, 1.0 / k) for k in self.group_sizes] if shares is None else shares
        self.criterion = criterion
        self.threshold = 0.5
        self.config = config if config is not None else ("pooled", self.tolerance, step, 0.5)
        self._k = self.group_sizes[0] if len(self.group_sizes) == 1 else self.group_sizes
        if groups is None:
            groups = [np.arange(k) for k in self.group_sizes]
            groups = groups[0] if len(groups) == 1 else groups
        self.groups = groups
        self._index = _label_index(self.groups)
        self.streams = {out: self._engine(out) for out in _OUTPUTS}
        self._lock = threading.Lock()

    def _engine(self, output):
        if self.kind == "residual":
            return PooledResidual(self.tolerance, n_classes=self.n_classes, binary=self.binary,
                                  group_sizes=self.group_sizes, output=output)
        return PooledFamilies(
            self.tolerance, n_classes=self.n_classes, binary=self.binary, columns=self.columns,
            group_sizes=self.group_sizes, weight_class=self.weight_class, coefs=self.coefs,
            offsets=self.offsets, shares=self.shares, output=output, step=self.step,
        )

    def restarted(self, config):
        """A new, empty stream with the same layout and ``config = (algorithm, tolerance, step,
        threshold)``.

        Parameters
        ----------
        config : tuple
            The new streaming parameters (``algorithm`` must be ``"pooled"``).

        Returns
        -------
        state : CriterionStreamState
        """
        _, tolerance, step, _ = config
        return CriterionStreamState(
            self.kind, tolerance, n_classes=self.n_classes, binary=self.binary,
            group_sizes=self.group_sizes, columns=self.columns, weight_class=self.weight_class,
            coefs=self.coefs, offsets=self.offsets, shares=self.shares, step=step,
            groups=self.groups, criterion=self.criterion, config=config,
        )

    def codes_of(self, values):
        """Group codes of a list of labels (one block) or of label rows (several blocks).

        Parameters
        ----------
        values : list
            One label per row, or with several blocks one list of labels (one
            per block, in block order) per row.

        Returns
        -------
        codes : list, ndarray of shape (n_samples, n_blocks) or None
            The codes, or None when a label is unknown or missing.
        """
        index = self._index
        if index is None or not isinstance(index, list):
            return super().codes_of(values)
        try:
            codes = [[block[v] for block, v in zip(index, row, strict=True)] for row in values]
        except (KeyError, TypeError, ValueError):
            return None
        return np.array(codes, dtype=np.intp).reshape(-1, len(index))

    def _check(self, scores, codes):
        """Validated scores and codes of shape (n, n_blocks); raises before any state change."""
        if (  # fast path: a float64 batch from the estimator and list codes of one block
            type(scores) is np.ndarray
            and scores.dtype == np.float64
            and type(codes) is list
            and len(self.group_sizes) == 1
            and 0 < len(codes) == scores.shape[0]
            and scores.ndim == (1 if self.binary else 2)
            and (self.binary or scores.shape[1] == self.n_classes)
            and all(type(c) is int and 0 <= c < self._k for c in codes)
            and all(map(math.isfinite, scores.ravel().tolist()))
        ):
            return scores, np.array(codes, dtype=np.intp)[:, None]
        scores = np.asarray(scores, dtype=np.float64)
        if self.binary and scores.ndim == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        expected = 1 if self.binary else 2
        if scores.ndim != expected or scores.shape[0] == 0 or (
            not self.binary and scores.shape[1] != self.n_classes
        ):
            check_scores(scores, name="scores")  # raises the detailed error when it applies
            shape = "(n_samples,)" if self.binary else f"(n_samples, {self.n_classes})"
            raise ValueError(
                f"scores must be of shape {shape}. Got an array of shape {scores.shape} instead."
            )
        check_scores(scores, name="scores")  # NaN or infinity
        n, n_blocks = scores.shape[0], len(self.group_sizes)
        if isinstance(codes, list | tuple) and n_blocks > 1:
            columns = [np.asarray(c) for c in codes]
            if len(columns) != n_blocks or any(c.shape != (n,) for c in columns):
                raise ValueError(
                    f"codes must hold {n_blocks} arrays of shape ({n},), one per block. Got "
                    f"{[c.shape for c in columns]} instead."
                )
            codes = np.column_stack(columns)
        codes = np.asarray(codes)
        if codes.ndim == 1 and n_blocks == 1:
            codes = codes[:, None]
        if codes.shape != (n, n_blocks) or codes.dtype.kind not in "iu":
            raise ValueError(
                f"codes must be integer group codes of shape ({n},) per block ({n_blocks} "
                f"block(s)). Got {codes.dtype} codes of shape {codes.shape} instead."
            )
        sizes = np.array(self.group_sizes)
        if codes.min() < 0 or np.any(codes.max(axis=0) >= sizes):
            raise ValueError(
                f"codes must lie in [0, n_groups) of their block, n_groups={list(sizes)}. Got "
                f"values in [{codes.min()}, {codes.max()}] instead."
            )
        return scores, codes.astype(np.intp, copy=False)

    def _serve(self, output, scores, codes, project):
        scores, codes = self._check(scores, codes)
        stream = self.streams[output]
        with self._lock:
            out, new = stream.step_rows(scores, codes)
            stream.commit(new, scores.shape[0])
        if output == "decisions":
            return np.array(out, dtype=np.int64)
        return np.array(out, dtype=np.float64)

    def partial_proba(self, scores, codes, project=None):
        """Serve probabilities for a batch and update the probability stream.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base probabilities (binary: of the positive class).
        codes : array-like of shape (n_samples,), list of those, or (n_samples, n_blocks)
            Group codes, one array per block.
        project : None
            Unused (the paper's algorithm is not available here).

        Returns
        -------
        proba : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Served probabilities (rows on the simplex).
        """
        return self._serve("proba", scores, codes, project)

    def partial_decisions(self, scores, codes, project=None):
        """Serve decisions for a batch and update the decision stream.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Base probabilities (binary: of the positive class).
        codes : array-like of shape (n_samples,), list of those, or (n_samples, n_blocks)
            Group codes, one array per block.
        project : None
            Unused.

        Returns
        -------
        decisions : ndarray of shape (n_samples,)
            Served class indices (binary: 0 or 1).
        """
        return self._serve("decisions", scores, codes, project)

    def report(self, output="proba", groups=None):
        """Live report of one stream (see :class:`StreamReport`).

        Parameters
        ----------
        output : {"proba", "decisions"}, default="proba"
            Which stream.
        groups : array-like or list, default=None
            Labels to report; ``None`` means the state's ``groups``.

        Returns
        -------
        report : StreamReport
        """
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}. Got {output!r} instead.")
        groups = self.groups if groups is None else groups
        with self._lock:
            return self.streams[output].report(groups, self.criterion)
