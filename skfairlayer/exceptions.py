"""Errors and warnings raised by skfairlayer."""


class InfeasibleProblemError(ValueError):
    """The parity constraints cannot be met within the output bounds.

    Raised, for instance, when a negative tolerance is requested, or when the
    bounds of one group keep its mean out of reach of the others.
    """


class SolverError(RuntimeError):
    """A solver finished without an answer that passes verification.

    skfairlayer never returns an unverified projection: when the solver stops
    early or its answer violates the constraints beyond the verification
    tolerance, this error is raised instead.
    """


class UnseenGroupError(ValueError):
    """A sensitive group at prediction time was not present at fit time."""


class SmallGroupWarning(UserWarning):
    """A sensitive group is so small that its parity statistics are mostly noise."""


def _plain(label):
    """``label`` as a plain Python value (NumPy scalars unwrapped, tuples recursively)."""
    if isinstance(label, tuple):
        return tuple(_plain(v) for v in label)
    item = getattr(label, "item", None)
    if item is not None and getattr(label, "ndim", None) == 0:
        return item()
    return label


def format_labels(labels):
    """Group labels for an error message: plain Python values, not NumPy reprs.

    Parameters
    ----------
    labels : iterable
        Labels (NumPy scalars, Python values or tuples of them).

    Returns
    -------
    text : str
        The list of labels as Python would print plain values.

    Examples
    --------
    >>> import numpy as np
    >>> format_labels([np.str_("b"), (np.int64(1), np.str_("x")), 2.5])
    "['b', (1, 'x'), 2.5]"
    """
    return repr([_plain(label) for label in labels])
