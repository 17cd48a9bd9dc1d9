"""Fine-tuning a regressor through the fairness layer: projected squared error, same loop.

The regression counterpart of :mod:`skfairlayer._fine_tune` (whose splits,
minibatches, optimizer and history it reuses): the base's predictions are
standardised, projected within the bounds, and the mean squared error of the
projected predictions is pulled back through the layer and the base.
"""


import numpy as np
from sklearn.utils import check_array, check_random_state

from ._criteria import CRITERIA, build_problem, make_criterion
from ._differentiable import make_adapter
from ._fine_tune import (
    _as_columns,
    _criterion_gap,
    _minibatches,
    _validation_split,
    check_fine_tune_params,
    train_loop,
)
from ._projection import solve_problem
from ._sensitivity import Linearization

__all__ = ["fine_tune_regressor", "regression_batch_loss"]


def _regression_strata(y, n_bins=4):
    """Quantile bins of a real target: the "labels" that stratify splits and batches."""
    edges = np.quantile(y, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right").astype(np.intp)


def regression_batch_loss(
    adapter, X, params, codes, y, weight, *, criterion, tolerance, solver, units, gradient=False
):
    """Projected mean squared error of one batch (standardised units) and its gradient.

    ``units = (center, scale, lower, upper)``: the layer works on
    ``(prediction - center) / scale`` within ``[lower, upper]``; ``y`` is the
    standardised target. Label-using criteria (``continuous_labels``) get it.
    Returns ``(loss, base_gap, grads)`` as :func:`batch_loss` does.
    """
    center, scale, lower, upper = units
    pred, vjp = adapter.forward(X, params)
    s = (np.asarray(pred, dtype=np.float64) - center) / scale
    codes = _as_columns(codes)
    groupings = [(codes[:, j], int(codes[:, j].max()) + 1) for j in range(codes.shape[1])]
    names = [f"attribute {j}" for j in range(len(groupings))] if len(groupings) > 1 else None
    labels = y if make_criterion(criterion).continuous_labels else None
    problem = build_problem(criterion, s, groupings, tolerance, labels=labels, lower=lower,
                            upper=upper, names=names)
    if not problem.families and problem.rows is None:
        p = np.clip(s, lower, upper)
    else:
        p = solve_problem(problem, solver=solver).outputs
    total = weight.sum()
    r = p - y
    loss = float(np.dot(weight, r * r) / total)
    gap = _criterion_gap(problem, 1.0) * scale
    if not gradient:
        return loss, gap, None
    grad_p = 2.0 * weight * r / total
    if problem.families or problem.rows is not None:
        rebuild = None
        if type(make_criterion(criterion)) not in CRITERIA.values() and labels is None:
            def rebuild(moved):  # a custom criterion: check its declared dependence on scores
                return build_problem(criterion, moved, groupings, tolerance, lower=lower,
                                     upper=upper, names=names)
        grad_s = Linearization(problem, p, rebuild=rebuild).vjp(grad_p)
    else:
        grad_s = grad_p * ((s > lower) & (s < upper))
    return loss, gap, vjp(grad_s / scale)


def fine_tune_regressor(
    estimator, X, y, codes, *, units, tolerance, criterion="demographic_parity", solver="auto",
    sample_weight=None, params=None, random_state=None, verbose=0,
):
    """Fine-tune a fitted differentiable regressor, in place, through the fairness layer.

    The loss is the mean squared error of the projected predictions in the
    layer's standardised units ``(prediction - center) / scale`` (``units =
    (center, scale, lower, upper)``, bounds in those units), plus the base's
    own penalty; the rest (validation split and early stopping, minibatches
    carrying every group, Adam, the history) is :func:`fine_tune`'s, with
    quantile bins of ``y`` standing in for the labels when stratifying.
    ``margin`` and ``label_free`` are ignored.

    Returns
    -------
    history : dict
        As :func:`fine_tune`, the losses being projected mean squared errors
        in standardised units and the gaps in the target's units.
    """
    settings = check_fine_tune_params(params)
    rng = check_random_state(random_state)
    adapter = make_adapter(estimator)
    center, scale = float(units[0]), float(units[1])
    adapter.loss_scale = 1.0 / scale**2
    Xt = check_array(adapter.transform(X), accept_sparse="csr", dtype=np.float64)
    y_std = (np.asarray(y, dtype=np.float64) - center) / scale
    strata = _regression_strata(y_std)
    codes = _as_columns(codes)
    weight = np.ones(y_std.shape[0]) if sample_weight is None else np.asarray(
        sample_weight, dtype=np.float64)
    params_now = adapter.parameters()
    m = min(64, Xt.shape[0])
    theirs = np.asarray(estimator.predict(X[:m] if not hasattr(X, "iloc") else X.iloc[:m]))
    if not np.allclose(adapter.forward(Xt[:m], params_now)[0], np.ravel(theirs), rtol=1e-6,
                       atol=1e-8 * scale):
        raise RuntimeError(
            f"The differentiable forward pass of {estimator!r} does not reproduce its predict; "
            "refusing to fine-tune a model whose gradients would be wrong."
        )
    val = _validation_split(codes, strata, settings["validation_fraction"], rng)
    if any(np.unique(c).size < 2 for c in codes[val].T):
        val[:] = False
    train, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    layer = {"criterion": make_criterion(criterion), "tolerance": tolerance, "solver": solver,
             "units": tuple(units)}

    def evaluate(idx, theta, gradient=False):
        return regression_batch_loss(adapter, Xt[idx], theta, codes[idx], y_std[idx],
                                     weight[idx], gradient=gradient, **layer)

    def epoch_batches():
        return _minibatches(codes[train], strata[train], settings["batch_size"], rng)

    # Steps in the units of a model of the standardised target: parameters scale with y.
    return train_loop(adapter, params_now, settings["learning_rate"] * scale, evaluate,
                      epoch_batches, train, val_idx, settings, verbose)
