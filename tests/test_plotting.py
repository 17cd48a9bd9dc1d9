"""Tests of skfairlayer.plotting: every Display renders to a file with the artists it promises."""

import copy
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import StepPatch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from skfairlayer import FairnessLayerClassifier, project  # noqa: E402
from skfairlayer.datasets import make_parity_classification  # noqa: E402
from skfairlayer.plotting import (  # noqa: E402
    GroupScoreDisplay,
    ParityTradeoffDisplay,
    StreamingGapDisplay,
    running_gap,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    X, y, groups = make_parity_classification(600, random_state=0)
    return np.c_[X, groups], y, groups


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _ = data
    return FairnessLayerClassifier(
        LogisticRegression(), tolerance=0.02, sensitive_features=-1
    , sensitive_as_feature=False).fit(X, y)


def _save(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.stat().st_size > 1000
    return path


# ------------------------------------------------------------------ trade-off
def test_tradeoff_from_estimator_renders(data, fitted, tmp_path):
    """Check that the trade-off sweep plots one point per tolerance with gaps within tolerance."""
    X, y, groups = data
    tolerances = [0.3, 0.1, 0.05, 0.0]
    disp = ParityTradeoffDisplay.from_estimator(
        fitted, X, y, tolerances=tolerances, name="decisions", annotate=True
    )
    _save(disp.figure_, tmp_path, "tradeoff")
    assert isinstance(disp.line_, Line2D)
    assert disp.line_.get_label() == "decisions"
    np.testing.assert_allclose(disp.line_.get_xdata(), disp.gaps)
    np.testing.assert_allclose(disp.line_.get_ydata(), disp.scores)
    assert len(disp.gaps) == len(tolerances)
    assert np.all(np.asarray(disp.gaps) <= np.asarray(tolerances) + 1e-9)
    assert [a.get_text() for a in disp.annotations_] == ["0.3", "0.1", "0.05", "0"]
    assert disp.ax_.get_xlabel() == "demographic parity difference"
    assert disp.ax_.get_ylabel() == "accuracy"
    # the estimator itself is left untouched
    assert fitted.tolerance == 0.02


def test_tradeoff_several_methods_share_axes(data, fitted, tmp_path):
    """Check that methods drawn with ax=display.ax_ share one axes and legend."""
    X, y, groups = data
    tolerances = [0.2, 0.05, 0.0]
    first = ParityTradeoffDisplay.from_estimator(
        fitted, X, y, tolerances=tolerances, response_method="predict_proba", name="proba"
    )
    thresholded = [
        (p >= 0.5).astype(int)
        for p in (fitted.set_params(tolerance=t).predict_proba(X)[:, 1] for t in tolerances)
    ]
    fitted.set_params(tolerance=0.02)
    second = ParityTradeoffDisplay.from_predictions(
        y, thresholded, sensitive_features=groups, tolerances=tolerances,
        score_func=lambda yt, yp: float(np.mean(yt == yp)), score_name="accuracy",
        name="rounded", ax=first.ax_,
    )
    assert second.ax_ is first.ax_
    assert first.ax_.get_ylabel() == "accuracy"  # last call sets the label
    labels = [t.get_text() for t in first.ax_.get_legend().get_texts()]
    assert labels == ["proba", "rounded"]
    assert np.all(np.asarray(first.gaps) <= np.asarray(tolerances) + 1e-9)
    _save(first.figure_, tmp_path, "tradeoff2")


def test_tradeoff_default_score_for_probabilities(data):
    """Check that probability outputs default to ROC AUC on the y axis."""
    _, y, groups = data
    rng = np.random.default_rng(0)
    s = rng.uniform(size=y.size)
    disp = ParityTradeoffDisplay.from_predictions(y, [s], sensitive_features=groups)
    assert disp.ax_.get_ylabel() == "ROC AUC"
    codes = groups
    expected = abs(s[codes == 0].mean() - s[codes == 1].mean())
    np.testing.assert_allclose(disp.gaps[0], expected)


def test_tradeoff_refit_on(data, tmp_path):
    """Check that refit_on refits a clone per tolerance for fitted-shift inference."""
    X, y, groups = data
    clf = FairnessLayerClassifier(
        LogisticRegression(), sensitive_features=-1, inference="fitted",
        sensitive_as_feature=False, cv=None,
    ).fit(X, y)
    with pytest.raises(ValueError, match="refit_on"):
        ParityTradeoffDisplay.from_estimator(clf, X, y, tolerances=[0.1])
    with pytest.warns(UserWarning, match="trivial parity decisions"):  # tolerance 0, coprime sizes
        disp = ParityTradeoffDisplay.from_estimator(
            clf, X, y, tolerances=[0.1, 0.0], response_method="predict_proba", refit_on=(X, y)
        )
    # fitted shifts on the same data reproduce parity on it
    assert disp.gaps[1] <= 1e-9
    _save(disp.figure_, tmp_path, "refit")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y_preds": np.zeros(4)}, "sequence of outputs"),
        ({"y_preds": []}, "at least one"),
        ({"y_preds": [np.zeros(4)], "tolerances": [0.1, 0.2]}, "one entry per array"),
        ({"y_preds": [np.zeros(3)]}, "must have 4 rows"),
        ({"y_preds": [np.zeros(4)], "tolerances": [-1]}, "tolerances must be"),
    ],
)
def test_tradeoff_errors(kwargs, match):
    """Check that malformed sweeps raise a ValueError naming the parameter."""
    with pytest.raises(ValueError, match=match):
        ParityTradeoffDisplay.from_predictions(
            np.array([0, 1, 0, 1]), sensitive_features=[0, 0, 1, 1], **kwargs
        )


# ------------------------------------------------------------------ group scores
def test_group_scores_from_estimator(data, fitted, tmp_path):
    """Check that the two panels hold one histogram and one mean line per group."""
    X, _, groups = data
    disp = GroupScoreDisplay.from_estimator(fitted, X)
    _save(disp.figure_, tmp_path, "groups")
    assert disp.axes_.shape == (2,)
    for stage in ("before", "after"):
        assert len(disp.stairs_[stage]) == 2
        assert all(isinstance(s, StepPatch) for s in disp.stairs_[stage])
        xs = [line.get_xdata()[0] for line in disp.mean_lines_[stage]]
        np.testing.assert_allclose(xs, disp.means_[stage])
    after = fitted.predict_proba(X)[:, 1]
    before = fitted.estimator_.predict_proba(X[:, :-1])[:, 1]
    np.testing.assert_allclose(
        disp.means_["after"], [after[groups == g].mean() for g in (0, 1)]
    )
    np.testing.assert_allclose(
        disp.means_["before"], [before[groups == g].mean() for g in (0, 1)]
    )
    assert disp.gaps_["after"] <= 0.02 + 1e-9 < disp.gaps_["before"]
    assert "tolerance 0.02" in disp.axes_[1].get_title()


def test_group_scores_keyword_groups_and_given_axes(data, tmp_path):
    """Check that keyword groups are passed to the layer and that given axes are used."""
    X, y, groups = data
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.05).fit(
        X[:, :-1], y, sensitive_features=groups
    )
    fig, axes = plt.subplots(2, 1)
    disp = GroupScoreDisplay.from_estimator(
        clf, X[:, :-1], sensitive_features=groups, ax=axes, bins=10, density=False
    )
    assert disp.figure_ is fig
    counts = disp.stairs_["after"][0].get_data().values
    assert counts.sum() == np.sum(groups == 0)
    with pytest.raises(ValueError, match="sensitive_features is required"):
        GroupScoreDisplay.from_estimator(clf, X[:, :-1])
    with pytest.raises(ValueError, match="bins must be"):
        GroupScoreDisplay.from_predictions(
            [0.1, 0.2], [0.1, 0.2], sensitive_features=[0, 1], bins=0
        )
    _save(fig, tmp_path, "groups2")


def test_group_scores_projection(tmp_path):
    """Check that projected scores keep their within-group order and meet the tolerance."""
    rng = np.random.default_rng(1)
    group = rng.choice(["f", "m"], 800)
    s = np.clip(rng.beta(2, 4, 800) + 0.15 * (group == "m"), 0, 1)
    after = project(s, group, tolerance=0.0).proba
    disp = GroupScoreDisplay.from_predictions(s, after, sensitive_features=group)
    assert list(disp.groups_) == ["f", "m"]
    assert disp.gaps_["after"] <= 1e-9
    assert [p.get_label() for p in disp.stairs_["after"]] == ["f", "m"]
    _save(disp.figure_, tmp_path, "groups3")


# ------------------------------------------------------------------ streaming
def test_running_gap_matches_brute_force():
    """Check that the running pooled gap equals the gap recomputed on every prefix."""
    rng = np.random.default_rng(2)
    g = rng.integers(0, 3, 200)
    v = rng.uniform(size=200)
    gaps, min_counts = running_gap(v, g)
    for t in range(200):
        present = np.unique(g[: t + 1])
        if present.size < 2:
            assert np.isnan(gaps[t])
            continue
        means = [v[: t + 1][g[: t + 1] == k].mean() for k in present]
        np.testing.assert_allclose(gaps[t], max(means) - min(means), atol=1e-12)
        expected_min = np.bincount(g[: t + 1], minlength=3).min()
        assert min_counts[t] == expected_min


def test_running_gap_multiclass():
    """Check that 2-D outputs give the largest gap over the class columns."""
    P = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    gaps, _ = running_gap(P, [0, 1, 1])
    np.testing.assert_allclose(gaps[1:], [1.0, 0.75])


def test_streaming_display_artists(tmp_path):
    """Check that the stream plot draws the gap, the raw gap, the tolerance and the band."""
    rng = np.random.default_rng(3)
    n = 400
    g = rng.integers(0, 2, n)
    raw = np.clip(rng.uniform(size=n) * 0.7 + 0.3 * g, 0, 1)
    served = project(raw, g, tolerance=0.02).proba
    disp = StreamingGapDisplay.from_predictions(
        served, g, tolerance=0.02, raw_scores=raw, certificate=0.5, name="layer", log_x=True
    )
    _save(disp.figure_, tmp_path, "stream")
    assert isinstance(disp.line_, Line2D) and disp.line_.get_label() == "layer"
    assert isinstance(disp.raw_line_, Line2D)
    assert disp.tolerance_line_.get_ydata()[0] == 0.02
    assert isinstance(disp.band_, PolyCollection)
    assert disp.ax_.get_xscale() == "log"
    # the whole served batch meets parity: the final pooled gap is within tolerance
    assert disp.gaps[-1] <= 0.02 + 1e-9
    assert disp.raw_gaps[-1] > 0.1
    cert = np.asarray(disp.certificate)
    finite = np.isfinite(cert)
    np.testing.assert_allclose(
        cert[finite], 0.02 + 0.5 / running_gap(served, g)[1][finite]
    )


requires_streaming = pytest.mark.skipif(
    not hasattr(FairnessLayerClassifier, "partial_predict_proba"),
    reason="streaming (partial_predict_proba / stream_report) has not landed yet",
)


@requires_streaming
@pytest.mark.parametrize("output, batch_size", [("proba", 1), ("decisions", 8)])
def test_streaming_from_estimator(data, output, batch_size, tmp_path):
    """Check that the served stream's pooled gap stays within its certificate at every point."""
    X, y, groups = data
    clf = FairnessLayerClassifier(
        LogisticRegression(), tolerance=0.05, sensitive_features=-1
    , sensitive_as_feature=False).fit(X[:200], y[:200])
    disp = StreamingGapDisplay.from_estimator(
        clf, X[200:], batch_size=batch_size, output=output, name="served"
    )
    _save(disp.figure_, tmp_path, f"stream_{output}")
    n = X.shape[0] - 200
    assert disp.n_seen[-1] == n
    assert clf.stream_report(output).n_served == 0  # the display served a copy
    assert len(disp.n_seen) == -(-n // batch_size)
    finite = np.isfinite(disp.gaps)
    assert np.all(disp.gaps[finite] <= disp.certificate[finite] + 1e-12)
    served = copy.deepcopy(clf)
    for start in range(0, n, batch_size):
        rows = X[200 + start : 200 + min(start + batch_size, n)]
        (served.partial_predict_proba if output == "proba" else served.partial_predict)(rows)
    assert disp.gaps[-1] == pytest.approx(served.stream_report(output).gap)
    assert isinstance(disp.band_, PolyCollection)
    assert isinstance(disp.raw_line_, Line2D)
    assert disp.raw_gaps[-1] > disp.gaps[-1]
    assert disp.tolerance_line_.get_ydata()[0] == 0.05
    # served again with reset=True: the same stream from scratch
    again = StreamingGapDisplay.from_estimator(
        clf, X[200:], batch_size=batch_size, output=output
    )
    np.testing.assert_allclose(again.gaps, disp.gaps, equal_nan=True)


@requires_streaming
def test_streaming_from_estimator_keyword_groups(data):
    """Check that keyword groups are sliced per batch and that reset=False continues the stream.

    The display serves a copy: the second display continues the 200 rows the estimator itself
    served, and the estimator's stream is unchanged by both displays.
    """
    X, y, groups = data
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.05).fit(
        X[:200, :-1], y[:200], sensitive_features=groups[:200]
    )
    first = StreamingGapDisplay.from_estimator(
        clf, X[200:400, :-1], sensitive_features=groups[200:400], batch_size=50
    )
    clf.partial_predict_proba(X[200:400, :-1], sensitive_features=groups[200:400])
    second = StreamingGapDisplay.from_estimator(
        clf, X[400:, :-1], sensitive_features=groups[400:], batch_size=50, reset=False
    )
    assert first.n_seen[-1] == 200
    assert second.n_seen[0] == 250 and second.n_seen[-1] == X.shape[0] - 200
    assert clf.stream_report().n_served == 200
    assert second.raw_line_ is None  # no base curve for a continued stream


def test_streaming_from_estimator_errors(data):
    """Check that an estimator without the streaming methods and bad arguments raise."""
    X, y, _ = data
    with pytest.raises(TypeError, match="streaming"):
        StreamingGapDisplay.from_estimator(LogisticRegression().fit(X, y), X)


def test_streaming_display_errors():
    """Check that a constant certificate without tolerance and mismatched lengths raise."""
    with pytest.raises(ValueError, match="pass the tolerance"):
        StreamingGapDisplay.from_predictions([0.1, 0.2], [0, 1], certificate=1.0)
    with pytest.raises(ValueError, match="certificate must have 2"):
        StreamingGapDisplay.from_predictions([0.1, 0.2], [0, 1], certificate=[1.0])
    with pytest.raises(ValueError, match="raw_scores must have 2"):
        StreamingGapDisplay.from_predictions([0.1, 0.2], [0, 1], raw_scores=[0.1, 0.2, 0.3])


# ------------------------------------------------------------------ optional dependency
@pytest.mark.parametrize(
    "make",
    [
        lambda: ParityTradeoffDisplay(gaps=[0.1], scores=[0.8]).plot(),
        lambda: GroupScoreDisplay.from_predictions([0.1, 0.2], [0.1, 0.2], sensitive_features=[0, 1]),
        lambda: StreamingGapDisplay.from_predictions([0.1, 0.2], [0, 1]),
    ],
)
def test_import_error_without_matplotlib(monkeypatch, make):
    """Check that plotting without matplotlib raises an ImportError naming the extra."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"requires matplotlib.*pip install skfairlayer\[plot\]"):
        make()


def test_package_does_not_import_plotting():
    """Check that importing skfairlayer imports neither plotting nor matplotlib."""
    code = (
        "import sys, skfairlayer, skfairlayer.datasets; "
        "assert 'skfairlayer.plotting' not in sys.modules; "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plotting_imports_matplotlib_lazily():
    """Check that importing skfairlayer.plotting (and its displays) does not import matplotlib."""
    code = (
        "import sys; from skfairlayer.plotting import ParityTradeoffDisplay, running_gap; "
        "assert 'skfairlayer.plotting' in sys.modules; "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_streaming_display_with_marginal_groups(tmp_path):
    """Check that the streaming display follows a stream over marginal groups (counts per attribute)."""
    rng = np.random.default_rng(0)
    n = 400
    a, b = rng.integers(0, 2, n), rng.integers(0, 3, n)
    X = np.c_[rng.normal(size=n) + a, rng.normal(size=n) - 0.3 * b, a, b]
    y = (X[:, 0] + X[:, 1] + rng.normal(size=n) > 0.5).astype(int)
    clf = FairnessLayerClassifier(LogisticRegression(), tolerance=0.05, sensitive_features=[2, 3],
                                  groups="marginal", min_group_size=None, sensitive_as_feature=False).fit(X, y)
    disp = StreamingGapDisplay.from_estimator(clf, X[:120], batch_size=4)
    assert disp.n_seen[-1] == 120
    finite = np.isfinite(disp.gaps)
    assert finite.any()
    assert np.all(disp.gaps[finite] <= disp.certificate[finite] + 1e-12)
    disp.figure_.savefig(tmp_path / "stream.png")
