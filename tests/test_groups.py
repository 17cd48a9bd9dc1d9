"""Tests of the group input: SensitiveColumns (where groups come from) and GroupEncoder."""

import numpy as np
import pytest
import scipy.sparse as sp

from skfairlayer import UnseenGroupError
from skfairlayer._groups import GroupEncoder, SensitiveColumns, encode
from skfairlayer.exceptions import format_labels


def _codes(values, mode="intersectional"):
    groupings, labels = encode(values, mode)
    return [g.codes for g in groupings], labels


@pytest.mark.parametrize(
    "values",
    [
        [3, 1, 3, 2],
        np.array([3, 1, 3, 2], dtype=np.int8),
        ["c", "a", "c", "b"],
        np.array(["c", "a", "c", "b"], dtype=object),
        [3.0, 1.0, 3.0, 2.0],
    ],
)
def test_codes_follow_sorted_labels(values):
    """Check that codes index the sorted unique labels, at fit and by lookup afterwards."""
    (codes,), groups = _codes(values)
    np.testing.assert_array_equal(codes, [2, 0, 2, 1])
    assert len(groups) == 3
    encoder = GroupEncoder()
    encoder.fit_transform(values)
    (again,) = encoder.transform(np.asarray(values)[::-1])
    np.testing.assert_array_equal(again.codes, [1, 2, 0, 2])


@pytest.mark.parametrize("dtype", [np.intp, np.int16, np.uint8])
def test_large_integer_column_range_read_by_blocks(monkeypatch, dtype):
    """Check that a large integer column's range, read block by block, gives the codes of the
    whole-column read (the extremes in the last, partial block included)."""
    import skfairlayer._groups as groups_module

    rng = np.random.default_rng(3)
    values = rng.integers(3, 9, 10_000).astype(dtype)
    values[-1], values[5000] = 2, 11  # the extremes in the last block and a middle one
    (expected,), labels = _codes(values)
    monkeypatch.setattr(groups_module, "_BLOCKED_RANGE_BYTES", 64)
    monkeypatch.setattr(groups_module, "_RANGE_BLOCK", 999)
    (codes,), blocked = _codes(values)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(np.asarray(blocked), np.asarray(labels))
    assert codes[-1] == 0 and codes[5000] == codes.max()


def test_sparse_integer_labels():
    """Check that non-contiguous integer labels get compact codes."""
    (codes,), groups = _codes([10, 500, 10, 70000])
    np.testing.assert_array_equal(codes, [0, 1, 0, 2])
    np.testing.assert_array_equal(groups, [10, 500, 70000])
    encoder = GroupEncoder()
    encoder.fit_transform([10, 500, 10, 70000])
    np.testing.assert_array_equal(encoder.transform([70000, 10])[0].codes, [2, 0])
    with pytest.raises(UnseenGroupError, match=r"\[11\]"):
        encoder.transform([10, 11])


def test_intersectional_tuples_and_lookup():
    """Check intersectional labels and encoding against fitted groups."""
    sf = np.array([["F", 1], ["M", 0], ["F", 1], ["F", 0]], dtype=object)
    encoder = GroupEncoder()
    (grouping,) = encoder.fit_transform(sf)
    assert list(encoder.labels_) == [("F", 0), ("F", 1), ("M", 0)]
    np.testing.assert_array_equal(grouping.codes, [1, 2, 1, 0])
    np.testing.assert_array_equal(encoder.transform(sf[[3, 1]])[0].codes, [0, 2])
    with pytest.raises(UnseenGroupError, match="'M', 1"):
        encoder.transform(np.array([["M", 1]], dtype=object))


def test_marginal_with_one_attribute_is_the_intersectional_grouping():
    """Check that one attribute gives the same codes and labels in both modes."""
    values = np.array(["b", "a", "c", "a"])
    (inter,), labels = _codes(values)
    (marg,), marg_labels = _codes(values, "marginal")
    np.testing.assert_array_equal(inter, marg)
    np.testing.assert_array_equal(labels, marg_labels[0])


def test_pandas_inputs():
    """Check Series, categorical and DataFrame inputs."""
    pd = pytest.importorskip("pandas")
    s = pd.Series(pd.Categorical(["b", "a", "b"]))
    (codes,), _ = _codes(s)
    np.testing.assert_array_equal(codes, [1, 0, 1])
    df = pd.DataFrame({"sex": ["F", "M", "F"], "race": ["x", "x", "y"]})
    _, groups = _codes(df)
    assert list(groups) == [("F", "x"), ("F", "y"), ("M", "x")]


@pytest.mark.parametrize(
    "arg, match",
    [
        (3, "scalar"),
        (np.zeros((2, 2, 2)), "dimensions"),
        ([1.0, np.nan], "NaN"),
        (["a", None], "missing"),
    ],
)
def test_errors(arg, match):
    """Check that invalid group input raises a message naming the problem."""
    with pytest.raises(ValueError, match=match):
        encode(arg)


def test_nan_at_transform_is_named():
    """Check that a missing value in a later batch is named as missing, not as unseen."""
    encoder = GroupEncoder()
    encoder.fit_transform([0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        encoder.transform([0.0, np.nan])


def test_fractional_float_label_is_unseen_not_truncated():
    """Check that a float value between integer labels is an unseen group, not its floor."""
    encoder = GroupEncoder()
    encoder.fit_transform(np.array([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(encoder.transform(np.array([2.0, 0.0]))[0].codes, [2, 0])
    with pytest.raises(UnseenGroupError, match=r"\[0\.5\]"):
        encoder.transform(np.array([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("bad", [0.5, np.nan, 7.0, -1.0])
@pytest.mark.parametrize("labels", [[0.0, 1.0, 2.0], [3.0, 4.0]])
def test_lookup_checks_every_block(monkeypatch, bad, labels):
    """Check that the lookup of a numeric column, read block by block, codes every block and
    finds a fractional, missing or out-of-range value in a later block (unseen, not
    truncated)."""
    import skfairlayer._groups as groups_module

    monkeypatch.setattr(groups_module, "_RANGE_BLOCK", 7)
    encoder = GroupEncoder()
    encoder.fit_transform(np.array(labels))
    values = np.array(labels * 10)
    (grouping,) = encoder.transform(values)
    np.testing.assert_array_equal(grouping.codes, np.tile(np.arange(len(labels)), 10))
    values[len(values) - 3] = bad  # in the last block
    if np.isnan(bad):
        with pytest.raises(ValueError, match="NaN"):
            encoder.transform(values)
    else:
        with pytest.raises(UnseenGroupError):
            encoder.transform(values)


@pytest.mark.parametrize(
    ("fit", "new", "shown"),
    [
        (np.array(["a", "b"]), np.array(["a", "c"]), "['c']"),
        (np.array([1, 2]), np.array([1, 7]), "[7]"),
    ],
)
def test_unseen_group_message_shows_plain_labels(fit, new, shown):
    """Check UnseenGroupError names the unseen and the known labels without NumPy reprs."""
    encoder = GroupEncoder()
    encoder.fit_transform(fit)
    with pytest.raises(UnseenGroupError) as info:
        encoder.transform(new)
    message = str(info.value)
    assert "np." not in message
    assert f"Sensitive group(s) {shown} were not seen" in message
    assert f"known groups: {format_labels(encoder.labels_)}" in message


def test_unseen_intersectional_group_message_shows_plain_tuples():
    """Check tuples of labels (several attributes) print plainly too."""
    encoder = GroupEncoder()
    encoder.fit_transform(np.array([["a", "x"], ["b", "y"]], dtype=object))
    with pytest.raises(UnseenGroupError) as info:
        encoder.transform(np.array([["a", "y"]], dtype=object))
    assert "('a', 'y')" in str(info.value)
    assert "np." not in str(info.value)
    marginal = GroupEncoder("marginal")
    marginal.fit_transform(np.array([[1, 2], [3, 4]]))
    with pytest.raises(UnseenGroupError, match=r"\[5\]"):
        marginal.transform(np.array([[5, 2]]))


def test_sensitive_columns_split_arrays_frames_and_sparse():
    """Check the columns read (and kept or dropped) from arrays, DataFrames and sparse X."""
    X = np.arange(12.0).reshape(4, 3)
    base, groups = SensitiveColumns(2).split(X)
    assert base is X
    np.testing.assert_array_equal(groups, X[:, 2])
    base, groups = SensitiveColumns([0, 2], keep=False).split(X)
    np.testing.assert_array_equal(base, X[:, [1]])
    np.testing.assert_array_equal(groups, X[:, [0, 2]])
    base, groups = SensitiveColumns(-1, keep=False).split(sp.csr_matrix(X))
    assert sp.issparse(base) and base.shape == (4, 2)
    np.testing.assert_array_equal(groups.ravel(), X[:, 2])
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=["a", "b", "remainder__sex"])
    base, groups = SensitiveColumns("sex", keep=False).split(df)
    assert list(base.columns) == ["a", "b"]
    np.testing.assert_array_equal(groups.to_numpy().ravel(), X[:, 2])


@pytest.mark.parametrize(
    "spec, X, match",
    [
        ("sex", np.zeros((2, 2)), "without column names.*set_output"),
        (5, np.zeros((2, 2)), "out of range"),
        (["a", 1], np.zeros((2, 2)), "column names"),
    ],
)
def test_sensitive_columns_errors_name_the_remedy(spec, X, match):
    """Check that a column the layer cannot read raises naming what to do."""
    with pytest.raises(ValueError, match=match):
        SensitiveColumns(spec).split(X)


def test_encoded_column_is_named():
    """Check that a one-hot encoded sensitive column is recognised in the message."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(np.zeros((2, 3)), columns=["num__a", "cat__sex_F", "cat__sex_M"])
    with pytest.raises(ValueError, match="encoded into.*passthrough"):
        SensitiveColumns("sex").split(df)
    with pytest.raises(ValueError, match="twice"):
        SensitiveColumns("sex").split(df, sensitive_features=[0, 1])


@pytest.mark.parametrize("missing", [None, 3, 7, "no rare label"])
def test_labels_present_found_by_sample_or_full_count(monkeypatch, missing):
    """Check that the labels of an integer range are the ones present: all of them when the
    strided sample holds every one, else from the full count (a rare label the sample
    misses is kept, an absent one dropped)."""
    import skfairlayer._groups as groups_module

    monkeypatch.setattr(groups_module, "_PRESENCE_SAMPLE", 50)
    rng = np.random.default_rng(5)
    values = rng.integers(0, 10, 20_000)
    values[values == 9] = 8
    if missing != "no rare label":  # else the sample holds every label
        values[12_345] = 9  # one row of label 9: the sample (every 400th row) misses it
    if isinstance(missing, int):
        values[values == missing] = missing + 1
    (codes,), labels = _codes(values)
    expected = np.unique(values)
    np.testing.assert_array_equal(np.asarray(labels), expected)
    np.testing.assert_array_equal(codes, np.searchsorted(expected, values))
