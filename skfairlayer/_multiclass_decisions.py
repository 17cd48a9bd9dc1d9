
"""Decisions under any affine criterion: multiclass parity, plug-in equalized odds, custom rows.

The decision problem of a batch: pick one class per row (binary: 0/1) to
maximise the expected accuracy ``sum_i S[i, yhat_i]`` under calibrated scores,
subject to the criterion applied to the *decisions* (one-hot rows ``D``):
every family's group statistics ``m_{f,g}(D)`` (selection rates, or plug-in
true/false-positive rates) within ``[t_f, t_f + tol_f]`` and every extra affine
row within its bounds.

Method
------
1. **LP relaxation** over ``D`` in ``[0, 1]`` with rows on the simplex
   (HiGHS dual simplex, so the answer is a vertex). Within a group the
   relaxation's optimum assigns each row to its best *shifted* score,
   ``argmax_c S[i, c] - sum_f mu_{f,g} w_{f,i} [c = c_f]``, with one shift per
   family and group from the LP multipliers; only rows tied between classes
   are fractional. A vertex has at most as many fractional rows as active
   constraint rows, in practice **at most one row per group and class**.
2. **Rounding.** Each fractional row takes its largest fractional class. If
   the rounded decisions meet every constraint (checked exactly, to ``1e-12``)
   they are returned.
3. **Repair.** Otherwise a small mixed-integer program re-decides the
   fractional rows together with the rows of smallest margin (closest to a
   tie) in each group, all other rows fixed; the neighbourhood widens once
   if needed. Its answer is verified the same way.
4. If no neighbourhood works, the best feasible *constant* decision (all
   rows to one class, e.g. nobody selected) is returned — rate criteria
   always admit one — and otherwise :class:`InfeasibleProblemError` is raised.

Integer decisions cannot always meet a tolerance that the relaxation meets
(``tolerance=0`` with groups of coprime sizes, say): the answer is then the
best decisions found that *do* meet it, never decisions that break it.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from ._quiet import quiet_stdout
from .exceptions import InfeasibleProblemError

__all__ = [
    "AffineDecisions",
    "affine_decisions",
    "class_offsets",
    "decision_shifts",
    "shifted_argmax",
]

#: Verification tolerance of a constraint on decisions (rates are exact ratios).
DECISION_TOL = 1e-12
_MILP_MARGIN = 1e-9  # tighten the MILP's bands so HiGHS' feasibility slack cannot break them


@dataclass
class AffineDecisions:
    """Integer decisions of one batch meeting an affine criterion.

    Attributes
    ----------
    decisions : ndarray of shape (n_samples,), dtype=int
        Class index of each row (binary problems: 0/1).
    shifts : list of ndarray of shape (n_groups_f,)
        Per family, the LP multiplier of each group's statistic: row ``i``'s
        value of class ``c_f`` is lowered by ``shifts[f][g_i] * w_{f,i}``.
    levels : ndarray of shape (n_families,)
        The relaxation's level ``t_f`` of each family.
    method : str
        ``"lp"`` (rounded relaxation), ``"repair"`` (neighbourhood MIP) or
        ``"constant"`` (every row to one class).
    n_fractional : int
        Fractional rows of the relaxation.
    violation : float
        Largest violation of a constraint by ``decisions`` (``<= 1e-12``).
    """

    decisions: np.ndarray
    shifts: list
    levels: np.ndarray
    method: str
    n_fractional: int
    violation: float


def _values(scores):
    """Expected accuracy of each (row, class): ``S`` itself; binary ``[1 - s, s]``."""
    if scores.ndim == 1:
        return np.column_stack([1.0 - scores, scores])
    return scores


def _family_column(fam, binary):
    # Binary outputs: the families read the positive class, column 1 of [1 - s, s].
    return 1 if binary else fam.column


def _row_scale(fam):
    """Per group, a factor turning the weights into O(1) coefficients (better conditioned)."""
    inside = fam.codes >= 0
    counts = np.bincount(fam.codes[inside], minlength=fam.n_groups).astype(np.float64)
    return np.maximum(counts, 1.0)


def _constraint_blocks(problem, n, K):
    """Sparse rows over ``x = [D.ravel(), t]`` with their bounds, and bookkeeping."""
    binary = problem.scores.ndim == 1
    n_fam = len(problem.families)
    n_var = n * K + n_fam
    mats, lo, hi, kinds = [], [], [], []
    if K > 1:  # one class per row
        mats.append(sp.hstack([
            sp.kron(sp.eye(n, format="csr"), np.ones((1, K)), format="csr"),
            sp.csr_matrix((n, n_fam)),
        ]))
        lo.append(np.ones(n))
        hi.append(np.ones(n))
        kinds.append(("simplex", None))
    for f, fam in enumerate(problem.families):
        inside = np.flatnonzero(fam.codes >= 0)
        col = _family_column(fam, binary)
        scale = _row_scale(fam)
        g = fam.codes[inside]
        data = fam.weights[inside] * scale[g]
        m = sp.csr_matrix(
            (
                np.concatenate([data, -scale]),
                (
                    np.concatenate([g, np.arange(fam.n_groups)]),
                    np.concatenate([inside * K + col, np.full(fam.n_groups, n * K + f)]),
                ),
            ),
            shape=(fam.n_groups, n_var),
        )
        mats.append(m)
        lo.append(np.zeros(fam.n_groups))
        hi.append(scale * fam.tolerance)
        kinds.append(("family", f))
    if problem.rows is not None:
        r = problem.rows
        A = sp.csr_matrix(r.matrix)
        if binary:  # rows act on the positive-class output: column 1 of each pair
            A = sp.csr_matrix((A.data, 2 * A.indices + 1, A.indptr), shape=(A.shape[0], 2 * n))
        mats.append(sp.hstack([A, sp.csr_matrix((A.shape[0], n_fam))], format="csr"))
        lo.append(np.asarray(r.lower, dtype=np.float64))
        hi.append(np.asarray(r.upper, dtype=np.float64))
        kinds.append(("rows", None))
    return mats, lo, hi, kinds, n_var


def violation(problem, decisions):
    """Largest violation of the problem's families and rows by integer decisions."""
    n = problem.scores.shape[0]
    if problem.scores.ndim == 1:
        onehot = decisions.astype(np.float64)
    else:
        onehot = np.zeros(problem.scores.shape)
        onehot[np.arange(n), decisions] = 1.0
    return problem.parity_violation(onehot)


def shifted_argmax(values, shift):
    """``argmax_c values[i, c] - shift[i, c]``, ties to the lower class index."""
    return np.argmax(values - shift, axis=1)


def _round(x, values):
    """Largest entry of each row; ties by the larger expected accuracy, then class index."""
    key = x + 1e-9 * values
    return np.argmax(key, axis=1)


def affine_decisions(problem, *, time_limit=20.0):
    """Integer decisions of maximal expected accuracy meeting an affine criterion.

    Parameters
    ----------
    problem : ProjectionProblem
        Scores (1-D binary or 2-D multiclass), families and optional rows;
        the constraints apply to the decisions (one-hot rows).
    time_limit : float, default=20.0
        Seconds allowed to each HiGHS call.

    Returns
    -------
    AffineDecisions

    Raises
    ------
    InfeasibleProblemError
        If neither the relaxation nor any integer decision meets the constraints.

    Examples
    --------
    >>> import numpy as np
    >>> from skfairlayer._criteria import build_problem
    >>> from skfairlayer._multiclass_decisions import affine_decisions
    >>> S = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4]])
    >>> codes = np.array([0, 0, 1, 1])
    >>> problem = build_problem("demographic_parity", S, [(codes, 2)], 0.0)
    >>> affine_decisions(problem).decisions
    array([0, 1, 0, 1])
    """
    scores = problem.scores
    binary = scores.ndim == 1
    n = scores.shape[0]
    values = _values(scores)
    K = values.shape[1]
    res, A, lo_all, hi_all, shifts, levels = _relaxation(problem, time_limit)
    if res.status != 0 or res.x is None:
        x = None
        n_frac = -1
    else:
        x = res.x[: n * K].reshape(n, K)
        frac = np.any((x > 1e-9) & (x < 1 - 1e-9), axis=1)
        n_frac = int(frac.sum())
        dec = _round(x, values)
        viol = violation(problem, _from_classes(dec, binary))
        if viol <= DECISION_TOL:
            return AffineDecisions(_from_classes(dec, binary), shifts, levels, "lp", n_frac, viol)

    if x is not None and _shared_uniform(problem):
        fixed = _count_repair(problem, values, x, levels, time_limit)
        if fixed is not None:
            out = _from_classes(fixed, binary)
            viol = violation(problem, out)
            if viol <= DECISION_TOL:
                return AffineDecisions(out, shifts, levels, "counts", n_frac, viol)
    if x is not None:
        # Margin of each row: its best shifted value minus the runner-up.
        shifted = values - _shift_matrix(problem, shifts, n, K, binary)
        top2 = np.sort(shifted, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        margin[frac] = -np.inf
        for per_group in (4 * K + 4, 32 * K + 32):
            free = _neighbourhood(problem, margin, per_group)
            fixed = _repair(problem, values, dec, free, A, lo_all, hi_all, n, K, time_limit)
            if fixed is not None:
                out = _from_classes(fixed, binary)
                viol = violation(problem, out)
                if viol <= DECISION_TOL:
                    return AffineDecisions(out, shifts, levels, "repair", n_frac, viol)
    best = None
    for cls in range(K):
        out = _from_classes(np.full(n, cls), binary)
        viol = violation(problem, out)
        if viol <= DECISION_TOL:
            val = values[:, cls].sum()
            if best is None or val > best[0]:
                best = (val, out, viol)
    if best is not None:
        return AffineDecisions(best[1], shifts, levels, "constant", n_frac, best[2])
    raise InfeasibleProblemError(
        "No integer decisions found that meet the criterion on this batch (the relaxation "
        "does, but its rounding and a local search did not). Increase the tolerance or "
        "decide on larger batches."
    )


def _shared_uniform(problem):
    """Uniform-weight families over one shared grouping, no extra rows (demographic parity)."""
    fams = problem.families
    if not fams or problem.rows is not None:
        return False
    first = fams[0].codes
    return all(
        f.uniform and f.n_groups == fams[0].n_groups and np.array_equal(f.codes, first)
        for f in fams
    ) and bool(np.all(first >= 0))


def _count_repair(problem, values, x, levels, time_limit):
    """Integer class counts per group inside the relaxation's bands, then an exact assignment.

    For demographic parity the constraints only see each group's class
    counts. Rounding the relaxation's counts (largest remainder, kept inside
    ``[n_g t_c, n_g (t_c + tol_c)]`` and summing to ``n_g``) gives counts that
    meet parity with the relaxation's levels; assigning rows to classes with
    those capacities is a transportation problem, whose constraint matrix is
    totally unimodular, so a simplex vertex is integral.
    """
    binary = problem.scores.ndim == 1
    n, K = values.shape
    fams = problem.families
    codes = fams[0].codes
    k = fams[0].n_groups
    sizes = np.bincount(codes, minlength=k)
    lp_counts = np.zeros((k, K))
    np.add.at(lp_counts, codes, x)
    counts = np.floor(lp_counts + 1e-9).astype(np.int64)
    lo = np.zeros((k, K), dtype=np.int64)
    hi = np.tile(sizes[:, None], (1, K)).astype(np.int64)
    for f, fam in enumerate(fams):
        col = _family_column(fam, binary)
        t, eps = levels[f], fam.tolerance
        lo[:, col] = np.ceil(sizes * t - 1e-9 * sizes).astype(np.int64)
        hi[:, col] = np.floor(sizes * (t + eps) + 1e-9 * sizes).astype(np.int64)
    lo, hi = np.clip(lo, 0, sizes[:, None]), np.clip(hi, 0, sizes[:, None])
    if np.any(lo > hi) or np.any(lo.sum(axis=1) > sizes) or np.any(hi.sum(axis=1) < sizes):
        return None
    counts = np.clip(counts, lo, hi)
    for g in range(k):
        short = sizes[g] - counts[g].sum()
        rem = lp_counts[g] - counts[g]
        order = np.argsort(-rem, kind="stable")
        while short != 0:
            moved = False
            for c in order if short > 0 else order[::-1]:
                if short > 0 and counts[g, c] < hi[g, c]:
                    counts[g, c] += 1
                    short -= 1
                    moved = True
                elif short < 0 and counts[g, c] > lo[g, c]:
                    counts[g, c] -= 1
                    short += 1
                    moved = True
                if short == 0:
                    break
            if not moved:
                return None
    # Transportation LP: each row one class, each (group, class) exactly its count.
    rows_onehot = sp.kron(sp.eye(n, format="csr"), np.ones((1, K)), format="csr")
    cap = sp.csr_matrix(
        (np.ones(n * K), (np.repeat(codes, K) * K + np.tile(np.arange(K), n), np.arange(n * K))),
        shape=(k * K, n * K),
    )
    with quiet_stdout():  # HiGHS prints from C
        res = linprog(
            -values.ravel(),
            A_eq=sp.vstack([rows_onehot, cap], format="csr"),
            b_eq=np.concatenate([np.ones(n), counts.ravel().astype(np.float64)]),
            bounds=(0.0, 1.0), method="highs-ds", options={"time_limit": time_limit},
        )
    if res.x is None:
        return None
    xi = res.x.reshape(n, K)
    if np.any(np.minimum(xi, 1.0 - xi) > 1e-6):
        return None
    return np.argmax(xi, axis=1)


def _relaxation(problem, time_limit):
    """Solve the LP relaxation; return it with the constraint rows, shifts and levels."""
    scores = problem.scores
    n = scores.shape[0]
    values = _values(scores)
    K = values.shape[1]
    mats, lo, hi, kinds, n_var = _constraint_blocks(problem, n, K)
    A = sp.vstack(mats, format="csr") if mats else sp.csr_matrix((0, n_var))
    lo_all = np.concatenate(lo) if lo else np.zeros(0)
    hi_all = np.concatenate(hi) if hi else np.zeros(0)
    c = np.concatenate([-values.ravel(), np.zeros(n_var - n * K)])
    bounds = [(0.0, 1.0)] * (n * K) + [(None, None)] * (n_var - n * K)
    # linprog form: equality rows where lo == hi, the rest as two one-sided rows.
    eq = lo_all == hi_all
    fin_hi, fin_lo = ~eq & np.isfinite(hi_all), ~eq & np.isfinite(lo_all)
    A_ub = sp.vstack([A[fin_hi], -A[fin_lo]], format="csr")
    b_ub = np.concatenate([hi_all[fin_hi], -lo_all[fin_lo]])
    with quiet_stdout():  # HiGHS prints from C
        res = linprog(
            c, A_ub=A_ub if A_ub.shape[0] else None, b_ub=b_ub if A_ub.shape[0] else None,
            A_eq=A[eq] if eq.any() else None, b_eq=hi_all[eq] if eq.any() else None,
            bounds=bounds, method="highs-ds", options={"time_limit": time_limit},
        )
    if res.status == 2:
        raise InfeasibleProblemError(
            "No decisions, even randomised, meet the criterion on this batch: the constraints "
            "are infeasible. Increase the tolerance."
        )
    shifts, levels = _lp_shifts(problem, res, A, fin_hi, fin_lo, kinds, n, K)
    return res, A, lo_all, hi_all, shifts, levels


def decision_shifts(problem, *, time_limit=20.0):
    """Per family and group, the value shift per unit weight of the relaxed decision problem.

    Deciding ``argmax_c S[i, c] - sum_f shifts[f][g_i] w_{f,i} [c = c_f]`` reproduces
    the relaxation's decisions (up to ties): the decision rule of a group.

    Parameters
    ----------
    problem : ProjectionProblem
        The decision problem.
    time_limit : float, default=20.0
        Seconds allowed to HiGHS.

    Returns
    -------
    shifts : list of ndarray of shape (n_groups_f,)
    """
    return _relaxation(problem, time_limit)[4]


def rows_total(rows):
    """Number of equality rows of the stacked blocks."""
    return sum(r.shape[0] for r in rows)


def class_offsets(scores, groupings, decisions, *, time_limit=20.0):
    """Per grouping, group and class, offsets that reproduce the class counts of ``decisions``.

    The rule ``argmax_c S[i, c] - sum_a offsets[a][g_a(i), c]`` (binary: the
    positive class iff ``s - o_1 > 1 - s - o_0``) is the best assignment of the
    rows to classes with the counts of ``decisions`` in every group: the
    multipliers of those counts in the assignment LP. It turns batch decisions
    on a training set into a row-by-row rule for new rows. (Criteria
    conditioned on the label have degenerate multipliers in their own plug-in
    decision problem, because the expected accuracy of a group is a function
    of its plug-in rates; the counts' multipliers are not.)

    Parameters
    ----------
    scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        Calibrated scores.
    groupings : list of (codes, n_groups)
        Groupings whose per-group class counts the rule should reproduce.
    decisions : ndarray of shape (n_samples,)
        Class index of each row (binary: 0/1).
    time_limit : float, default=20.0
        Seconds allowed to HiGHS.

    Returns
    -------
    offsets : list of ndarray of shape (n_groups, n_classes)
    """
    values = _values(scores)
    n, K = values.shape
    rows = [sp.kron(sp.eye(n, format="csr"), np.ones((1, K)), format="csr")]
    rhs = [np.ones(n)]
    for codes, k in groupings:
        rows.append(sp.csr_matrix(
            (np.ones(n * K), (np.repeat(codes, K) * K + np.tile(np.arange(K), n),
                              np.arange(n * K))),
            shape=(k * K, n * K),
        ))
        counts = np.zeros((k, K))
        np.add.at(counts, (codes, decisions), 1.0)
        rhs.append(counts.ravel())
    with quiet_stdout():  # HiGHS prints from C
        res = linprog(
            -values.ravel(), A_eq=sp.vstack(rows, format="csr"), b_eq=np.concatenate(rhs),
            bounds=(0.0, 1.0), method="highs-ds", options={"time_limit": time_limit},
        )
    out = []
    start = n
    solved = res.eqlin is not None and np.size(res.eqlin.marginals) == rows_total(rows)
    if not solved:
        warnings.warn(
            "The decision rule of the fitted layer could not be learned (the assignment LP "
            f"stopped: {res.message}); the fitted decisions fall back to the base's argmax. "
            "Batch decisions are unaffected.",
            UserWarning,
            stacklevel=3,
        )
    for _, k in groupings:
        if not solved:
            out.append(np.zeros((k, K)))
            continue
        # Minimisation of -value: the marginal of a count row is minus its price.
        price = -np.asarray(res.eqlin.marginals)[start : start + k * K].reshape(k, K)
        out.append(price - price.mean(axis=1, keepdims=True))
        start += k * K
    return out


def _from_classes(dec, binary):
    return dec.astype(int) if not binary else (dec == 1).astype(int)


def _lp_shifts(problem, res, A, fin_hi, fin_lo, kinds, n, K):
    """Per family and group, the multiplier ``mu`` (value shift per unit weight); levels."""
    n_fam = len(problem.families)
    levels = np.full(n_fam, np.nan)
    shifts = [np.zeros(f.n_groups) for f in problem.families]
    if res.x is None or res.ineqlin is None:
        return shifts, levels
    levels = res.x[n * K :][:n_fam].copy()
    # lambda >= 0 of each one-sided row (minimisation: marginals are <= 0).
    lam = np.zeros(A.shape[0])
    m = -np.asarray(res.ineqlin.marginals)
    n_hi = int(fin_hi.sum())
    lam[np.flatnonzero(fin_hi)] += m[:n_hi]
    lam[np.flatnonzero(fin_lo)] -= m[n_hi:]
    start = 0
    for kind, f in kinds:
        size = problem.rows.matrix.shape[0] if kind == "rows" else (
            n if kind == "simplex" else problem.families[f].n_groups
        )
        if kind == "family":
            fam = problem.families[f]
            # Rows were scaled by _row_scale: d value / d weight = lam * scale.
            shifts[f] = lam[start : start + size] * _row_scale(fam)
        start += size
    return shifts, levels


def _shift_matrix(problem, shifts, n, K, binary):
    """``sum_f shifts[f][g_i] w_{f,i}`` placed at each family's column."""
    out = np.zeros((n, K))
    for fam, mu in zip(problem.families, shifts, strict=True):
        inside = fam.codes >= 0
        col = _family_column(fam, binary)
        out[inside, col] += mu[fam.codes[inside]] * fam.weights[inside]
    return out


def _neighbourhood(problem, margin, per_group):
    """Rows to re-decide: in every family group, those of smallest margin (fractional first)."""
    free = np.zeros(margin.size, dtype=bool)
    free[~np.isfinite(margin)] = True
    fams = problem.families or ()
    groupings = [fam.codes for fam in fams] or [np.zeros(margin.size, dtype=np.intp)]
    if problem.rows is not None and not fams:
        # Rows-only criteria: neighbourhoods by the rows' supports.
        A = sp.csr_matrix(problem.rows.matrix)
        K = A.shape[1] // margin.size
        rows_of = np.full(margin.size, -1, dtype=np.intp)
        coo = A.tocoo()
        rows_of[coo.col // max(K, 1)] = coo.row
        groupings = [rows_of]
    for codes in groupings:
        order = np.lexsort((margin, codes))
        sorted_codes = codes[order]
        starts = np.searchsorted(sorted_codes, np.unique(sorted_codes))
        rank = np.arange(order.size) - np.repeat(starts, np.diff(np.append(starts, order.size)))
        free[order[rank < per_group]] = True
    return free


def _repair(problem, values, dec, free, A, lo_all, hi_all, n, K, time_limit):
    """Re-decide the ``free`` rows exactly (binary MIP), the others fixed at ``dec``."""
    idx = np.flatnonzero(free)
    n_fam = len(problem.families)
    fixed = np.zeros((n, K))
    fixed[np.arange(n), dec] = 1.0
    fixed[idx] = 0.0
    cols = (idx[:, None] * K + np.arange(K)).ravel()
    var_cols = np.concatenate([cols, n * K + np.arange(n_fam)])
    A_free = A[:, var_cols]
    const = A[:, : n * K] @ fixed.ravel()
    keep = np.asarray(A_free.getnnz(axis=1)).ravel() > 0
    # Bands and rows tightened by a hair: HiGHS accepts 1e-7 slack, the verification does not.
    width = hi_all - lo_all
    margin = np.where(np.isfinite(width), np.minimum(_MILP_MARGIN, 0.25 * width), _MILP_MARGIN)
    lo_r = np.where(np.isfinite(lo_all), lo_all + margin, lo_all) - const
    hi_r = np.where(np.isfinite(hi_all), hi_all - margin, hi_all) - const
    eq = lo_all == hi_all
    lo_r[eq], hi_r[eq] = lo_all[eq] - const[eq], hi_all[eq] - const[eq]
    if np.any((~keep) & ((lo_r > 1e-12) | (hi_r < -1e-12))):
        return None  # a row without free variables is violated by the fixed part
    n_free = idx.size * K
    c = np.concatenate([-values[idx].ravel(), np.zeros(n_fam)])
    integrality = np.concatenate([np.ones(n_free), np.zeros(n_fam)])
    lb = np.concatenate([np.zeros(n_free), np.full(n_fam, -np.inf)])
    ub = np.concatenate([np.ones(n_free), np.full(n_fam, np.inf)])
    with quiet_stdout():  # HiGHS prints from C
        res = milp(
            c,
            constraints=LinearConstraint(A_free[keep], lo_r[keep], hi_r[keep]),
            integrality=integrality,
            bounds=Bounds(lb, ub),
            options={"time_limit": min(time_limit, 5.0), "mip_rel_gap": 1e-4},
        )
    if res.x is None:
        return None
    x = res.x[:n_free].reshape(idx.size, K)
    out = dec.copy()
    out[idx] = np.argmax(x, axis=1)
    return out
