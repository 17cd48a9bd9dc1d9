"""The stream of a fitted layer: its fitted rules and group shares as a :class:`StreamStart`."""

import numpy as np

from ._criteria import (
    DemographicParity,
    EqualizedOdds,
    EqualOpportunity,
    MeanResidual,
    make_criterion,
)
from ._stream import ALGORITHMS as STREAM_ALGORITHMS
from ._stream import StreamStart, start_stream

__all__ = ["STREAM_ALGORITHMS", "STREAM_SUPPORTED", "layer_stream", "stream_unsupported"]

STREAM_SUPPORTED = (
    "Streaming (partial_predict_proba, partial_predict, stream_report) supports "
    "criterion='demographic_parity' (binary or multiclass), 'equal_opportunity' (binary, or "
    "multiclass with EqualOpportunity(positive_class=...)) and 'mean_residual', with "
    "intersectional or marginal groups."
)


def stream_unsupported(criterion, n_classes, n_groupings=1, algorithm="pooled"):
    """Why the problem cannot stream with a certificate, or None when it can."""
    crit = make_criterion(criterion)
    kind = type(crit)
    if algorithm == "paper" and not (
        kind is DemographicParity and n_classes == 2 and n_groupings == 1
    ):
        return (
            "stream_algorithm='paper' runs the paper's online algorithm, which is defined for "
            "binary demographic parity over one grouping; use stream_algorithm='pooled' for this "
            "problem."
        )
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


def layer_stream(layer, scores, groupings, labels, config):
    """Start the stream of a fitted layer (the engine is chosen by the problem's shape)."""
    algorithm, tolerance, step, threshold = config
    crit = make_criterion(layer.criterion)
    labels = tuple(labels) if isinstance(labels, list) else (labels,)
    common = {
        "tolerance": tolerance,
        "labels": labels,
        "n_classes": layer.n_classes,
        "offsets": tuple(np.asarray(o, dtype=np.float64) for o in layer.decision_offsets),
        "algorithm": algorithm,
        "step": step,
        "threshold": threshold,
        "criterion": layer.criterion if isinstance(layer.criterion, str) else repr(crit),
    }
    if isinstance(crit, MeanResidual):
        return start_stream(StreamStart(kind="residual", **common))
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
    return start_stream(StreamStart(
        columns=(1,) if layer.n_classes == 2 else tuple(f.column for f in first),
        weight_class=first[0].plug_in_class,
        coefs=tuple(coefs),
        shares=tuple(shares),
        **common,
    ))
