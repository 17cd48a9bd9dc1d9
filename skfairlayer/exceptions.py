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
