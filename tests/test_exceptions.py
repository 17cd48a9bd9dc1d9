"""Tests of the error messages' formatting (skfairlayer.exceptions)."""

import numpy as np

from skfairlayer.exceptions import format_labels


def test_format_labels_unwraps_numpy_scalars():
    """Check labels print as plain Python values (no np.str_ / np.int64 reprs)."""
    text = format_labels([np.str_("b"), np.int64(3), np.float64(0.5), (np.str_("x"), np.int8(1))])
    assert text == "['b', 3, 0.5, ('x', 1)]"
    assert "np." not in format_labels(np.array(["a", "b"]))


