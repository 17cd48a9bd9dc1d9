"""Pooled primal-dual with the exact safeguard: binary outputs, one grouping, demographic parity.

Duals per ordered pair of groups start at the fitted shifts and follow the
pooled gap; each row is then clipped to the band that keeps every pair of
served groups within ``epsilon + b_g + b_h``. The algorithm and its certificate
are in the user guide (docs/user_guide/streaming.rst).
"""

import math

import numpy as np

from .._validation import check_tolerance
from ._report import StreamReport, pooled_gap, pooled_means, slack_schedule

__all__ = ["DEFAULT_STEP", "MARGIN_ROWS", "PRIOR_ROWS", "PooledPrimalDual", "decompose_shifts"]

#: Default dual step of each algorithm (``eta`` for pooled, ``eta_0`` for paper).
DEFAULT_STEP = {"pooled": 0.02, "paper": 0.5}
#: Pseudo-rows (spread by the fitted shares) in the counts that scale the duals,
#: so that the first rows of the stream use the fitted shifts.
PRIOR_ROWS = 100.0
#: Margin ``H`` of the proposal, in row units (``H / n_gh`` in gap units).
MARGIN_ROWS = 8.0


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
    >>> from skfairlayer._stream import decompose_shifts
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




class PooledPrimalDual:
    """Pooled-gap primal-dual with the exact safeguard (see the user guide).

    A row of group ``a`` gets ``clip(s - nu_a)`` (probabilities) or ``1`` iff
    ``2 s - 1 >= nu_a`` (decisions: ties go to class 1, the ``s >= threshold``
    rule), then the safeguard.

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
        self.eta = float(step)
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
        eps, eta, w0 = self.tolerance, self.eta, PRIOR_ROWS
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

    def step(self, scores, codes):
        """Serve a batch row by row; return the outputs and the new state (not applied).

        ``scores`` of shape (n,), ``codes`` of shape (n, 1) (validated by the caller).
        """
        out, new = self._rows(scores.tolist(), codes[:, 0].tolist())
        return np.array(out, dtype=np.int64 if self.output == "decisions" else np.float64), new

    def step_one(self, score, code):
        """:meth:`step` of one row given as Python numbers; returns its output (a number)."""
        out, new = self._rows([score], [code])
        return out[0], new

    def _rows(self, scores, codes):
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
        eps, eta = self.tolerance, self.eta
        for g in range(k):
            for h in range(k):
                if g != h and self.counts[g] and self.counts[h]:
                    e_g = self.counts[g] + PRIOR_ROWS * self.shares[g]
                    e_h = self.counts[h] + PRIOR_ROWS * self.shares[h]
                    n = e_g * e_h / (e_g + e_h)
                    d = self.sums[g] / self.counts[g] - self.sums[h] / self.counts[h]
                    u[g, h] = max(0.0, u[g, h] + eta * (n * (d - eps) + min(MARGIN_ROWS, n * eps)))
        return u

    def report(self, labels):
        return StreamReport(
            output=self.output,
            algorithm=self.algorithm,
            groups=labels,
            counts=np.array(self.counts, dtype=np.int64),
            means=pooled_means(self.counts, self.sums),
            gap=pooled_gap(self.counts, self.sums),
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

