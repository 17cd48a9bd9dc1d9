"""Tests of fine-tuning differentiable bases through the fairness layer."""

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfairlayer import FairnessLayerClassifier, FineTuning, project
from skfairlayer._criteria import Criterion, group_family, make_criterion
from skfairlayer._differentiable import make_adapter
from skfairlayer._fine_tune import _minibatches, _validation_split, batch_loss
from skfairlayer.datasets import make_parity_classification


@pytest.fixture(scope="module")
def data():
    X, y, groups = make_parity_classification(600, n_features=4, random_state=0)
    return X, y, groups


def _projected_log_loss(clf, X, y, groups, tol):
    s = clf.predict_proba(X)[:, 1]
    p = np.clip(project(s, groups, tolerance=tol).proba, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def _mlp(**kw):
    return MLPClassifier((8,), max_iter=300, random_state=0, **kw)


def _quiet_fit(est, *args, **kwargs):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# --------------------------------------------------------------------------- gradients
_MODELS = [
    LogisticRegression(C=0.5),
    LogisticRegression(fit_intercept=False),
    SGDClassifier(loss="log_loss", random_state=0),
    _mlp(activation="relu"),
    _mlp(activation="tanh"),
    MLPClassifier((4, 3), activation="logistic", max_iter=300, random_state=0),
    MLPClassifier((4,), activation="identity", max_iter=300, random_state=0),
    make_pipeline(StandardScaler(), LogisticRegression()),
]


@pytest.mark.parametrize("model", _MODELS, ids=lambda m: repr(m)[:40])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_adapter_matches_predict_proba_and_finite_differences(model, n_classes):
    """Check forward == predict_proba and the parameter VJP against central differences."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = np.digitize(X[:, 0] + 0.5 * rng.normal(size=80), [-0.4, 0.4][: n_classes - 1])
    est = _quiet_fit(clone(model), X, y)
    adapter = make_adapter(est)
    params = adapter.parameters()
    Xt = adapter.transform(X)
    proba, vjp = adapter.forward(Xt, params)
    np.testing.assert_allclose(proba, est.predict_proba(X), rtol=1e-12, atol=1e-14)
    G = rng.normal(size=proba.shape)
    grads = vjp(G)
    for _ in range(3):
        d = [rng.normal(size=p.shape) for p in params]
        h = 1e-6
        plus = np.sum(
            G * adapter.forward(Xt, [p + h * q for p, q in zip(params, d, strict=True)])[0]
        )
        minus = np.sum(
            G * adapter.forward(Xt, [p - h * q for p, q in zip(params, d, strict=True)])[0]
        )
        analytic = sum(np.sum(g * q) for g, q in zip(grads, d, strict=True))
        assert np.isclose((plus - minus) / (2 * h), analytic, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("model", _MODELS[:4] + _MODELS[-1:], ids=lambda m: repr(m)[:40])
def test_batch_loss_gradient_through_the_layer(model, data):
    """Check the chain rule (ds/dtheta)' J dL/dp of a projected batch loss by differences."""
    X, y, groups = data
    X, y, groups = X[:150], y[:150], groups[:150]
    est = _quiet_fit(clone(model), X, y)
    adapter = make_adapter(est)
    Xt = adapter.transform(X)
    params = adapter.parameters()
    layer = {
        "criterion": make_criterion("demographic_parity"),
        "tolerance": 0.02,
        "solver": "auto",
        "margin": 1e-6,
    }
    w = np.ones(y.size)
    loss, _, grads = batch_loss(adapter, Xt, params, groups, y, w, **layer, gradient=True)
    rng = np.random.default_rng(1)
    for _ in range(3):
        d = [rng.normal(size=p.shape) for p in params]
        h = 1e-6

        def f(t, d=d):
            return batch_loss(
                adapter,
                Xt,
                [p + t * q for p, q in zip(params, d, strict=True)],
                groups,
                y,
                w,
                **layer,
            )[0]

        fd = (f(h) - f(-h)) / (2 * h)
        analytic = sum(np.sum(g * q) for g, q in zip(grads, d, strict=True))
        assert np.isclose(fd, analytic, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- batches
def test_minibatches_carry_every_group():
    """Check that every batch carries every group, even a small one, and batches partition."""
    rng = np.random.default_rng(0)
    codes = np.r_[np.zeros(2000, int), np.ones(300, int), np.full(12, 2)]
    y = rng.integers(0, 2, codes.size)
    batches = _minibatches(codes, y, 64, np.random.RandomState(0))
    assert len(batches) == 12  # capped by the smallest group
    for b in batches:
        assert set(codes[b]) == {0, 1, 2}
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(codes.size))
    sizes = [b.size for b in batches]
    assert max(sizes) - min(sizes) <= 3


def test_validation_split_is_stratified():
    """Check the validation split takes the fraction from every group and label."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, 3000)
    y = rng.integers(0, 2, 3000)
    val = _validation_split(codes, y, 0.2, np.random.RandomState(0))
    for g in range(3):
        for label in range(2):
            stratum = (codes == g) & (y == label)
            assert abs(val[stratum].mean() - 0.2) < 0.01
    one = _validation_split(
        np.r_[0, np.ones(50, int)], np.zeros(51, int), 0.5, np.random.RandomState(0)
    )
    assert not one[0]  # a group of one row keeps it for training


# --------------------------------------------------------------------------- estimator
_BASES = [
    LogisticRegression(),
    SGDClassifier(loss="log_loss", random_state=0),
    _mlp(),
    make_pipeline(StandardScaler(), LogisticRegression()),
]


@pytest.mark.parametrize("base", _BASES, ids=lambda m: type(m).__name__)
def test_fine_tune_each_supported_base(base, data):
    """Check fine-tuning each base: same class, new weights, user's estimator untouched,
    estimator_ usable alone, parity of the layer intact."""
    X, y, groups = data
    params = {"max_epochs": 5, "learning_rate": 1e-2, "validation_fraction": 0.0}
    clf = _quiet_fit(
        FairnessLayerClassifier(
            base, tolerance=0.02, fine_tune=FineTuning(**params), random_state=0
        , cv=None),
        X,
        y,
        sensitive_features=groups,
    )
    assert type(clf.estimator_) is type(base)
    assert not hasattr(base[-1] if hasattr(base, "steps") else base, "classes_")
    plain = _quiet_fit(clone(base), X, y)
    tuned_proba = clf.estimator_.predict_proba(X)
    assert not np.allclose(tuned_proba, plain.predict_proba(X))
    assert clf.estimator_.predict(X).shape == y.shape
    p = clf.predict_proba(X, sensitive_features=groups)[:, 1]
    means = [p[groups == g].mean() for g in (0, 1)]
    assert abs(means[0] - means[1]) <= 0.02 + 1e-9
    history = clf.fine_tune_history_
    assert history["epoch"] == list(range(6)) and history["best_epoch"] == 5


def test_fine_tune_lowers_projected_training_loss(data):
    """Check that fine-tuning lowers the projected training log-loss of the post-hoc layer."""
    X, y, groups = data
    tol = 0.01
    posthoc = FairnessLayerClassifier(tolerance=tol).fit(X, y, sensitive_features=groups)
    tuned = FairnessLayerClassifier(
        tolerance=tol,
        random_state=0,
        fine_tune=FineTuning(**{
            "max_epochs": 30,
            "learning_rate": 2e-2,
            "validation_fraction": 0.0,
            "batch_size": 200,
        }),
    cv=None).fit(X, y, sensitive_features=groups)
    before = _projected_log_loss(posthoc.estimator_, X, y, groups, tol)
    after = _projected_log_loss(tuned.estimator_, X, y, groups, tol)
    assert after < before - 0.01


def test_fine_tune_is_reproducible(data):
    """Check that random_state makes fine-tuning reproducible (and matters)."""
    X, y, groups = data

    def fit(seed):
        return (
            FairnessLayerClassifier(
                tolerance=0.02,
                random_state=seed,
                fine_tune=FineTuning(**{"max_epochs": 4, "batch_size": 100, "learning_rate": 1e-2}),
            cv=None)
            .fit(X, y, sensitive_features=groups)
            .estimator_.coef_
        )

    np.testing.assert_array_equal(fit(0), fit(0))
    assert not np.array_equal(fit(0), fit(1))


def test_early_stopping_keeps_best_parameters(data):
    """Check that early stopping keeps the epoch of lowest validation loss (possibly epoch 0)."""
    X, y, groups = data
    clf = FairnessLayerClassifier(
        tolerance=0.02,
        random_state=0,
        fine_tune=FineTuning(**{"max_epochs": 40, "learning_rate": 0.5, "n_iter_no_change": 2}),
    cv=None).fit(X, y, sensitive_features=groups)
    h = clf.fine_tune_history_
    best = h["best_epoch"]
    assert h["val_loss"][best] == min(h["val_loss"])
    assert len(h["epoch"]) < 41  # stopped early with this learning rate
    if best == 0:
        plain = LogisticRegression().fit(X, y)
        np.testing.assert_allclose(clf.estimator_.coef_, plain.coef_)


def test_verbose_prints_progress(data, capsys):
    """Check that verbose reports epoch, loss and parity gap lines (on stderr, never stdout)."""
    X, y, groups = data
    FairnessLayerClassifier(
        verbose=1, random_state=0, fine_tune=FineTuning(**{"max_epochs": 2})
    , cv=None).fit(X, y, sensitive_features=groups)
    captured = capsys.readouterr()
    out = captured.err
    assert "Epoch 1/2" in out and "val loss" in out and "parity gap" in out
    assert captured.out == ""


class _NumpyLogistic(ClassifierMixin, BaseEstimator):
    """A tiny logistic model implementing the fine-tuning protocol."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.w_ = np.linalg.lstsq(np.c_[X, np.ones(len(X))], 2.0 * y - 1, rcond=None)[0]
        return self

    def predict_proba(self, X):
        q = expit(np.c_[X, np.ones(len(X))] @ self.w_)
        return np.column_stack([1 - q, q])

    def fine_tune_parameters(self):
        return [self.w_]

    def fine_tune_forward(self, X, parameters):
        Xb = np.c_[X, np.ones(len(X))]
        q = expit(Xb @ parameters[0])

        def vjp(grad_proba):
            dz = (grad_proba[:, 1] - grad_proba[:, 0]) * q * (1 - q)
            return [Xb.T @ dz]

        return np.column_stack([1 - q, q]), vjp

    def set_fine_tune_parameters(self, parameters):
        self.w_ = parameters[0]


def test_user_model_with_the_protocol(data):
    """Check that a user model implementing the protocol is fine-tuned and keeps its class."""
    X, y, groups = data
    base = _NumpyLogistic()
    clf = FairnessLayerClassifier(
        base,
        tolerance=0.02,
        random_state=0,
        fine_tune=FineTuning(**{"max_epochs": 5, "learning_rate": 1e-2, "validation_fraction": 0.0}),
    cv=None).fit(X, y, sensitive_features=groups)
    assert isinstance(clf.estimator_, _NumpyLogistic)
    assert not np.allclose(clf.estimator_.w_, _NumpyLogistic().fit(X, y).w_)


@pytest.mark.parametrize(
    "base, params, err_type, match",
    [
        (RandomForestClassifier(n_estimators=3), None, TypeError, "LogisticRegression, SGD"),
        (SGDClassifier(loss="modified_huber"), None, TypeError, "differentiable base"),
        (
            FrozenEstimator(LogisticRegression().fit([[0], [1]], [0, 1])),
            None,
            ValueError,
            "FrozenEstimator",
        ),
        (LogisticRegression(), {"epochs": 3}, TypeError, "epochs"),
        (LogisticRegression(), {"learning_rate": -1.0}, ValueError, "learning_rate"),
        (LogisticRegression(), {"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        (LogisticRegression(), {"batch_size": 1}, ValueError, "batch_size"),
        (LogisticRegression(), {"label_free": "yes"}, ValueError, "label_free"),
    ],
)
def test_fine_tune_errors(base, params, err_type, match, data):
    """Check the errors raised, before fitting, for unsupported bases and bad settings."""
    X, y, groups = data
    clf = None
    with pytest.raises(err_type, match=match):
        clf = FairnessLayerClassifier(
            base, fine_tune=True if params is None else FineTuning(**params)
        , cv=None)
        clf.fit(X, y, sensitive_features=groups)
    assert clf is None or not hasattr(clf, "estimator_")


def test_fine_tune_off_has_no_history(data):
    """Check that without fine-tuning the estimator is the plain fitted base."""
    X, y, groups = data
    clf = FairnessLayerClassifier().fit(X, y, sensitive_features=groups)
    assert clf.fine_tune_history_ is None
    np.testing.assert_allclose(clf.estimator_.coef_, LogisticRegression().fit(X, y).coef_)


def _simplex_solver_available():
    from skfairlayer._criteria import DemographicParity, ProjectionProblem
    from skfairlayer._projection import solve_problem

    s = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    codes = np.array([0, 0, 1, 1])
    fams = DemographicParity().families(codes, 2, s, 0.01)
    try:
        solve_problem(ProjectionProblem(s, fams, simplex=True))
    except (ImportError, NotImplementedError, ValueError):
        return False
    return True


def _check_batch_gradient(adapter, X, params, codes, y, layer, rng, h):
    """Assert that batch_loss's parameter gradient matches central differences of the loss
    along a random direction."""
    w = np.ones(y.size)
    _, _, grads = batch_loss(adapter, X, params, codes, y, w, **layer, gradient=True)
    d = [rng.normal(size=p.shape) for p in params]

    def f(t):
        moved = [p + t * q for p, q in zip(params, d, strict=True)]
        return batch_loss(adapter, X, moved, codes, y, w, **layer)[0]

    analytic = sum(np.sum(a * b) for a, b in zip(grads, d, strict=True))
    assert np.isclose((f(h) - f(-h)) / (2 * h), analytic, rtol=1e-5, atol=1e-7)


def test_multiclass_fine_tune_through_the_simplex_layer():
    """Check multinomial fine-tuning: chain-rule gradient by differences, weights updated."""
    if not _simplex_solver_available():
        pytest.skip("no solver for multiclass (simplex) projections yet")
    from skfairlayer._fine_tune import fine_tune

    rng = np.random.default_rng(0)
    n = 300
    g = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 4)) + 0.8 * g[:, None]
    y = np.digitize(X[:, 0] + 0.5 * g + 0.5 * rng.normal(size=n), [0.3, 1.2])
    est = LogisticRegression().fit(X, y)
    adapter = make_adapter(est)
    params = adapter.parameters()
    layer = {
        "criterion": make_criterion("demographic_parity"),
        "tolerance": 0.02,
        "solver": "auto",
        "margin": 1e-6,
    }
    _check_batch_gradient(adapter, X, params, g, y, layer, rng, h=1e-5)
    before = est.coef_.copy()
    fine_tune(
        est,
        X,
        y,
        g,
        classes=est.classes_,
        tolerance=0.02,
        random_state=0,
        params={"max_epochs": 3, "validation_fraction": 0.0},
    )
    assert est.coef_.shape == before.shape and not np.allclose(est.coef_, before)


# --------------------------------------------------------------------------- beyond binary DP
def _biased(n, n_classes, seed):
    """Two sensitive attributes (2 and 3 values) that shift the features and the target."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, n), rng.integers(0, 3, n)
    X = rng.normal(size=(n, 4))
    X[:, 1] += 1.5 * a
    X[:, 2] -= 0.5 * b
    z = X[:, 0] + a + 0.3 * X[:, 1] + 0.7 * rng.normal(size=n)
    y = (z > 0.5).astype(int) if n_classes == 2 else np.digitize(z, [0.0, 1.2])
    return X, y, a, b


def _projected_loss(model, X, y, sensitive, labels, **layer):
    """Log-loss of the projected probabilities of ``model`` (labels: label-based criteria)."""
    S = model.predict_proba(X)
    s = S[:, 1] if S.shape[1] == 2 else S
    p = project(s, sensitive, labels=labels, **layer).proba
    P = np.column_stack([1 - p, p]) if p.ndim == 1 else p
    return float(-np.mean(np.log(np.clip(P[np.arange(y.size), y], 1e-6, 1))))


def _assert_layer_holds(clf, X, sensitive, layer):
    """The fitted estimator's outputs meet the (plug-in) criterion on the batch exactly."""
    S = clf.estimator_.predict_proba(X)
    s = S[:, 1] if S.shape[1] == 2 else S
    P = clf.predict_proba(X, sensitive_features=sensitive)
    p = P[:, 1] if S.shape[1] == 2 else P
    reference = project(s, sensitive, **layer)
    assert reference.problem.parity_violation(p) <= 1e-9
    assert P.min() >= 0.0 and np.allclose(P.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(p, reference.proba, atol=1e-7)


def _fit_tuned(base, X, y, sensitive, layer, label_free=False, **settings):
    params = {"max_epochs": 20, "learning_rate": 1e-2, "validation_fraction": 0.0,
              "batch_size": 100, "label_free": label_free, **settings}
    return _quiet_fit(
        FairnessLayerClassifier(
            base, fine_tune=FineTuning(**params), random_state=0, **layer
        , cv=None),
        X, y, sensitive_features=sensitive,
    )


_GAINS = [
    ("multiclass DP, LR", LogisticRegression(), 3, "demographic_parity", "intersectional", False),
    ("multiclass DP, MLP", _mlp(), 3, "demographic_parity", "intersectional", False),
    (
        "multiclass DP, SGD OvR",
        SGDClassifier(loss="log_loss", random_state=0), 3, "demographic_parity",
        "intersectional", False,
    ),
    ("marginal DP", LogisticRegression(), 2, "demographic_parity", "marginal", False),
    ("multiclass marginal DP", LogisticRegression(), 3, "demographic_parity", "marginal", False),
    ("mean residual", LogisticRegression(), 2, "mean_residual", "intersectional", False),
    ("multiclass marginal mean residual", LogisticRegression(), 3, "mean_residual", "marginal",
     False),
    ("label-free EO", LogisticRegression(), 2, "equal_opportunity", "intersectional", True),
    ("label-free multiclass EOdds", LogisticRegression(), 3, "equalized_odds", "intersectional",
     True),
    ("label-free marginal EOdds", LogisticRegression(), 2, "equalized_odds", "marginal", True),
]


@pytest.mark.parametrize(
    "base, n_classes, criterion, groups, label_free", [c[1:] for c in _GAINS],
    ids=[c[0] for c in _GAINS],
)
def test_fine_tune_beyond_binary_dp_lowers_projected_loss(
    base, n_classes, criterion, groups, label_free
):
    """Check fine-tuning each newly supported combination: it lowers the projected training
    log-loss of the post-hoc layer, keeps the base's class, and the fitted estimator's
    outputs meet the criterion on the batch."""
    X, y, a, b = _biased(400, n_classes, seed=2)
    sensitive = a if groups == "intersectional" else np.c_[a, b]
    layer = {"tolerance": 0.02, "criterion": criterion, "groups": groups}
    clf = _fit_tuned(base, X, y, sensitive, layer, label_free=label_free)
    assert type(clf.estimator_) is type(base)
    labels = None if label_free else y  # the layer the loss was trained through
    before = _projected_loss(_quiet_fit(clone(base), X, y), X, y, sensitive, labels, **layer)
    after = _projected_loss(clf.estimator_, X, y, sensitive, labels, **layer)
    assert after < before - 0.003
    _assert_layer_holds(clf, X, sensitive, layer)


_LABELLED = [
    ("EO", 2, "equal_opportunity", "intersectional"),
    ("EOdds", 2, "equalized_odds", "intersectional"),
    ("multiclass EOdds", 3, "equalized_odds", "intersectional"),
    ("marginal EO", 2, "equal_opportunity", "marginal"),
]


@pytest.mark.parametrize(
    "n_classes, criterion, groups", [c[1:] for c in _LABELLED], ids=[c[0] for c in _LABELLED]
)
def test_fine_tune_label_based_criteria(n_classes, criterion, groups):
    """Check fine-tuning through label-based EO/EOdds (training labels on each batch): it runs
    with early stopping, the outputs meet the criterion, and the projected training loss is
    not worse than post hoc (with labels the projection is nearly free: little to gain)."""
    X, y, a, b = _biased(400, n_classes, seed=2)
    sensitive = a if groups == "intersectional" else np.c_[a, b]
    layer = {"tolerance": 0.02, "criterion": criterion, "groups": groups}
    clf = _fit_tuned(
        LogisticRegression(), X, y, sensitive, layer, validation_fraction=0.2,
        n_iter_no_change=3,
    )
    h = clf.fine_tune_history_
    assert h["val_loss"][h["best_epoch"]] == min(h["val_loss"])
    plain = LogisticRegression().fit(X, y)
    before = _projected_loss(plain, X, y, sensitive, y, **layer)
    base_loss = -np.mean(np.log(plain.predict_proba(X)[np.arange(y.size), y]))
    assert abs(before - base_loss) < 0.02  # the labelled projection barely costs anything
    assert _projected_loss(clf.estimator_, X, y, sensitive, y, **layer) < before + 0.005
    _assert_layer_holds(clf, X, sensitive, layer)


def test_fine_tune_beyond_binary_dp_is_reproducible():
    """Check that random_state makes multiclass marginal fine-tuning reproducible."""
    X, y, a, b = _biased(600, 3, seed=0)

    def fit(seed):
        return (
            FairnessLayerClassifier(
                tolerance=0.02, criterion="equalized_odds", groups="marginal", random_state=seed,
                fine_tune=FineTuning(**{"max_epochs": 3, "batch_size": 60, "validation_fraction": 0.0}),
            cv=None)
            .fit(X, y, sensitive_features=np.c_[a, b])
            .estimator_.coef_
        )

    np.testing.assert_array_equal(fit(0), fit(0))
    assert not np.array_equal(fit(0), fit(1))


_CRITERIA = ["demographic_parity", "equal_opportunity", "equalized_odds", "mean_residual"]


@pytest.mark.parametrize("criterion", _CRITERIA)
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("label_free", [False, True])
def test_batch_loss_gradient_every_criterion(criterion, n_classes, label_free):
    """Check the chain rule through the layer by central differences for every criterion,
    binary and multiclass, marginal groups, label-based and plug-in (label-free) layers."""
    X, y, a, b = _biased(120, n_classes, seed=1)
    codes = np.c_[a, b]
    est = LogisticRegression().fit(X, y)
    adapter = make_adapter(est)
    params = adapter.parameters()
    layer = {
        "criterion": make_criterion(criterion), "tolerance": 0.01, "solver": "auto",
        "margin": 1e-6, "label_free": label_free,
    }
    _check_batch_gradient(adapter, X, params, codes, y, layer, np.random.default_rng(0), h=1e-6)


def test_minibatches_cover_marginal_groups_and_label_cells():
    """Check batches carry every (group, label) cell of each attribute, and partition the rows."""
    rng = np.random.default_rng(0)
    n = 3000
    a = rng.integers(0, 2, n)
    b = rng.choice(5, size=n, p=[0.4, 0.3, 0.2, 0.08, 0.02])
    y = (rng.uniform(size=n) < 0.2 + 0.3 * a).astype(int)
    codes = np.c_[a, b]
    batches = _minibatches(codes, y, 64, np.random.RandomState(0), label_cells=True)
    smallest = min(
        np.bincount(c * 2 + y).min() for c in (a, b) if np.bincount(c * 2 + y).min() > 0
    )
    assert len(batches) == min(round(n / 64), smallest)
    for batch in batches:
        for c in (a, b):
            assert set(zip(c[batch], y[batch], strict=True)) == set(zip(c, y, strict=True))
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(n))


class _UndeclaredScoreWeights(Criterion):
    """Weights built from the scores without declaring it (not differentiable from the problem)."""

    def families(self, codes, n_groups, scores, tolerance, labels=None):
        s = scores if scores.ndim == 1 else scores[:, 0]
        return (group_family(codes, n_groups, 0.5 + s, tolerance),)


def test_fine_tune_refuses_undeclared_score_dependence(data):
    """Check that a custom criterion whose weights move with the scores undeclared stops
    fine-tuning with NotImplementedError (no silently wrong gradient)."""
    X, y, groups = data
    clf = FairnessLayerClassifier(
        criterion=_UndeclaredScoreWeights(), random_state=0,
        fine_tune=FineTuning(**{"max_epochs": 1}),
    cv=None)
    with pytest.raises(NotImplementedError, match="Cannot differentiate"):
        clf.fit(X, y, sensitive_features=groups)
