"""Tests of skfairlayer.datasets: the shipped UCI Adult loader and the synthetic generator."""

import gzip
import hashlib
import socket
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

from skfairlayer.datasets import load_adult, make_parity_classification

pd = pytest.importorskip("pandas")

N_ROWS = 32561
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
SHA256 = "c30ce1e55a965b04950321870db74c19f4aa437120a692f32e72f6a4fa31c418"
SHARED_CSV = Path("/work/shared/data/adult.csv")


@pytest.fixture(scope="module")
def adult():
    return load_adult()


@pytest.fixture
def no_network(monkeypatch):
    """Make any socket connection fail."""

    def refuse(*args, **kwargs):
        raise AssertionError("load_adult tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------- load_adult
def test_adult_shipped_file_is_the_original():
    """Check that the shipped gzip file decompresses to the original CSV (by SHA-256)."""
    path = resources.files("skfairlayer.datasets") / "data" / "adult.csv.gz"
    raw = gzip.decompress(path.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == SHA256
    assert len(path.read_bytes()) < 1_000_000
    if SHARED_CSV.exists():
        assert raw == SHARED_CSV.read_bytes()


def test_adult_licence_note_ships_with_data(adult):
    """Check that the licence and attribution ship next to the data and form DESCR."""
    note = (resources.files("skfairlayer.datasets") / "data" / "README.md").read_text("utf-8")
    for needle in ("CC BY 4.0", "10.24432/C5XW20", "Becker", "Kohavi"):
        assert needle in note
    assert note == adult.DESCR


def test_adult_frame(adult):
    """Check shapes, dtypes, target rate and categories of the DataFrame version."""
    X, y = adult.data, adult.target
    assert X.shape == (N_ROWS, 14)
    assert adult.frame.shape == (N_ROWS, 15)
    assert list(X.columns) == adult.feature_names
    assert adult.frame.columns[-1] == "income-per-year"
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert int(y.sum()) == 7841  # 24.08 % of rows earn >50K
    assert y.mean() == pytest.approx(0.2408, abs=1e-4)
    for name in X.columns:
        expected = "int64" if name in NUMERIC else "category"
        assert str(X[name].dtype) == expected, name
    assert list(X["sex"].cat.categories) == ["Female", "Male"]
    assert set(X["race"].cat.categories) == {
        "White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other",
    }
    assert adult.target_names == ["<=50K", ">50K"]
    pd.testing.assert_frame_equal(adult.frame.iloc[:, :-1], X)
    pd.testing.assert_series_equal(adult.frame["income-per-year"], y)


def test_adult_missing_values_and_whitespace(adult):
    """Check that "?" becomes a missing value and no label keeps stray whitespace."""
    X = adult.data
    assert X.isna().sum()[lambda s: s > 0].to_dict() == {
        "workclass": 1836, "occupation": 1843, "native-country": 583,
    }
    for name in X.select_dtypes("category"):
        cats = [str(c) for c in X[name].cat.categories]
        assert "?" not in cats
        assert all(c == c.strip() for c in cats)


def test_adult_sensitive_features(adult):
    """Check that the sensitive columns are returned and are also columns of X."""
    sens = adult.sensitive_features
    assert list(sens.columns) == ["sex", "race"]
    pd.testing.assert_frame_equal(sens, adult.data[["sex", "race"]])
    assert (sens["sex"] == "Female").mean() == pytest.approx(0.3308, abs=1e-4)
    only_sex = load_adult(sensitive_features="sex").sensitive_features
    assert list(only_sex.columns) == ["sex"]


def test_adult_return_X_y(adult):
    """Check that return_X_y returns the Bunch's data and target."""
    X, y = load_adult(return_X_y=True)
    pd.testing.assert_frame_equal(X, adult.data)
    pd.testing.assert_series_equal(y, adult.target)


def test_adult_numpy(adult):
    """Check that as_frame=False gives object arrays equal to the frame, NaN where missing."""
    bunch = load_adult(as_frame=False)
    X, y = bunch.data, bunch.target
    assert isinstance(X, np.ndarray) and X.dtype == object and X.shape == (N_ROWS, 14)
    assert isinstance(y, np.ndarray) and y.dtype == np.int64
    np.testing.assert_array_equal(y, adult.target.to_numpy())
    assert bunch.frame is None
    assert bunch.sensitive_features.shape == (N_ROWS, 2)
    frame = adult.data
    missing = frame.isna().to_numpy()
    as_float_nan = np.vectorize(lambda v: isinstance(v, float) and v != v)(X)
    np.testing.assert_array_equal(as_float_nan, missing)
    np.testing.assert_array_equal(
        np.where(missing, None, X), np.where(missing, None, frame.astype(object).to_numpy())
    )
    assert isinstance(X[0, 0], int) and X[0, 1] == "State-gov"


def test_adult_offline(no_network):
    """Check that the loader reads the package data only, with the network disabled."""
    X, y = load_adult(return_X_y=True, as_frame=False)
    assert X.shape == (N_ROWS, 14)


def test_adult_without_pandas(monkeypatch):
    """Check the ImportError naming the extra to install, and that arrays still load."""
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "skfairlayer\[pandas\]"'):
        load_adult()
    X, y = load_adult(as_frame=False, return_X_y=True)
    assert X.shape == (N_ROWS, 14)


@pytest.mark.parametrize(
    "kwargs, err_type, err_msg",
    [
        ({"sensitive_features": "gender"}, ValueError, "must name columns"),
        ({"sensitive_features": ("sex", "sex")}, ValueError, "must not repeat"),
        ({"sensitive_features": ()}, TypeError, "non-empty sequence"),
        ({"sensitive_features": 9}, TypeError, "Got 9 instead"),
        ({"sensitive_features": "income-per-year"}, ValueError, "must name columns"),
        ({"as_frame": "yes"}, TypeError, "as_frame must be a bool"),
        ({"return_X_y": 1}, TypeError, "return_X_y must be a bool"),
    ],
)
def test_adult_errors(kwargs, err_type, err_msg):
    """Check the errors of load_adult on invalid parameters."""
    with pytest.raises(err_type, match=err_msg):
        load_adult(**kwargs)


# --------------------------------------------------------------------------- generator
def test_generator_reproducible():
    """Check that a seed reproduces the data and another seed changes it."""
    a = make_parity_classification(300, nonlinear=True, random_state=3)
    b = make_parity_classification(300, nonlinear=True, random_state=3)
    c = make_parity_classification(300, nonlinear=True, random_state=4)
    d = make_parity_classification(300, nonlinear=True, random_state=np.random.RandomState(3))
    for u, v, w in zip(a, b, d, strict=True):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(u, w)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("n_groups, n_features", [(2, 5), (3, 1), (4, 7)])
def test_generator_shapes(n_groups, n_features):
    """Check shapes, dtypes, label values and group codes."""
    X, y, groups = make_parity_classification(
        500, n_features=n_features, n_groups=n_groups, random_state=0
    )
    assert X.shape == (500, n_features) and X.dtype == np.float64
    assert y.shape == groups.shape == (500,)
    assert y.dtype == groups.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}
    assert set(np.unique(groups)) == set(range(n_groups))


def test_generator_group_proportions():
    """Check that groups are drawn with the requested proportions."""
    _, _, groups = make_parity_classification(
        20000, n_groups=3, group_proportions=[0.2, 0.3, 0.5], random_state=0
    )
    np.testing.assert_allclose(np.bincount(groups) / groups.size, [0.2, 0.3, 0.5], atol=0.015)


@pytest.mark.parametrize("shift", [0.0, 1.0, 2.5])
def test_generator_proxy_features(shift):
    """Check that proxy features' group means differ by group_shift, other features' do not."""
    X, _, groups = make_parity_classification(
        20000, n_features=6, group_shift=shift, random_state=1
    )
    diff = X[groups == 1].mean(axis=0) - X[groups == 0].mean(axis=0)
    np.testing.assert_allclose(diff[:2], shift, atol=0.06)  # ceil(6 / 3) = 2 proxies
    np.testing.assert_allclose(diff[2:], 0.0, atol=0.06)


def test_generator_label_bias():
    """Check that bias (direct) and group_shift (through proxies) both favour group 1."""

    def gap(**kw):
        _, y, g = make_parity_classification(20000, random_state=2, **kw)
        return y[g == 1].mean() - y[g == 0].mean()

    assert abs(gap(bias=0.0, group_shift=0.0)) < 0.03
    assert gap(bias=1.0, group_shift=0.0) > 0.2
    assert gap(bias=-1.0, group_shift=0.0) < -0.2
    assert gap(bias=0.0, group_shift=1.0) > 0.03  # size depends on the random weights
    assert gap(bias=1.0, group_shift=1.0) > gap(bias=1.0, group_shift=0.0)


def test_generator_noise():
    """Check that noise=0 gives labels a linear model recovers, and noise blurs them."""
    X, y, g = make_parity_classification(3000, noise=0.0, random_state=0)
    Xg = np.c_[X, g]
    clean = LogisticRegression(C=1e4, max_iter=2000).fit(Xg, y).score(Xg, y)
    X, y, g = make_parity_classification(3000, noise=1.0, random_state=0)
    Xg = np.c_[X, g]
    noisy = LogisticRegression(C=1e4, max_iter=2000).fit(Xg, y).score(Xg, y)
    assert clean > 0.98
    assert noisy < clean - 0.1


def test_generator_nonlinear():
    """Check that nonlinear=True defeats a linear model but not a quadratic one."""
    X, y, _ = make_parity_classification(4000, nonlinear=True, random_state=0)
    linear = cross_val_score(LogisticRegression(), X, y, cv=3).mean()
    quadratic = make_pipeline(PolynomialFeatures(2), LogisticRegression(max_iter=1000))
    assert cross_val_score(quadratic, X, y, cv=3).mean() > linear + 0.1
    X, y, _ = make_parity_classification(4000, nonlinear=False, random_state=0)
    assert cross_val_score(LogisticRegression(), X, y, cv=3).mean() > 0.8


@pytest.mark.parametrize(
    "kwargs, err_type, err_msg",
    [
        ({"n_samples": 0}, ValueError, "n_samples must be an integer >= 1"),
        ({"n_samples": 10.0}, ValueError, "n_samples must be an integer"),
        ({"n_features": 0}, ValueError, "n_features must be an integer >= 1"),
        ({"n_groups": 1}, ValueError, "n_groups must be an integer >= 2"),
        ({"n_groups": True}, ValueError, "n_groups must be an integer"),
        ({"group_proportions": [0.5, 0.6]}, ValueError, "summing to 1"),
        ({"group_proportions": [1.0]}, ValueError, "2 non-negative numbers"),
        ({"group_proportions": [1.2, -0.2]}, ValueError, "non-negative"),
        ({"group_shift": np.inf}, ValueError, "group_shift must be a finite real"),
        ({"bias": "high"}, ValueError, "bias must be a finite real"),
        ({"noise": -0.1}, ValueError, r"noise must be a finite real number >= 0"),
        ({"feature_correlation": 1.0}, ValueError, r"feature_correlation must be .*\[0, 1\)"),
        ({"nonlinear": "yes"}, TypeError, "nonlinear must be a bool"),
    ],
)
def test_generator_errors(kwargs, err_type, err_msg):
    """Check the errors of make_parity_classification on invalid parameters."""
    with pytest.raises(err_type, match=err_msg):
        make_parity_classification(**{"n_samples": 10, **kwargs})
