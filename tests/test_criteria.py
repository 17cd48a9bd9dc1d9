"""Criteria beyond binary demographic parity: equal opportunity, equalized odds, mean residual,
custom criteria, marginal vs intersectional groups, small-group warnings."""

import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from skfairlayer import FairnessLayerClassifier, SmallGroupWarning, project
from skfairlayer._criteria import (
    AffineRows,
    Criterion,
    DemographicParity,
    EqualizedOdds,
    EqualOpportunity,
    MeanResidual,
    build_problem,
    check_labels,
    group_family,
    small_groups,
)
from skfairlayer._multiclass_decisions import affine_decisions, violation
from skfairlayer._projection import VERIFY_TOL

CRITERIA = ["demographic_parity", "equal_opportunity", "equalized_odds", "mean_residual"]


def _binary_batch(seed, n=240, k=3):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, n)
    codes[:k] = np.arange(k)
    logit = rng.normal(size=n) + rng.normal(scale=1.5, size=k)[codes]
    s = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < s).astype(int)
    y[: 2 * k] = np.tile([0, 1], k)  # every group has both labels
    return s, codes, y


def _cvxpy_reference(problem):
    """Projection of a binary problem by cvxpy + Clarabel (families and rows)."""
    cp = pytest.importorskip("cvxpy")
    s = problem.scores
    p = cp.Variable(s.shape[0])
    cons = [p >= problem.lower, p <= problem.upper]
    for fam in problem.families:
        t = cp.Variable()
        inside = fam.codes >= 0
        A = sp.csr_matrix(
            (fam.weights[inside], (fam.codes[inside], np.flatnonzero(inside))),
            shape=(fam.n_groups, s.shape[0]),
        )
        cons += [A @ p >= t, A @ p <= t + fam.tolerance]
    if problem.rows is not None:
        r = problem.rows
        cons += [r.matrix @ p >= r.lower, r.matrix @ p <= r.upper]
    cp.Problem(cp.Minimize(cp.sum_squares(p - s)), cons).solve(solver=cp.CLARABEL)
    return np.asarray(p.value)


# --------------------------------------------------------------------------- families
def test_plug_in_weights_are_posteriors():
    """Check that without labels the statistics weigh rows by the base posteriors."""
    s = np.array([0.9, 0.5, 0.2, 0.6, 0.3])
    codes = np.array([0, 0, 0, 1, 1])
    p = np.array([0.8, 0.4, 0.1, 0.5, 0.5])
    tpr, fpr = EqualizedOdds().families(codes, 2, s, 0.1)
    assert np.allclose(tpr.means(p), [(0.9 * 0.8 + 0.5 * 0.4 + 0.2 * 0.1) / 1.6, 0.5])
    assert np.allclose(fpr.means(p), [(0.1 * 0.8 + 0.5 * 0.4 + 0.8 * 0.1) / 1.4, 0.5])
    (eo,) = EqualOpportunity().families(codes, 2, s, 0.1)
    assert np.allclose(eo.means(p), tpr.means(p))


def test_labelled_families_skip_groups_without_the_label():
    """Check that a group with no positive is left out of the positives' family."""
    s = np.full(6, 0.5)
    codes = np.array([0, 0, 1, 1, 2, 2])
    y = np.array([1, 0, 0, 0, 1, 1])
    (fam,) = EqualOpportunity().families(codes, 3, s, 0.1, labels=y)
    assert fam.n_groups == 2
    assert list(fam.ids()) == [0, 2]
    assert np.allclose(fam.means(np.array([1.0, 0, 0, 0, 0.5, 0.3])), [1.0, 0.4])


def test_group_family_normalises_and_reports_totals():
    """Check that group_family divides by the group totals and records them."""
    fam = group_family(np.array([0, 0, 1]), 2, np.array([1.0, 3.0, 2.0]), 0.1, column=1)
    assert np.allclose(fam.weights, [0.25, 0.75, 1.0])
    assert np.allclose(fam.totals, [4.0, 2.0])
    assert fam.column == 1
    assert np.allclose(fam.effective_sizes(), [1 / (0.25**2 + 0.75**2), 1.0])


def test_uniform_two_group_family_carries_its_uint8_codes():
    """Check that a uniform two-group family built from codes keeps their uint8 copy (read by
    the two-group passes) equal to its codes, and that a copy with other codes does not
    inherit them."""
    import dataclasses

    from skfairlayer._problem import _uniform_family

    codes = np.random.default_rng(0).integers(0, 2, 1000)
    fam = _uniform_family(codes, 2, 0.1, 0, "parity", None)
    assert fam._small is not None and fam._small_codes is fam._small
    assert fam._small.dtype == np.uint8
    np.testing.assert_array_equal(fam._small_codes, codes)
    np.testing.assert_array_equal(fam.totals, np.bincount(codes))
    other = dataclasses.replace(fam, codes=codes[::-1].copy())
    np.testing.assert_array_equal(other._small_codes, codes[::-1])


# --------------------------------------------------------------------------- projection
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_projection_meets_criterion_and_matches_reference(criterion, with_labels, seed):
    """Check that each criterion holds to 1e-9, bounds exactly, and the optimum matches cvxpy."""
    s, codes, y = _binary_batch(seed)
    tol = 0.02
    labels = y if with_labels else None
    result = project(s, codes, tolerance=tol, criterion=criterion, labels=labels)
    p = result.proba
    problem = result.problem
    assert problem.parity_violation(p) <= VERIFY_TOL
    assert p.min() >= 0.0 and p.max() <= 1.0
    ref = _cvxpy_reference(problem)
    # Optimal: no worse than the reference solver, and the same point (strictly convex).
    assert np.sum((p - s) ** 2) <= np.sum((ref - s) ** 2) + 1e-7
    assert np.max(np.abs(p - ref)) <= 1e-4


@pytest.mark.parametrize("criterion", ["equal_opportunity", "equalized_odds"])
def test_label_based_gap_matches_definition(criterion):
    """Check that with labels the family means are the mean outputs among each label."""
    s, codes, y = _binary_batch(3)
    result = project(s, codes, tolerance=0.01, criterion=criterion, labels=y)
    p = result.proba
    for lab in ([1] if criterion == "equal_opportunity" else [1, 0]):
        rates = [p[(codes == g) & (y == lab)].mean() for g in range(3)]
        assert max(rates) - min(rates) <= 0.01 + VERIFY_TOL


def test_mean_residual_rows_hold_per_group():
    """Check that the mean residual criterion bounds every group's mean residual."""
    s, codes, y = _binary_batch(4)
    tol = 0.01
    p = project(s, codes, tolerance=tol, criterion="mean_residual", labels=y).proba
    for g in range(3):
        assert abs(np.mean(y[codes == g] - p[codes == g])) <= tol + VERIFY_TOL
    # Plug-in form: the base scores already meet it, so the projection is the identity.
    assert np.allclose(project(s, codes, tolerance=tol, criterion="mean_residual").proba, s)


def test_exact_and_osqp_agree_on_binary_parity():
    """Check that the exact and OSQP solvers agree to 1e-6 on demographic parity."""
    s, codes, _ = _binary_batch(5, n=400, k=6)
    a = project(s, codes, tolerance=0.01, solver="exact").proba
    b = project(s, codes, tolerance=0.01, solver="osqp").proba
    assert np.max(np.abs(a - b)) <= 1e-6


@pytest.mark.parametrize("k", [2, 12, 55])
def test_many_groups(k):
    """Check that equalized odds (plug-in) holds for 2 to 55 groups."""
    s, codes, _ = _binary_batch(6, n=40 * k, k=k)
    result = project(s, codes, tolerance=0.02, criterion="equalized_odds")
    assert len(result.problem.families) == 2
    assert all(f.n_groups == k for f in result.problem.families)
    assert result.problem.parity_violation(result.proba) <= VERIFY_TOL


# --------------------------------------------------------------------------- several attributes
def test_marginal_and_intersectional_groups():
    """Check that marginal parity holds per attribute and intersectional per combination."""
    rng = np.random.default_rng(7)
    n = 600
    sex, race = rng.integers(0, 2, n), rng.integers(0, 3, n)
    s = 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + sex - 0.7 * race)))
    sf = np.c_[sex, race]
    tol = 0.02
    inter = project(s, sf, tolerance=tol)
    marg = project(s, sf, tolerance=tol, groups="marginal")
    combo = sex * 3 + race
    for codes, p in ((combo, inter.proba), (sex, marg.proba), (race, marg.proba)):
        means = [p[codes == g].mean() for g in np.unique(codes)]
        assert max(means) - min(means) <= tol + VERIFY_TOL
    assert len(marg.problem.families) == 2
    assert [f.n_groups for f in marg.problem.families] == [2, 3]
    # Marginal parity is a weaker requirement: it moves the scores less.
    assert np.sum((marg.proba - s) ** 2) <= np.sum((inter.proba - s) ** 2) + 1e-12
    # ...and it does not imply intersectional parity here.
    means = [marg.proba[combo == g].mean() for g in range(6)]
    assert max(means) - min(means) > tol
    ref = _cvxpy_reference(marg.problem)
    assert np.max(np.abs(marg.proba - ref)) <= 1e-4


def test_groups_mode_validated():
    """Check that an unknown groups mode raises an error naming the options."""
    with pytest.raises(ValueError, match="intersectional.*marginal|marginal.*intersectional"):
        project([0.2, 0.8], [0, 1], groups="pairwise")


# --------------------------------------------------------------------------- custom criteria
class _MeanCap(Criterion):
    """Each group's mean output at most 0.5 (one row per group)."""

    def rows(self, codes, n_groups, scores, tolerance, labels=None):
        sizes = np.bincount(codes, minlength=n_groups)
        matrix = sp.csr_matrix(
            (1.0 / sizes[codes], (codes, np.arange(codes.size))), shape=(n_groups, codes.size)
        )
        return AffineRows(matrix, np.full(n_groups, -np.inf), np.full(n_groups, 0.5), "cap")


class _TopHalfParity(Criterion):
    """Parity of the mean output among each group's rows with a score above 0.5."""

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        return (group_family(codes, n_groups, (scores > 0.5).astype(float), tolerance),)


def test_custom_criteria_in_project():
    """Check that custom rows and custom families are met and optimal."""
    s, codes, _ = _binary_batch(8)
    capped = project(s, codes, criterion=_MeanCap())
    for g in range(3):
        assert capped.proba[codes == g].mean() <= 0.5 + VERIFY_TOL
    top = project(s, codes, tolerance=0.01, criterion=_TopHalfParity())
    assert top.problem.parity_violation(top.proba) <= VERIFY_TOL
    for res in (capped, top):
        ref = _cvxpy_reference(res.problem)
        assert np.max(np.abs(res.proba - ref)) <= 1e-4


def test_custom_criterion_contract_errors():
    """Check that a criterion returning the wrong types or shapes gets a clear error."""

    class BadFamilies(Criterion):
        def families(self, codes, n_groups, scores, tolerance, labels=None):
            return ("not a family",)

    class BadRows(Criterion):
        def rows(self, codes, n_groups, scores, tolerance, labels=None):
            return AffineRows(sp.eye(3, format="csr"), np.zeros(3), np.ones(3))

    class NeedsLabels(Criterion):
        requires_labels = True

    with pytest.raises(TypeError, match="GroupStatistics"):
        project([0.2, 0.8], [0, 1], criterion=BadFamilies())
    with pytest.raises(ValueError, match="columns"):
        project([0.2, 0.8], [0, 1], criterion=BadRows())
    with pytest.raises(ValueError, match="requires labels"):
        project([0.2, 0.8], [0, 1], criterion=NeedsLabels())


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([0, 2], np.array([0.2, 0.8]), "0/1"),
        ([0, 1, 1], np.array([0.2, 0.8]), "shape"),
        ([0, 3], np.array([[0.5, 0.5], [0.1, 0.9]]), "class indices"),
    ],
)
def test_bad_labels(labels, scores, match):
    """Check that labels not matching the scores raise an error naming the expected form."""
    with pytest.raises(ValueError, match=match):
        check_labels(labels, scores)


def test_positive_class_validated():
    """Check that a positive_class outside the columns is rejected."""
    S = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="positive_class"):
        project(S, [0, 0, 1, 1], criterion=EqualOpportunity(positive_class=3))


# --------------------------------------------------------------------------- decisions
@pytest.mark.parametrize("criterion", CRITERIA)
def test_decisions_meet_criterion_on_the_batch(criterion):
    """Check that integer decisions meet each (plug-in) criterion exactly on the batch."""
    s, codes, _ = _binary_batch(9, n=500)
    problem = build_problem(criterion, s, [(codes, 3)], 0.03)
    result = affine_decisions(problem)
    assert set(np.unique(result.decisions)) <= {0, 1}
    assert violation(problem, result.decisions) <= 1e-12


@pytest.mark.parametrize("seed", range(6))
def test_decisions_optimal_on_small_batches(seed):
    """Check that binary decisions reach the brute-force integer optimum on 10 rows."""
    rng = np.random.default_rng(seed)
    s = rng.random(10)
    codes = np.repeat([0, 1], 5)
    criterion = ["equal_opportunity", "equalized_odds", "demographic_parity"][seed % 3]
    problem = build_problem(criterion, s, [(codes, 2)], 0.2)
    best = max(
        (np.dot(d, 2 * s - 1) for d in map(np.array, itertools.product((0, 1), repeat=10))
         if violation(problem, d) <= 1e-12),
    )
    got = affine_decisions(problem).decisions
    assert np.dot(got, 2 * s - 1) >= best - 1e-12


# --------------------------------------------------------------------------- estimator
def _estimator_data(seed=0, n=1200):
    rng = np.random.default_rng(seed)
    sex, race = rng.integers(0, 2, n), rng.integers(0, 3, n)
    X = np.c_[rng.normal(size=(n, 2)) + sex[:, None], sex, race]
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=n) > 1).astype(int)
    return X, y, sex, race


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("groups", ["intersectional", "marginal"])
def test_estimator_methods_meet_criterion(criterion, groups):
    """Check that fit, predict_proba and predict meet each criterion (plug-in) on a batch."""
    X, y, sex, race = _estimator_data()
    clf = FairnessLayerClassifier(
        LogisticRegression(), tolerance=0.03, sensitive_features=[2, 3], criterion=criterion,
        groups=groups,
    sensitive_as_feature=False).fit(X[:800], y[:800])
    assert clf.fit_gap_ <= 0.03 + VERIFY_TOL
    Xt = X[800:]
    proba = clf.predict_proba(Xt)
    assert proba.shape == (400, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    base = clf.estimator_.predict_proba(Xt[:, :2])[:, 1]
    if groups == "marginal":
        groupings = [(sex[800:], 2), (race[800:], 3)]
    else:
        groupings = [(sex[800:] * 3 + race[800:], 6)]
    problem = build_problem(criterion, base, groupings, 0.03)
    assert problem.parity_violation(proba[:, 1]) <= VERIFY_TOL
    assert violation(problem, clf.predict(Xt)) <= 1e-12
    # One row (one group): the fitted rules answer, never a crash.
    assert clf.predict_proba(Xt[:1]).shape == (1, 2)
    assert clf.predict(Xt[:1]).shape == (1,)
    clf.set_params(inference="fitted")
    assert clf.predict_proba(Xt).shape == (400, 2)


def test_estimator_uses_labels_at_fit():
    """Check that fit_gap_ of equalized odds is the label-based gap on the training set."""
    X, y, sex, race = _estimator_data(1)
    clf = FairnessLayerClassifier(
        LogisticRegression(), tolerance=0.02, sensitive_features=[2], criterion="equalized_odds",
        sensitive_as_feature=False, cv=None,
    ).fit(X, y)
    base = clf.estimator_.predict_proba(X[:, [0, 1, 3]])[:, 1]
    labelled = project(base, sex, tolerance=0.02, criterion="equalized_odds", labels=y)
    assert clf.fit_gap_ == pytest.approx(max(f.gap(labelled.proba) for f in labelled.problem.families))
    assert clf.layer_.shifts is None and len(clf.layer_.coefficients) == 2


def test_estimator_custom_criterion():
    """Check that a custom Criterion works through the estimator's methods."""
    X, y, _, _ = _estimator_data(2)
    clf = FairnessLayerClassifier(
        LogisticRegression(), sensitive_features=[2], criterion=_MeanCap(), min_group_size=None
    , sensitive_as_feature=False).fit(X, y)
    proba = clf.predict_proba(X)[:, 1]
    for g in (0, 1):
        assert proba[X[:, 2] == g].mean() <= 0.5 + VERIFY_TOL
    assert clf.predict(X).shape == (X.shape[0],)


def test_unsupported_combinations_raise_clearly():
    """Check that streaming a criterion without a streaming form names what is supported."""
    X, y, _, _ = _estimator_data(3)
    clf = FairnessLayerClassifier(
        LogisticRegression(), sensitive_features=[2], criterion="equalized_odds"
    , sensitive_as_feature=False).fit(X, y)
    with pytest.raises(ValueError, match="supports criterion='demographic_parity'"):
        clf.partial_predict_proba(X[:5])
    with pytest.raises(ValueError, match="criterion"):
        FairnessLayerClassifier(criterion="calibration", sensitive_features=[2], sensitive_as_feature=False).fit(X, y)


# --------------------------------------------------------------------------- small groups
def test_small_groups_warn_and_still_work():
    """Check that tiny groups raise a SmallGroupWarning naming them, and the layer still works."""
    X, y, sex, _ = _estimator_data(4, n=600)
    X[:3, 2] = 7  # a group of three rows
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.02, sensitive_features=[2], sensitive_as_feature=False)
    with pytest.warns(SmallGroupWarning, match="7") as record:
        clf.fit(X, y)
    # One attribute: groups='marginal' would not help, so it is not suggested.
    assert "groups='marginal'" not in str(record[0].message)
    assert "min_group_size=None" in str(record[0].message)
    proba = clf.predict_proba(X)[:, 1]
    means = [proba[X[:, 2] == g].mean() for g in (0, 1, 7)]
    assert max(means) - min(means) <= 0.02 + VERIFY_TOL
    # Few positives in a group: equal opportunity warns about that statistic.
    y2 = y.copy()
    y2[(X[:, 2] == 1)] = 0
    y2[np.flatnonzero(X[:, 2] == 1)[:4]] = 1
    with pytest.warns(SmallGroupWarning, match="equal opportunity"):
        clf.set_params(criterion="equal_opportunity").fit(X, y2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.set_params(min_group_size=None).fit(X, y2)


def test_small_groups_helper():
    """Check that small_groups reports effective sizes below the threshold."""
    codes = np.array([0] * 40 + [1] * 5)
    fams = DemographicParity().families(codes, 2, np.full(45, 0.5), 0.1)
    ((name, group, size),) = small_groups(fams, 30)
    assert (name, group) == ("demographic parity", 1) and size == pytest.approx(5.0)
    # Plug-in weights: the effective size of a group falls with uneven posteriors.
    s = np.r_[np.full(40, 0.5), [0.99, 0.01, 0.01, 0.01, 0.01]]
    (eo,) = EqualOpportunity().families(codes, 2, s, 0.1)
    assert eo.effective_sizes()[1] < 1.2
    assert small_groups([], 30) == []


def test_mean_residual_rows_layout():
    """Check that the mean residual rows are one band per group (and class) around the label mean."""
    codes = np.array([0, 0, 1, 1, 1])
    y = np.array([1, 0, 1, 1, 0])
    rows = MeanResidual().rows(codes, 2, np.full(5, 0.5), 0.1, labels=y)
    assert rows.matrix.shape == (2, 5)
    assert np.allclose(rows.lower, [0.5 - 0.1, 2 / 3 - 0.1])
    assert np.allclose(rows.upper, [0.5 + 0.1, 2 / 3 + 0.1])
    S = np.full((5, 3), 1 / 3)
    rows3 = MeanResidual().rows(codes, 2, S, 0.1, labels=np.array([0, 1, 2, 2, 0]))
    assert rows3.matrix.shape == (6, 15)
