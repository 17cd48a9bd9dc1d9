"""Tests of skfairlayer._stream at its boundary: Stream, start_stream, the engines through them."""

import copy
import math
import pickle

import numpy as np
import pytest

from skfairlayer._projection import project
from skfairlayer._stream import (
    CENTER_MARGIN,
    PAPER_B_TAU,
    SLACK_SCALE,
    PaperPrimalDual,
    PooledFamilies,
    PooledPrimalDual,
    PooledResidual,
    Stream,
    StreamReport,
    StreamStart,
    decompose_shifts,
    penalized_projection,
    project_box_simplex,
    slack_schedule,
    start_stream,
)
from skfairlayer._stream._families import _next_slack


def _running_gaps(values, codes, k):
    """Pooled gap of the served values after each row (0 while fewer than two groups)."""
    counts = np.zeros(k)
    sums = np.zeros(k)
    gaps = np.empty(len(values))
    for t, (v, a) in enumerate(zip(values, codes, strict=True)):
        counts[a] += 1
        sums[a] += v
        present = counts > 0
        means = sums[present] / counts[present]
        gaps[t] = means.max() - means.min() if present.sum() > 1 else 0.0
    return gaps


def _certificates(codes, k, tol, decisions):
    """Certificate epsilon + b(N_(1)) + b(N_(2)) after each row, from the counts alone."""
    counts = np.zeros(k, dtype=int)
    slacks = [None] * k
    out = np.empty(len(codes))
    for t, a in enumerate(codes):
        counts[a] += 1
        slacks[a] = slack_schedule(counts[a], tol, slacks[a], decisions=decisions)
        present = sorted((slacks[g] for g in range(k) if counts[g]), reverse=True)
        out[t] = tol + (present[0] + present[1] if len(present) > 1 else 0.0)
    return out


def _stream(kind, k, n, rng):
    """Scores and codes of a random, adversarial or drifting stream with k groups."""
    if kind == "random":
        codes = rng.integers(0, k, n)
        scores = rng.beta(2 + codes, 2 + k - codes)
    elif kind == "sorted":  # adversarial: one group first, each group sorted by score
        codes = np.sort(rng.integers(0, k, n))
        scores = np.concatenate([np.sort(rng.random(np.sum(codes == g))) for g in range(k)])
    elif kind == "drift":  # group shares and score levels drift over the stream
        t = np.linspace(0, 1, n)
        weights = np.stack([np.exp(3 * (g / max(k - 1, 1) - 0.5) * (2 * t - 1)) for g in range(k)])
        weights /= weights.sum(axis=0)
        codes = np.array([rng.choice(k, p=weights[:, i]) for i in range(n)])
        scores = np.clip(0.2 + 0.5 * t * codes / max(k - 1, 1) + rng.normal(0, 0.2, n), 0, 1)
    else:
        raise AssertionError(kind)
    return scores, codes


def _state(k, tol=0.05, algorithm="pooled", rng=None, **kw):
    rng = np.random.default_rng(0) if rng is None else rng
    shifts = rng.normal(0, 0.05, k)
    shares = np.full(k, 1 / k)
    shifts -= shares @ shifts
    return _binary(tol, shifts, 0.5 + shifts / 2, shares, algorithm=algorithm, **kw)


def _binary(tol, shifts, thresholds, shares, *, algorithm="pooled", step=None, labels=None):
    """A binary demographic-parity stream started at fitted shifts and decision thresholds.

    A threshold ``t`` decides 1 iff ``s >= t``: offsets with ``o_1 - o_0 = 2 t - 1``.
    """
    shifts, thresholds = np.asarray(shifts, float), np.asarray(thresholds, float)
    k = shifts.size
    start = StreamStart(
        tolerance=tol, labels=(np.arange(k) if labels is None else labels,),
        coefs=(shifts[:, None],), offsets=(np.column_stack([np.zeros(k), 2 * thresholds - 1]),),
        shares=(np.asarray(shares, float),), algorithm=algorithm, step=step,
    )
    return start_stream(start)


def _layout(kind, tol, *, n_classes, sizes, columns=None, weight_class=None, coefs=None,
            offsets=None, step=None, criterion=None):
    """A stream of another layout (multiclass, plug-in criteria, several groupings)."""
    return start_stream(StreamStart(
        tolerance=tol, labels=tuple(np.arange(k) for k in sizes), n_classes=n_classes, kind=kind,
        columns=columns, weight_class=weight_class, coefs=coefs, offsets=offsets, step=step,
        criterion=criterion,
    ))


def _serve(state, scores, codes, batch, output="proba"):
    return np.concatenate([
        state.serve(output, scores[i : i + batch], codes[i : i + batch])
        for i in range(0, len(scores), batch)
    ])


@pytest.mark.parametrize("kind", ["random", "sorted", "drift"])
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("output", ["proba", "decisions"])
def test_certificate_holds_at_every_row(kind, k, output):
    """Check that the pooled gap is within the certificate after every row, for any stream."""
    rng = np.random.default_rng(k)
    tol = 0.03
    scores, codes = _stream(kind, k, 1500, rng)
    state = _state(k, tol, rng=rng)
    served = _serve(state, scores, codes, batch=1 if kind != "drift" else 7, output=output)
    gaps = _running_gaps(served, codes, k)
    certs = _certificates(codes, k, tol, output == "decisions")
    assert np.all(gaps <= certs + 1e-12)
    report = state.report(output)
    assert report.certificate == pytest.approx(certs[-1])
    assert report.gap == pytest.approx(gaps[-1], abs=1e-12)
    assert report.holds
    if output == "proba":
        assert served.min() >= 0.0 and served.max() <= 1.0
    else:
        assert set(np.unique(served)) <= {0, 1}


@pytest.mark.parametrize("output", ["proba", "decisions"])
def test_certificate_shrinks_to_tolerance(output):
    """Check that the certificate never grows while no new group appears, and reaches epsilon."""
    rng = np.random.default_rng(1)
    scores, codes = _stream("random", 3, 3000, rng)
    certs = _certificates(codes, 3, 0.04, output == "decisions")
    first = np.argmax(np.cumsum(np.eye(3)[codes], axis=0).min(axis=1) > 0)  # all groups seen
    assert np.all(np.diff(certs[first:]) <= 1e-15)
    assert certs[-1] == 0.04
    state = _state(3, 0.04)
    _serve(state, scores, codes, batch=5, output=output)
    assert state.report(output).certificate == 0.04


@pytest.mark.parametrize("tol", [0.0, 1e-3, 0.01, 0.05, 0.3])
@pytest.mark.parametrize("decisions", [False, True])
def test_slack_schedule_keeps_the_safeguard_feasible(tol, decisions):
    """Check the two conditions on b(n) that keep the safeguard's interval non-empty."""
    b_prev, n_zero = None, None
    for n in range(1, 20000):
        b = slack_schedule(n, tol, b_prev, decisions=decisions)
        assert b >= 0.0
        if b_prev is not None:
            assert b_prev - b <= (tol + b) / n + 1e-15  # one row moves a mean by >= this much
        if decisions:
            assert tol + 2 * b >= 1 / n - 1e-15  # band wide enough for C/n or (C+1)/n
        if b == 0.0 and n_zero is None:
            n_zero = n
        b_prev = b
    if tol > 0 and (SLACK_SCALE / tol) ** 2 < 19000:
        last = max((SLACK_SCALE / tol) ** 2, 1 / tol if decisions else 0)
        assert n_zero is not None and n_zero <= math.ceil(last) + 1


def test_single_group_prefix():
    """Check that a long single-group prefix does not break the certificate or the outputs."""
    rng = np.random.default_rng(2)
    codes = np.r_[np.zeros(800, dtype=int), rng.integers(0, 2, 1200)]
    scores = np.where(codes == 0, rng.beta(5, 2, codes.size), rng.beta(2, 5, codes.size))
    for output in ("proba", "decisions"):
        state = _state(2, 0.02)
        served = _serve(state, scores, codes, batch=1, output=output)
        gaps = _running_gaps(served, codes, 2)
        assert np.all(gaps[:800] == 0.0)
        assert np.all(gaps <= _certificates(codes, 2, 0.02, output == "decisions") + 1e-12)
        assert state.report(output).certificate == 0.02


def test_first_rows_use_the_fitted_shifts():
    """Check that the stream starts from the fitted shifts and thresholds."""
    state = _binary(0.05, [0.1, -0.1], [0.7, 0.3], [0.5, 0.5])
    assert isinstance(state.engine("proba"), PooledPrimalDual)
    np.testing.assert_allclose(state.report("proba").shifts, [0.1, -0.1], atol=1e-12)
    np.testing.assert_allclose(state.report("decisions").shifts, [0.4, -0.4], atol=1e-12)
    assert state.serve("proba", np.array([0.6]), np.array([0]))[0] == pytest.approx(0.5)
    assert state.serve("decisions", np.array([0.65]), np.array([0]))[0] == 0
    assert state.serve("decisions", np.array([0.35]), np.array([1]))[0] == 1


def test_decompose_shifts_reproduces_shifts():
    """Check that the pairwise duals are non-negative and give back the shifts."""
    rng = np.random.default_rng(3)
    for k in (2, 3, 6):
        shares = rng.dirichlet(np.ones(k))
        shifts = rng.normal(0, 0.1, k) + 0.02
        duals, offset = decompose_shifts(shifts, shares)
        assert np.all(duals >= 0) and np.all(np.diag(duals) == 0)
        weights = shares[None, :] / (shares[:, None] + shares[None, :])
        rebuilt = offset + ((duals - duals.T) * weights).sum(axis=1)
        np.testing.assert_allclose(rebuilt, shifts, atol=1e-12)
        assert offset == pytest.approx(shares @ shifts)


def test_errors_leave_the_state_unchanged():
    """Check that invalid batches raise and change nothing, so the stream continues identically."""
    rng = np.random.default_rng(4)
    scores, codes = _stream("random", 3, 300, rng)
    ref, state = _state(3), _state(3)
    bad = [
        (np.array([0.5, np.nan]), np.array([0, 1]), "NaN or infinity"),
        (np.array([0.5, np.inf]), np.array([0, 1]), "NaN or infinity"),
        (np.array([]), np.array([], dtype=int), "empty"),
        (np.array([0.5]), np.array([3]), r"codes must lie in \[0, 3\)"),
        (np.array([0.5]), np.array([-1]), "codes must lie"),
        (np.array([0.5]), np.array([0.0]), "integer group codes"),
        (np.array([0.5, 0.2]), np.array([0]), "same shape"),
        (np.ones((2, 2)), np.array([0, 1]), "shape"),
    ]
    for t in range(0, 300, 3):
        out_ref = ref.serve("proba", scores[t : t + 3], codes[t : t + 3])
        s_bad, c_bad, match = bad[t % len(bad)]
        before = pickle.dumps(state)
        for output in ("proba", "decisions"):
            with pytest.raises(ValueError, match=match):
                state.serve(output, s_bad, c_bad)
        assert pickle.dumps(state) == before
        np.testing.assert_array_equal(state.serve("proba", scores[t : t + 3], codes[t : t + 3]), out_ref)


@pytest.mark.parametrize("algorithm", ["pooled", "paper"])
def test_pickle_mid_stream_continues_bit_identically(algorithm):
    """Check that a pickled and reloaded state continues exactly like the original."""
    rng = np.random.default_rng(5)
    scores, codes = _stream("random", 2, 400, rng)
    state = _state(2, 0.02, algorithm=algorithm)
    for output in ("proba", "decisions"):
        _serve(state, scores[:200], codes[:200], batch=3, output=output)
    copy = pickle.loads(pickle.dumps(state))
    for output in ("proba", "decisions"):
        a = _serve(state, scores[200:], codes[200:], batch=3, output=output)
        b = _serve(copy, scores[200:], codes[200:], batch=3, output=output)
        assert a.tobytes() == b.tobytes()
        ra, rb = state.report(output), copy.report(output)
        for field in ("counts", "means", "duals", "shifts"):
            assert getattr(ra, field).tobytes() == getattr(rb, field).tobytes()
        assert (ra.gap, ra.certificate, ra.n_served) == (rb.gap, rb.certificate, rb.n_served)


def test_concurrent_updates_are_not_lost(serve_rows_in_threads):
    """Check that 8 threads serving concurrently lose no row and keep the certificate."""
    rng = np.random.default_rng(6)
    scores, codes = _stream("random", 3, 8 * 400, rng)
    state = _state(3, 0.02)
    served = serve_rows_in_threads(
        lambda i: state.serve("decisions", scores[i : i + 1], codes[i : i + 1])[0],
        np.array_split(np.arange(3200), 8),
    )
    report = state.report("decisions")
    assert report.n_served == 3200
    np.testing.assert_array_equal(report.counts, np.bincount(codes, minlength=3))
    ones = np.zeros(3)
    for i, y in served:
        ones[codes[i]] += y
    np.testing.assert_allclose(report.means, ones / report.counts)
    assert report.holds


def test_report_contents():
    """Check the report's counts, means, duals and algorithm fields."""
    state = _state(2, 0.1)
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.7])
    codes = np.array([0, 1, 0, 1, 0])
    served = state.serve("proba", scores, codes)
    report = state.report("proba")
    assert report.algorithm == "pooled" and report.output == "proba"
    np.testing.assert_array_equal(report.counts, [3, 2])
    np.testing.assert_allclose(report.means, [served[codes == 0].mean(), served[codes == 1].mean()])
    assert report.duals.shape == (2, 2) and np.all(report.duals >= 0)
    assert report.n_served == 5
    assert np.isnan(state.report("decisions").means).all()
    with pytest.raises(ValueError, match="output must be one of"):
        state.report("labels")


def test_constructor_errors():
    """Check the errors of start_stream on a binary start."""
    with pytest.raises(ValueError, match="algorithm must be one of"):
        _binary(0.1, [0, 0], [0.5, 0.5], [0.5, 0.5], algorithm="greedy")
    with pytest.raises(ValueError, match=r"shares must hold finite arrays of shape \(2,\)"):
        _binary(0.1, [0, 0], [0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="step must be a positive number"):
        _binary(0.1, [0, 0], [0.5, 0.5], [0.5, 0.5], step=0.0)
    with pytest.raises(ValueError, match="tolerance"):
        _binary(-0.1, [0, 0], [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(TypeError, match="StreamStart"):
        start_stream({"tolerance": 0.1})


# ---------------------------------------------------------------- paper's algorithm
def _penalized_reference(s, codes, k, weight):
    cp = pytest.importorskip("cvxpy")
    present = [g for g in range(k) if np.any(codes == g)]
    x, hi, lo = cp.Variable(s.size), cp.Variable(), cp.Variable()
    means = [cp.sum(x[codes == g]) / np.sum(codes == g) for g in present]
    cons = [x >= 0, x <= 1] + [m <= hi for m in means] + [m >= lo for m in means]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - s) + weight * (hi - lo)), cons)
    problem.solve(solver=cp.CLARABEL)
    return problem.value


def test_penalized_projection_matches_cvxpy():
    """Check the paper's penalised primal step against cvxpy+clarabel (objective and optimality)."""
    rng = np.random.default_rng(7)
    for _ in range(25):
        n, k = int(rng.integers(2, 40)), int(rng.integers(2, 5))
        s, codes = rng.random(n), rng.integers(0, k, n)
        if np.unique(codes).size < 2:
            continue
        weight = float(rng.exponential(1.0) * rng.choice([0.05, 1.0, 20.0]))
        p = penalized_projection(s, codes, k, weight)
        means = [p[codes == g].mean() for g in np.unique(codes)]
        value = np.sum((p - s) ** 2) + weight * (max(means) - min(means))
        assert p.min() >= 0 and p.max() <= 1
        assert value <= _penalized_reference(s, codes, k, weight) + 1e-7


def test_penalized_projection_single_group_is_identity():
    """Check that a batch with one group (or no penalty) is returned clipped, unchanged."""
    s = np.array([0.2, 0.9, 0.5])
    np.testing.assert_array_equal(penalized_projection(s, np.array([1, 1, 1]), 2, 10.0), s)
    np.testing.assert_array_equal(penalized_projection(s, np.array([0, 1, 1]), 2, 0.0), s)


def test_paper_batch_of_one_never_corrects():
    """Check the paper's known weakness: one row per batch has gap 0, the dual stays 0."""
    rng = np.random.default_rng(8)
    scores, codes = _stream("random", 2, 300, rng)
    state = _state(2, 0.02, algorithm="paper")
    served = _serve(state, scores, codes, batch=1)
    np.testing.assert_array_equal(served, scores)
    report = state.report("proba")
    assert report.duals[0] == 0.0 and report.certificate == math.inf
    assert report.gap > 0.02


def test_paper_dual_update_follows_its_definition():
    """Check lambda <- max(0, lambda + eta0 / sqrt(t) * B * (gap - eps)) batch by batch."""
    rng = np.random.default_rng(9)
    scores, codes = _stream("random", 2, 80, rng)
    state = _state(2, 0.05, algorithm="paper", step=0.7)
    lam = 0.0
    for t, i in enumerate(range(0, 80, 8), start=1):
        s, c = scores[i : i + 8], codes[i : i + 8]
        expected = penalized_projection(s, c, 2, lam * 8)
        served = state.serve("proba", s, c)
        np.testing.assert_allclose(served, expected, atol=1e-12)
        gap = 0.0
        if np.unique(c).size == 2:
            gap = abs(served[c == 0].mean() - served[c == 1].mean())
        lam = max(0.0, lam + 0.7 / math.sqrt(t) * 8 * (gap - 0.05))
        assert state.report("proba").duals[0] == pytest.approx(lam, abs=1e-12)
    decisions = state.serve("decisions", scores[:8], codes[:8])
    np.testing.assert_array_equal(decisions, (penalized_projection(scores[:8], codes[:8], 2, 0.0) >= 0.5))


def test_paper_large_batches_use_the_projection():
    """Check that batches of at least b_tau rows get the exact projection, without dual update."""
    rng = np.random.default_rng(10)
    scores, codes = _stream("random", 2, PAPER_B_TAU, rng)
    state = _state(2, 0.05, algorithm="paper")
    assert isinstance(state.engine("proba"), PaperPrimalDual)
    served = state.serve("proba", scores, codes)
    np.testing.assert_allclose(served, project(scores, codes, tolerance=0.05).proba, atol=1e-12)
    report = state.report()
    assert report.gap <= 0.05 + 1e-9
    assert report.duals[0] == 0.0 and report.n_served == PAPER_B_TAU
    one = state.serve("proba", scores, np.zeros(PAPER_B_TAU, dtype=int))  # one group: clipped
    np.testing.assert_array_equal(one, scores)


# ------------------------------------------------ other criteria, multiclass, marginal groups
#: name -> (n_classes, binary, group_sizes, columns, weight_class)
LAYOUTS = {
    "multiclass DP": (3, False, [3], None, None),
    "multiclass DP K=4": (4, False, [2], None, None),
    "binary EO": (2, True, [3], None, 1),
    "multiclass EO class 2": (3, False, [2], [2], 2),
    "marginal binary DP": (2, True, [2, 3], None, None),
    "marginal multiclass EO": (3, False, [2, 2], [0], 0),
}


def _criterion_stream(kind, K, binary, sizes, n, rng):
    """Scores and codes of shape (n, n_blocks) of a random, sorted or drifting stream."""
    if kind == "drift":
        t = np.linspace(0, 1, n)
        codes = np.column_stack([(rng.random(n) < 0.15 + 0.7 * t).astype(int) * rng.integers(
            1, k, n) if k > 1 else np.zeros(n, int) for k in sizes])
    else:
        codes = np.column_stack([rng.integers(0, k, n) for k in sizes])
    alpha = np.ones((n, K))
    alpha[np.arange(n), codes.sum(axis=1) % K] += 2.0
    if kind == "drift":
        alpha[:, 0] += 3 * np.linspace(0, 1, n)
    S = np.array([rng.dirichlet(a) for a in alpha])
    if kind == "sorted":  # adversarial: one group of the first block first, sorted by score
        order = np.lexsort((S[:, -1], codes[:, 0]))
        S, codes = S[order], codes[order]
    return (S[:, 1] if binary else S), codes


def _weighted_gaps(values, codes, sizes, weights, columns):
    """Largest pooled gap over blocks and columns after each row (weighted group means)."""
    n = codes.shape[0]
    values = values.reshape(n, -1)[:, columns]
    W = [np.zeros(k) for k in sizes]
    sums = [np.zeros((k, len(columns))) for k in sizes]
    gaps = np.zeros(n)
    for t in range(n):
        for j, a in enumerate(codes[t]):
            W[j][a] += weights[t]
            sums[j][a] += weights[t] * values[t]
            served = W[j] > 0
            if served.sum() > 1:
                m = sums[j][served] / W[j][served, None]
                gaps[t] = max(gaps[t], (m.max(axis=0) - m.min(axis=0)).max())
    return gaps


def _criterion_certificates(codes, sizes, weights, tol, K, decisions):
    """epsilon + max over blocks of the two largest B_g after each row, from the weights alone."""
    delta = CENTER_MARGIN * tol
    D = (K - 1) ** 2 / K
    max_cells = max(int(np.prod(sizes)) // k for k in sizes)
    W = [np.zeros(k) for k in sizes]
    squares = [np.zeros(k) for k in sizes]
    b = [np.full(k, np.inf) for k in sizes]
    cells = [np.zeros(k) for k in sizes]
    seen = set()
    out = np.empty(codes.shape[0])
    for t, (row, w) in enumerate(zip(codes, weights, strict=True)):
        if w > 0 and decisions and tuple(row) not in seen:
            seen.add(tuple(row))
            for j, a in enumerate(row):
                cells[j][a] += 1
        for j, a in enumerate(row):
            if w > 0:
                n_eff = (W[j][a] + w) ** 2 / (squares[j][a] + w * w)  # W^2 / sum w^2
                b[j][a] = _next_slack(W[j][a], b[j][a], W[j][a] + w, tol, delta,
                                      D * max_cells if decisions else 0.0,
                                      -delta if decisions else 0.0, n_eff)
                W[j][a] += w
                squares[j][a] += w * w
        extra = 0.0
        for j in range(len(sizes)):
            served = W[j] > 0
            bound = b[j][served] + (D * cells[j][served] / W[j][served] if decisions else 0)
            if bound.size > 1:
                extra = max(extra, np.sort(bound)[-2:].sum())
        out[t] = tol + extra
    return out


def _criterion_state(name, tol, rng=None, **kw):
    K, binary, sizes, columns, weight_class = LAYOUTS[name]
    m = 1 if binary or columns is not None else K
    rng = np.random.default_rng(0) if rng is None else rng
    coefs = [rng.normal(0, 0.05, (k, m)) for k in sizes]
    offsets = [rng.normal(0, 0.05, (k, K)) for k in sizes]
    state = _layout("parity", tol, n_classes=K, sizes=sizes, columns=columns,
                    weight_class=weight_class, coefs=coefs, offsets=offsets, **kw)
    assert isinstance(state.engine("proba"), PooledFamilies)
    return state


def _serve_rows(state, scores, codes, batch, output):
    parts = [state.serve(output, scores[i : i + batch], codes[i : i + batch])
             for i in range(0, len(codes), batch)]
    return np.concatenate(parts)


@pytest.mark.parametrize("kind", ["random", "sorted", "drift"])
@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("output", ["proba", "decisions"])
def test_criterion_certificate_holds_at_every_row(kind, name, output):
    """Check the pooled (weighted, per class, per block) gap against the certificate at every row."""
    K, binary, sizes, columns, weight_class = LAYOUTS[name]
    rng = np.random.default_rng(len(name) + len(kind))
    tol, n = 0.05, 700 if weight_class is None else 1400
    scores, codes = _criterion_stream(kind, K, binary, sizes, n, rng)
    state = _criterion_state(name, tol, rng=rng)
    served = _serve_rows(state, scores, codes, 1 if kind != "drift" else 5, output)
    if weight_class is None:
        weights = np.ones(n)
    elif binary:
        weights = scores if weight_class == 1 else 1 - scores
    else:
        weights = scores[:, weight_class]
    cols = [1] if binary else (columns if columns is not None else list(range(K)))
    if output == "proba":
        full = np.column_stack([1 - served, served]) if binary else served
        assert full.min() >= 0.0 and full.max() <= 1.0
        assert np.abs(full.sum(axis=1) - 1).max() <= 4e-16
    else:
        assert set(np.unique(served)) <= set(range(K))
        full = np.eye(K)[served]
    gaps = _weighted_gaps(full, codes, sizes, weights, cols)
    certs = _criterion_certificates(codes, sizes, weights, tol, K, output == "decisions")
    assert np.all(gaps <= certs + 1e-12)
    report = state.report(output)
    assert report.certificate == pytest.approx(certs[-1], abs=1e-12)
    assert report.gap == pytest.approx(gaps[-1], abs=1e-12)
    assert report.holds
    # The bound reaches the tolerance once every group has enough weight.
    D, cells = (K - 1) ** 2 / K, max(int(np.prod(sizes)) // k for k in sizes)
    need = max((SLACK_SCALE / tol) ** 2, D * cells / (CENTER_MARGIN * tol) if output != "proba" else 0)
    weight = [np.bincount(codes[:, j], weights=weights, minlength=k) for j, k in enumerate(sizes)]
    if min(w.min() for w in weight) >= 1.5 * need:
        assert report.certificate == tol


@pytest.mark.parametrize("name", ["multiclass DP", "binary EO", "marginal binary DP"])
def test_criterion_certificate_reaches_the_tolerance(name):
    """Check that the certificate (of probabilities) never grows and reaches the tolerance."""
    K, binary, sizes, _, _ = LAYOUTS[name]
    scores, codes = _criterion_stream("random", K, binary, sizes, 2500, np.random.default_rng(3))
    for output in ("proba", "decisions"):
        state = _criterion_state(name, 0.05)
        certs = []
        for i in range(0, 2500, 10):
            _serve_rows(state, scores[i : i + 10], codes[i : i + 10], 10, output)
            certs.append(state.report(output).certificate)
        if output == "proba":  # decisions: the rounding term of a cell may still grow a little
            assert np.all(np.diff(certs[5:]) <= 1e-15)
        assert certs[-1] == 0.05


@pytest.mark.parametrize("decisions", [False, True])
@pytest.mark.parametrize("tol", [0.0, 0.01, 0.05])
def test_weighted_slack_floor(tol, decisions):
    """Check W' (delta + b') >= W (delta + b) for any row weight, and that b reaches 0 (tol > 0)."""
    rng = np.random.default_rng(11)
    delta = CENTER_MARGIN * tol
    rounding, lowest = (0.5 * 3, -delta) if decisions else (0.0, 0.0)
    W, b = 0.0, math.inf
    for w in rng.random(40000) ** 3:  # many tiny weights
        new = _next_slack(W, b, W + w, tol, delta, rounding, lowest)
        if W > 0:
            assert (W + w) * (delta + new) >= W * (delta + b) - 1e-12
        assert new >= lowest
        W, b = W + w, new
    assert (b <= 0.0) if tol > 0 else (b < 0.01)


@pytest.mark.parametrize("classes", [(2, 9), (2, 3)])
def test_box_simplex_projection_is_exact(classes):
    """Check project_box_simplex against a 200-step bisection on the threshold (two classes:
    the closed form on the segment)."""
    rng = np.random.default_rng(12)
    for _ in range(500):
        K = int(rng.integers(*classes))
        v = rng.normal(0.3, 0.6, K)
        c = rng.dirichlet(np.ones(K))
        lo = np.maximum(c - rng.random(K) * 0.3, 0) * (rng.random(K) < 0.7)
        hi = np.where(rng.random(K) < 0.3, 1.0, np.minimum(c + rng.random(K) * 0.3, 1))
        p = project_box_simplex(v, lo, hi)
        assert np.all(p >= lo) and np.all(p <= hi) and abs(p.sum() - 1) <= 4e-16
        a, b = -5.0, 5.0
        for _ in range(200):
            mid = 0.5 * (a + b)
            a, b = (mid, b) if np.clip(v - mid, lo, hi).sum() > 1 else (a, mid)
        np.testing.assert_allclose(p, np.clip(v - 0.5 * (a + b), lo, hi), atol=1e-14)


def test_pairwise_bands_alone_can_miss_the_simplex():
    """Check the example of the user guide: without the centre, no simplex row fits."""
    # Three groups near the vertices within the pairwise bound 2 beta, a fourth with slack 0.
    beta, t, eps = 0.1, 0.2, 0.0
    means = [(1 - t) / 3 + t * np.eye(3)[g] for g in range(3)]
    lower = np.max([m - beta for m in means], axis=0) - eps  # band of the large group
    assert lower.sum() > 1.0  # every row of its (I1) band is off the simplex
    state = _layout("parity", 0.0, n_classes=3, sizes=[4])
    rng = np.random.default_rng(13)
    for _ in range(300):  # tiny groups near the vertices, then a large one: always feasible
        g = int(rng.integers(4))
        state.serve("proba", np.eye(3)[g % 3][None] * 0.9 + 0.1 / 3, [g])
    assert state.report().holds


def test_criterion_first_rows_use_the_fitted_coefficients():
    """Check that the first row is s - w * coef (binary) or the simplex projection of S - coef."""
    state = _layout("parity", 0.05, n_classes=2, sizes=[2], weight_class=1,
                    coefs=[np.array([[0.2], [-0.1]])])
    assert state.serve("proba", np.array([0.6]), [0])[0] == pytest.approx(0.6 - 0.6 * 0.2)
    coefs = [np.array([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0]])]
    state = _layout("parity", 0.05, n_classes=3, sizes=[2], coefs=coefs)
    np.testing.assert_allclose(state.serve("proba", np.array([[0.5, 0.3, 0.2]]), [0])[0],
                               [0.3, 0.4, 0.3], atol=1e-15)
    offsets = [np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])]
    state = _layout("parity", 0.05, n_classes=3, sizes=[2], offsets=offsets)
    assert state.serve("decisions", np.array([[0.5, 0.3, 0.2]]), [0])[0] == 1


def test_zero_weight_rows_are_in_no_statistic():
    """Check that plug-in rows of weight 0 change no weighted mean, slack or certificate."""
    state = _layout("parity", 0.05, n_classes=2, sizes=[2], weight_class=1)
    state.serve("proba", np.array([0.7, 0.3, 0.6]), [0, 1, 1])
    before = state.report()
    assert state.serve("proba", np.array([0.0, 0.0]), [0, 1]).tolist() == [0.0, 0.0]
    after = state.report()
    np.testing.assert_array_equal(after.means, before.means)
    np.testing.assert_array_equal(after.weights, before.weights)
    assert after.certificate == before.certificate
    np.testing.assert_array_equal(after.counts, before.counts + 1)


@pytest.mark.parametrize("output", ["proba", "decisions"])
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("sizes", [[3], [2, 3]])
def test_mean_residual_stream(output, binary, sizes):
    """Check mean residual: probabilities are the base scores; decisions meet the residual bound."""
    K = 2 if binary else 3
    rng = np.random.default_rng(14)
    tol, n = 0.03, 800
    scores, codes = _criterion_stream("sorted", K, binary, sizes, n, rng)
    state = _layout("residual", tol, n_classes=K, sizes=sizes)
    served = _serve_rows(state, scores, codes, 3, output)
    full_s = np.column_stack([1 - scores, scores]) if binary else scores
    if output == "proba":
        np.testing.assert_array_equal(served, scores)
        assert state.report(output).gap == 0.0
        return
    full_y = np.eye(K)[served]
    D = (K - 1) ** 2 / K
    cols = [1] if binary else list(range(K))
    cell_n = {}
    for t in range(n):  # residual and its bound at every row
        cell_n[tuple(codes[t])] = cell_n.get(tuple(codes[t]), 0) + 1
        if t % 7:
            continue
        for j, k in enumerate(sizes):
            for g in range(k):
                rows = codes[: t + 1, j] == g
                if not rows.any():
                    continue
                residual = (full_s[: t + 1][rows] - full_y[: t + 1][rows]).mean(axis=0)[cols]
                bound = sum(max(tol * c, D) for key, c in cell_n.items() if key[j] == g)
                assert np.abs(residual).max() <= bound / rows.sum() + 1e-12
    report = state.report(output)
    assert report.holds and report.criterion == "mean_residual"


@pytest.mark.parametrize("kind", ["parity", "residual"])
def test_criterion_pickle_mid_stream_continues_bit_identically(kind):
    """Check that a pickled criterion stream (marginal, multiclass) continues exactly."""
    rng = np.random.default_rng(15)
    scores, codes = _criterion_stream("random", 3, False, [2, 3], 400, rng)
    if kind == "parity":
        state = _layout("parity", 0.03, n_classes=3, sizes=[2, 3], weight_class=None)
    else:
        state = _layout("residual", 0.03, n_classes=3, sizes=[2, 3])
    for output in ("proba", "decisions"):
        _serve_rows(state, scores[:200], codes[:200], 3, output)
    copy = pickle.loads(pickle.dumps(state))
    for output in ("proba", "decisions"):
        a = _serve_rows(state, scores[200:], codes[200:], 3, output)
        b = _serve_rows(copy, scores[200:], codes[200:], 3, output)
        assert a.tobytes() == b.tobytes()
        ra, rb = state.report(output), copy.report(output)
        for j in range(2):
            assert ra.means[j].tobytes() == rb.means[j].tobytes()
        assert (ra.gap, ra.certificate, ra.n_served) == (rb.gap, rb.certificate, rb.n_served)


def test_criterion_errors_leave_the_state_unchanged():
    """Check that invalid batches raise before any change to a criterion stream."""
    state = _criterion_state("marginal binary DP", 0.05)
    state.serve("proba", np.array([0.4, 0.6]), [np.array([0, 1]), np.array([2, 0])])
    bad = [
        (np.array([0.5, np.nan]), [np.array([0, 1]), np.array([0, 1])], "NaN or infinity"),
        (np.array([0.5]), [np.array([0]), np.array([3])], "codes must lie in"),
        (np.array([0.5]), [np.array([0])], "one per grouping"),
        (np.array([0.5]), np.array([[0.0, 1.0]]), "integer group codes"),
        (np.ones((2, 2)), [np.array([0, 1]), np.array([0, 1])], "shape"),
        (np.array([]), [np.array([], int), np.array([], int)], "empty"),
    ]
    for scores, codes, match in bad:
        before = pickle.dumps(state)
        for output in ("proba", "decisions"):
            with pytest.raises(ValueError, match=match):
                state.serve(output, scores, codes)
        assert pickle.dumps(state) == before
    multi = _criterion_state("multiclass DP", 0.05)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        multi.serve("proba", np.ones((2, 2)) / 2, [0, 1])


def test_criterion_concurrent_updates_are_not_lost(serve_rows_in_threads):
    """Check that 8 threads serving a multiclass stream lose no row and keep the certificate."""
    rng = np.random.default_rng(16)
    scores, codes = _criterion_stream("random", 3, False, [3], 8 * 150, rng)
    state = _criterion_state("multiclass DP", 0.03)
    served = serve_rows_in_threads(
        lambda i: state.serve("decisions", scores[i : i + 1], codes[i : i + 1])[0],
        np.array_split(np.arange(1200), 8),
    )
    report = state.report("decisions")
    assert report.n_served == 1200
    np.testing.assert_array_equal(report.counts, np.bincount(codes[:, 0], minlength=3))
    chosen = np.zeros((3, 3))
    for i, y in served:
        chosen[codes[i, 0], y] += 1
    np.testing.assert_allclose(report.means, chosen / report.counts[:, None])
    assert report.holds


def test_criterion_constructor_errors():
    """Check the errors of start_stream on other layouts."""
    with pytest.raises(ValueError, match="kind must be one of"):
        _layout("odds", 0.1, n_classes=2, sizes=[2])
    with pytest.raises(ValueError, match="n_classes must be"):
        _layout("parity", 0.1, n_classes=1, sizes=[2])
    with pytest.raises(ValueError, match="labels must hold"):
        _layout("parity", 0.1, n_classes=2, sizes=[])
    with pytest.raises(ValueError, match="columns must be"):
        _layout("parity", 0.1, n_classes=3, sizes=[2], columns=[3])
    with pytest.raises(ValueError, match="columns must be"):
        _layout("parity", 0.1, n_classes=2, sizes=[2], columns=[0])
    with pytest.raises(ValueError, match="weight_class must lie"):
        _layout("parity", 0.1, n_classes=3, sizes=[2], weight_class=3)
    with pytest.raises(ValueError, match="step must be"):
        _layout("parity", 0.1, n_classes=2, sizes=[2], step=-1)
    with pytest.raises(ValueError, match="coefs must hold one array per grouping"):
        _layout("parity", 0.1, n_classes=2, sizes=[2, 2], coefs=[np.zeros((2, 1))])
    with pytest.raises(ValueError, match=r"offsets must hold finite arrays of shape \(2, 3\)"):
        _layout("parity", 0.1, n_classes=3, sizes=[2], offsets=[np.zeros((2, 2))])


# ------------------------------------------------------------- dispatch by the shape of the problem
def _start(labels, n_classes=2, **kw):
    return StreamStart(tolerance=0.04, labels=labels, n_classes=n_classes, **kw)


@pytest.mark.parametrize(
    ("kw", "engine"),
    [
        ({}, PooledPrimalDual),
        ({"algorithm": "paper"}, PaperPrimalDual),
        ({"weight_class": 1}, PooledFamilies),
        ({"n_classes": 3}, PooledFamilies),
        ({"kind": "residual"}, PooledResidual),
        ({"kind": "residual", "n_classes": 3}, PooledResidual),
        ({"two": True}, PooledFamilies),
        ({"two": True, "kind": "residual"}, PooledResidual),
    ],
)
def test_engine_follows_the_shape_of_the_problem(kw, engine):
    """Check the dispatch of start_stream: one engine per shape, the same for both outputs."""
    labels = (np.arange(3), np.arange(2)) if kw.pop("two", False) else (np.arange(3),)
    stream = start_stream(_start(labels, **kw))
    assert isinstance(stream, Stream)
    for output in ("proba", "decisions"):
        assert type(stream.engine(output)) is engine
        assert stream.engine(output).output == output


@pytest.mark.parametrize(
    "kw", [{"n_classes": 3}, {"weight_class": 1}, {"kind": "residual"}, {"two": True}]
)
def test_paper_algorithm_needs_binary_parity_of_one_grouping(kw):
    """Check that the paper's algorithm raises, saying why, outside its one setting."""
    labels = (np.arange(3), np.arange(2)) if kw.pop("two", False) else (np.arange(3),)
    with pytest.raises(ValueError, match="algorithm='paper' reproduces the paper"):
        start_stream(_start(labels, algorithm="paper", **kw))


#: name -> StreamStart keywords besides labels (binary DP, multiclass DP, EO, residual).
PROBLEMS = {
    "binary DP": {},
    "multiclass DP": {"n_classes": 3},
    "binary EO": {"weight_class": 1},
    "multiclass residual": {"n_classes": 3, "kind": "residual"},
}


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_one_problem_described_two_ways_streams_identically(name):
    """Check that marginal groups of one attribute and the same groups as intersectional
    combinations (1-tuples) give the same engine and bit-identical outputs and reports."""
    kw = PROBLEMS[name]
    K = kw.get("n_classes", 2)
    rng = np.random.default_rng(20)
    m = 1 if K == 2 else K
    fitted = {
        "coefs": (rng.normal(0, 0.05, (3, m)),),
        "offsets": (rng.normal(0, 0.05, (3, K)),),
        "shares": (np.array([0.5, 0.3, 0.2]),),
    }
    marginal = np.array(["a", "b", "c"])
    intersectional = np.empty(3, dtype=object)
    intersectional[:] = [("a",), ("b",), ("c",)]
    one = start_stream(_start((marginal,), **kw, **fitted))
    two = start_stream(_start((intersectional,), **kw, **fitted))
    scores, codes = _criterion_stream("random", K, K == 2, [3], 400, rng)
    codes = codes[:, 0]
    for output in ("proba", "decisions"):
        assert type(one.engine(output)) is type(two.engine(output))
        for i in range(0, 400, 1 if output == "proba" else 3):
            a = one.serve(output, scores[i : i + 3], codes[i : i + 3])
            b = two.serve(output, scores[i : i + 3], codes[i : i + 3])
            assert a.tobytes() == b.tobytes()
        ra, rb = one.report(output), two.report(output)
        assert ra.means.tobytes() == rb.means.tobytes()
        assert (ra.gap, ra.certificate, ra.n_served) == (rb.gap, rb.certificate, rb.n_served)
    assert one.codes_of(["c", "a"]) == [2, 0] and two.codes_of([("c",)]) is None


def test_binary_decisions_from_offsets():
    """Check that binary decisions start at argmax(values - offsets) with values [1 - s, s],
    exact ties going to class 1 (the s >= threshold rule)."""
    offsets = (np.array([[0.125, 0.375], [0.25, -0.25]]),)
    rows = [(0.55, 0, 0), (0.7, 0, 1), (0.4, 1, 1), (0.2, 1, 0)]
    for sizes in ([2], [2, 1]):  # the safeguard engine, and the common-centre engine
        labels = tuple(np.arange(k) for k in sizes)
        full = offsets if len(sizes) == 1 else offsets + (np.zeros((1, 2)),)
        ties = [(0.625, 0, 1), (0.25, 1, 1)] if len(sizes) == 1 else []  # exact in floats
        for s, g, expected in rows + ties:
            values = np.array([1 - s, s]) - offsets[0][g]
            assert expected == int(values[1] >= values[0])
            stream = start_stream(StreamStart(tolerance=0.5, labels=labels, offsets=full))
            codes = [g] if len(sizes) == 1 else np.array([[g, 0]])
            assert stream.serve("decisions", np.array([s]), codes)[0] == expected


# ------------------------------------------------------------- the Stream wrapper
def test_codes_of_one_and_several_groupings():
    """Check the label index: a list for one grouping, an (n, n_groupings) array for several."""
    one = start_stream(_start((np.array(["F", "M"]),)))
    assert one.codes_of(["M", "F", "M"]) == [1, 0, 1]
    assert one.codes_of(["X"]) is None and one.codes_of([["F"]]) is None
    two = start_stream(_start((np.array(["F", "M"]), np.array([10, 20, 30]))))
    np.testing.assert_array_equal(two.codes_of([["M", 30], ["F", 10]]), [[1, 2], [0, 0]])
    assert two.codes_of([["M", 40]]) is None and two.codes_of([["M"]]) is None
    assert pickle.loads(pickle.dumps(two)).codes_of([["F", 20]]).tolist() == [[0, 1]]
    tuples = np.empty(2, dtype=object)
    tuples[:] = [("F", 1), ("M", 1)]
    assert start_stream(_start((tuples,))).codes_of([("F", 1)]) is None


def test_codes_conventions_agree():
    """Check that the forms of the codes of several groupings serve identically."""
    rng = np.random.default_rng(21)
    scores = rng.random(30)
    codes = np.column_stack([rng.integers(0, 2, 30), rng.integers(0, 3, 30)])
    forms = [codes, [codes[:, 0], codes[:, 1]], (codes[:, 0].tolist(), codes[:, 1].tolist())]
    served = []
    for form in forms:
        stream = start_stream(_start((np.arange(2), np.arange(3))))
        served.append(stream.serve("proba", scores, form).tobytes())
    assert served[0] == served[1] == served[2]
    one = [start_stream(_start((np.arange(3),))) for _ in range(3)]
    forms = [codes[:, 1], codes[:, 1].tolist(), codes[:, 1:]]
    out = {s.serve("decisions", scores, f).tobytes() for s, f in zip(one, forms, strict=True)}
    assert len(out) == 1


def test_invalid_output_raises_before_any_change():
    """Check that an unknown output kind raises and serves nothing."""
    stream = _state(2)
    with pytest.raises(ValueError, match="output must be one of"):
        stream.serve("labels", np.array([0.5]), [0])
    with pytest.raises(ValueError, match="output must be one of"):
        stream.engine("labels")
    assert stream.report().n_served == stream.report("decisions").n_served == 0


def test_config_restarted_and_reset():
    """Check config, restarted (same fit, new parameters, empty) and reset."""
    stream = _binary(0.05, [0.1, -0.1], [0.6, 0.4], [0.5, 0.5], labels=np.array(["a", "b"]))
    assert stream.config == ("pooled", 0.05, None, 0.5)
    stream.serve("proba", np.array([0.6, 0.3]), [0, 1])
    new = stream.restarted(("paper", 0.1, 0.3, 0.6))
    assert new.config == ("paper", 0.1, 0.3, 0.6) and new.algorithm == "paper"
    assert isinstance(new.engine("decisions"), PaperPrimalDual)
    assert new.engine("decisions").threshold == 0.6 and new.engine("proba").eta == 0.3
    assert new.report().n_served == 0 and stream.report().n_served == 2
    assert new.report().groups.tolist() == ["a", "b"]
    back = new.restarted(stream.config)
    np.testing.assert_allclose(back.report().shifts, [0.1, -0.1], atol=1e-12)
    stream.reset()
    assert stream.report().n_served == 0 and stream.report().counts.tolist() == [0, 0]


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("name", ["binary DP", "multiclass DP", "binary EO", "multiclass residual"])
def test_round_trips_keep_the_lock_and_continue_identically(how, name):
    """Check that pickled / deep-copied streams get a fresh lock and continue bit-identically."""
    K = PROBLEMS[name].get("n_classes", 2)
    stream = start_stream(_start((np.array(["F", "M", "X"]),), **PROBLEMS[name]))
    scores, codes = _criterion_stream("random", K, K == 2, [3], 200, np.random.default_rng(22))
    codes = codes[:, 0]
    _serve(stream, scores[:100], codes[:100], batch=1)
    clone = pickle.loads(pickle.dumps(stream)) if how == "pickle" else copy.deepcopy(stream)
    assert clone._lock is not stream._lock and not clone._lock.locked()
    for i in range(100, 200):
        a = stream.serve("proba", scores[i : i + 1], stream.codes_of([["F", "M", "X"][codes[i]]]))
        b = clone.serve("proba", scores[i : i + 1], clone.codes_of([["F", "M", "X"][codes[i]]]))
        assert a.tobytes() == b.tobytes()
    assert stream.report().means.tobytes() == clone.report().means.tobytes()


def test_skops_round_trip_needs_only_the_stream_types():
    """Check that skops persists every engine, trusting only the stream's own classes."""
    sio = pytest.importorskip("skops.io")
    for kw in PROBLEMS.values():
        K = kw.get("n_classes", 2)
        stream = start_stream(_start((np.array(["a", "b"]),), **kw))
        scores = np.array([0.3, 0.8]) if K == 2 else np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
        for output in ("proba", "decisions"):
            stream.serve(output, scores, [0, 1])
        payload = sio.dumps(stream)
        trusted = sio.get_untrusted_types(data=payload)
        engine = type(stream.engine("proba"))
        assert set(trusted) == {
            "skfairlayer._stream._stream.Stream",
            "skfairlayer._stream._stream.StreamStart",
            f"{engine.__module__}.{engine.__name__}",
        }
        back = sio.loads(payload, trusted=trusted)
        for output in ("proba", "decisions"):
            a, b = stream.serve(output, scores, [1, 0]), back.serve(output, scores, [1, 0])
            assert a.tobytes() == b.tobytes()


def test_criterion_name_of_the_start_is_reported():
    """Check that the start's criterion name replaces the engine's in reports."""
    stream = start_stream(_start((np.arange(2),), weight_class=1, criterion="EqualOpportunity()"))
    assert stream.report().criterion == "EqualOpportunity()"
    assert start_stream(_start((np.arange(2),), weight_class=1)).report().criterion == (
        "equal_opportunity")


# ------------------------------------------------------------- the report's display
def test_report_text_is_a_small_table():
    """Check the report's text: one row per group, then gap, certificate, holds and counts."""
    stream = _binary(0.1, [0.0, 0.0], [0.5, 0.5], [0.5, 0.5], labels=np.array(["F", "M"]))
    served = stream.serve("proba", np.array([0.9, 0.2, 0.7]), [0, 1, 0])
    report = stream.report()
    text = str(report)
    assert text == repr(report)
    lines = text.splitlines()
    assert lines[0] == (
        "StreamReport(output='proba', algorithm='pooled', criterion='demographic_parity')")
    assert lines[1].split() == ["group", "count", "mean"]
    assert lines[2].split() == ["F", "2", f"{served[[0, 2]].mean():.4f}"]
    assert lines[3].split() == ["M", "1", f"{served[1]:.4f}"]
    assert f"gap                {report.gap:.6g}" in text
    assert f"certificate        {report.certificate:.6g}" in text
    assert "holds              True" in text and "served / adjusted  3 / 0" in text
    assert "array(" not in text and len(lines) == 9
    empty = str(stream.report("decisions"))
    assert empty.splitlines()[2].split() == ["F", "0", "-"]


def test_report_text_of_several_groupings_and_columns():
    """Check the table of marginal groups (one table per grouping) and multiclass means."""
    stream = _layout("parity", 0.1, n_classes=3, sizes=[2, 3], weight_class=None)
    S = np.array([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]])
    stream.serve("proba", S, np.array([[0, 2], [1, 0]]))
    lines = str(stream.report()).splitlines()
    assert lines[1].split() == ["group", "count", "mean[0]", "mean[1]", "mean[2]"]
    assert len(lines) == 1 + 3 + 4 + 5 and lines[4].split()[0] == "group"
    eo = _layout("parity", 0.1, n_classes=2, sizes=[2], weight_class=1)
    eo.serve("proba", np.array([0.8, 0.4]), [0, 1])
    text = str(eo.report())
    assert "weight" in text.splitlines()[1] and "0.8" in text.splitlines()[2]


def test_report_html_is_an_escaped_table():
    """Check the notebook display: HTML tables with the groups and the summary, labels escaped."""
    stream = _binary(0.1, [0.0, 0.0], [0.5, 0.5], [0.5, 0.5],
                     labels=np.array(["<b>", "M&F"], dtype=object))
    stream.serve("decisions", np.array([0.9, 0.2]), [0, 1])
    page = stream.report("decisions")._repr_html_()
    assert page.count("<table>") == 2 and page.count("</table>") == 2
    assert "&lt;b&gt;" in page and "M&amp;F" in page and "<b>" not in page
    assert "<th>certificate</th>" in page and "<th>holds</th><td>True</td>" in page
    assert isinstance(stream.report(), StreamReport)


@pytest.mark.parametrize("name", ["marginal binary DP", "multiclass DP"])
@pytest.mark.parametrize("output", ["proba", "decisions"])
def test_criterion_batch_failing_midway_changes_nothing(monkeypatch, name, output):
    """Check that a batch whose engine fails on a later row leaves the stream exactly as it
    was: the rows served before the failure updated a working copy only."""
    state = _criterion_state(name, 0.05)
    engine = state.engine(output)
    rng = np.random.default_rng(3)
    K = state.n_classes
    n_blocks = len(state.group_sizes)

    def batch(n):
        codes = np.column_stack([rng.integers(0, k, n) for k in state.group_sizes])
        scores = rng.random(n) if K == 2 else rng.dirichlet(np.ones(K), n)
        return scores, [codes[:, j] for j in range(n_blocks)] if n_blocks > 1 else codes[:, 0]

    for _ in range(40):
        state.serve(output, *batch(1))
    before = pickle.dumps(state)
    calls = {"n": 0}
    row = type(engine)._row

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("failure inside the engine")
        return row(self, *args)

    monkeypatch.setattr(type(engine), "_row", failing)
    with pytest.raises(RuntimeError, match="inside the engine"):
        state.serve(output, *batch(8))
    assert calls["n"] == 5
    assert pickle.dumps(state) == before
