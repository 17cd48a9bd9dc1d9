"""Tests of the error messages' formatting (skfairlayer.exceptions)."""

import numpy as np
import pytest

from skfairlayer import UnseenGroupError
from skfairlayer._validation import encode_groups, encode_marginal
from skfairlayer.exceptions import format_labels


def test_format_labels_unwraps_numpy_scalars():
    """Check labels print as plain Python values (no np.str_ / np.int64 reprs)."""
    text = format_labels([np.str_("b"), np.int64(3), np.float64(0.5), (np.str_("x"), np.int8(1))])
    assert text == "['b', 3, 0.5, ('x', 1)]"
    assert "np." not in format_labels(np.array(["a", "b"]))


@pytest.mark.parametrize(
    ("fit", "new", "shown"),
    [
        (np.array(["a", "b"]), np.array(["a", "c"]), "['c']"),
        (np.array([1, 2]), np.array([1, 7]), "[7]"),
    ],
)
def test_unseen_group_message_shows_plain_labels(fit, new, shown):
    """Check UnseenGroupError names the unseen and the known labels without NumPy reprs."""
    _, groups = encode_groups(fit)
    with pytest.raises(UnseenGroupError) as info:
        encode_groups(new, groups=groups)
    message = str(info.value)
    assert "np." not in message
    assert f"Sensitive group(s) {shown} were not seen" in message
    assert f"known groups: {format_labels(groups)}" in message


def test_unseen_intersectional_group_message_shows_plain_tuples():
    """Check tuples of labels (several attributes) print plainly too."""
    fit = np.array([["a", "x"], ["b", "y"]], dtype=object)
    _, groups = encode_groups(fit)
    with pytest.raises(UnseenGroupError) as info:
        encode_groups(np.array([["a", "y"]], dtype=object), groups=groups)
    assert "('a', 'y')" in str(info.value)
    assert "np." not in str(info.value)
    codes, labels = encode_marginal(np.array([[1, 2], [3, 4]]))
    with pytest.raises(UnseenGroupError, match=r"\[5\]"):
        encode_marginal(np.array([[5, 2]]), groups=labels)
