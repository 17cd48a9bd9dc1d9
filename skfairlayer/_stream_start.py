"""Start a stream from a fitted layer: the engine is chosen by the shape of the problem."""

from functools import partial

import numpy as np

from .constraints import (
    DemographicParity,
    EqualizedOdds,
    EqualOpportunity,
    MeanResidual,
    build_problem,
    make_criterion,
)
from .online import ALGORITHMS as STREAM_ALGORITHMS
from .online import CriterionStreamState, StreamState
from .projection import solve_problem

__all__ = [
    "STREAM_ALGORITHMS", "restart_stream", "serve", "start_stream", "stream_unsupported",
]


def stream_unsupported(criterion, n_classes):
    """Why the criterion cannot stream with a certificate, or None when it can."""
    crit = make_criterion(criterion)
    kind = type(crit)
    if kind in (DemographicParity, MeanResidual):
        return None
    if kind is EqualOpportunity and (n_classes == 2 or crit.positive_class is not None):
        return None
    if kind in (EqualOpportunity, EqualizedOdds):
        return (
            "This criterion puts each row in several statistics with different plug-in "
            "weights (its posteriors of several true classes), and served rows never change: "
            "a stream can make the pooled constraint unreachable (a group whose rows all "
            "carry equal posteriors can never separate its rates for two true classes), so "
            "no bound that reaches the tolerance holds at every row. Use predict_proba / "
            "predict on batches instead."
        )
    return (
        "A custom Criterion has no streaming form: its families and rows are defined over a "
        "whole batch."
    )


def _one_family_binary_parity(layer, criterion):
    return (
        layer.n_classes == 2
        and len(layer.group_sizes) == 1
        and type(make_criterion(criterion)) is DemographicParity
    )


def start_stream(layer, scores, groupings, labels, config):
    """The stream of a fitted layer, started from its fitted rules and group shares."""
    algorithm, tolerance, step, threshold = config
    crit = make_criterion(layer.criterion)
    if _one_family_binary_parity(layer, crit):
        state = StreamState(
            algorithm, tolerance, layer.shifts, layer.thresholds, layer.shares[0],
            step=step, threshold=threshold, groups=labels,
        )
        state.fitted_start = (layer.shifts, layer.thresholds)
        return state
    if algorithm == "paper":
        raise ValueError(
            "stream_algorithm='paper' reproduces the paper's algorithm for binary demographic "
            "parity over one grouping; use stream_algorithm='pooled' for this problem."
        )
    binary = layer.n_classes == 2
    common = {
        "n_classes": layer.n_classes,
        "binary": binary,
        "group_sizes": list(layer.group_sizes),
        "step": step,
        "groups": labels,
        "criterion": layer.criterion if isinstance(layer.criterion, str) else repr(crit),
        "config": config,
    }
    if isinstance(crit, MeanResidual):
        return CriterionStreamState("residual", tolerance, **common)
    problem = layer.problem(scores, groupings, keep_trivial=True)
    per = len(problem.families) // len(groupings)
    first = problem.families[:per]
    coefs, shares = [], []
    for j, k in enumerate(layer.group_sizes):
        fams = range(j * per, (j + 1) * per)
        coefs.append(np.column_stack([layer.coefficients[f][:k] for f in fams]))
        fam = problem.families[j * per]
        share = np.zeros(k)
        share[fam.ids()] = fam.totals / scores.shape[0]
        shares.append(share)
    return CriterionStreamState(
        "parity", tolerance,
        columns=[1] if binary else [f.column for f in first],
        weight_class=first[0].plug_in_class,
        coefs=coefs,
        offsets=[np.asarray(o, dtype=np.float64) for o in layer.decision_offsets],
        shares=shares,
        **common,
    )


def restart_stream(state, config):
    """An empty stream with the same fitted start and the given streaming parameters."""
    if isinstance(state, CriterionStreamState):
        return state.restarted(config)
    if state.config == config:
        state.reset()
        return state
    algorithm, tolerance, step, threshold = config
    shifts, thresholds = state.fitted_start
    new = StreamState(algorithm, tolerance, shifts, thresholds, state.shares, step=step,
                      threshold=threshold, groups=state.groups)
    new.fitted_start = state.fitted_start
    return new


def serve(state, output, scores, codes):
    """Serve a batch from a stream (the paper's algorithm projects large batches exactly)."""
    project = partial(_paper_projection, tolerance=state.tolerance)
    if output == "proba":
        return state.partial_proba(scores, codes, project=project)
    return state.partial_decisions(scores, codes, project=project)


def _paper_projection(scores, codes, *, tolerance):
    present = np.unique(codes)
    if present.size < 2:
        return np.clip(scores, 0.0, 1.0)
    local = np.searchsorted(present, codes)
    problem = build_problem("demographic_parity", scores, [(local, present.size)], tolerance)
    return solve_problem(problem).outputs
