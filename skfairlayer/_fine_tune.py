"""Fine-tuning a differentiable base through the fairness layer (the paper's F-Layer).

Starting from the fitted base, minimise the log-loss of the *projected*
probabilities by minibatch Adam. Each minibatch is projected by the verified
solvers (:func:`skfairlayer._projection.solve_problem`) on the problem
:func:`~skfairlayer._criteria.build_problem` builds for it — the same
criterion, tolerance and groupings (intersectional, or one set of families
per attribute for marginal parity) as the classifier's fit-time projection;
label-conditioned criteria use the training labels (or, with
``label_free=True``, their plug-in form, as at prediction). The gradient flows
back through the layer with its closed-form VJP (:mod:`skfairlayer._sensitivity`,
including the derivative of plug-in weights) and through the base with the
chain rule ``dL/dtheta = (ds/dtheta)' J' (dL/dp)``
(:mod:`skfairlayer._differentiable`). Binary and multiclass (simplex) outputs.

Details that matter:

* batches are stratified so every batch carries every group of every
  grouping, and every (group, label) cell for label-conditioned criteria (the
  layer acts on the batch: a missing group is unconstrained); groups absent
  from a batch and families with fewer than two groups are dropped exactly as
  for the classifier;
* during training the outputs are bounded in ``[margin, 1 - margin]``
  (``margin=1e-6``; on the simplex every class ``>= margin``) so the log-loss
  stays finite;
* a stratified validation fraction drives early stopping, and the best
  parameters seen — including the starting ones — are kept: fine-tuning never
  returns a base whose projected validation loss is worse than where it began.
"""

import dataclasses
import sys
import time
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_array, check_random_state

from ._criteria import (
    CRITERIA,
    DemographicParity,
    MeanResidual,
    ProjectionProblem,
    build_problem,
    make_criterion,
)
from ._differentiable import make_adapter
from ._projection import solve_problem
from ._sensitivity import Linearization
from ._solvers._simplex import project_simplex_rows

__all__ = ["FINE_TUNE_DEFAULTS", "FineTuning", "batch_loss", "check_fine_tune_params", "fine_tune"]

#: Default settings of the fine-tuning loop (the parameters of :class:`FineTuning`).
FINE_TUNE_DEFAULTS = {
    "max_epochs": 50,
    "learning_rate": 3e-3,
    "batch_size": 1024,
    "validation_fraction": 0.1,
    "n_iter_no_change": 5,
    "tol": 1e-4,
    "margin": 1e-6,
    "label_free": False,
}


class FineTuning(BaseEstimator):
    """Settings of fine-tuning a base *through* the layer (the paper's F-Layer).

    Pass an instance as ``fine_tune=`` to a fairness-layer estimator
    (``fine_tune=True`` means ``FineTuning()``). Its parameters are nested
    parameters of the estimator, so a search can tune them, e.g.
    ``{"fine_tune__learning_rate": [1e-3, 3e-3]}``.

    Parameters
    ----------
    max_epochs : int, default=50
        Largest number of passes over the training set.
    learning_rate : float, default=3e-3
        Adam's step size.
    batch_size : int, default=1024
        Minibatch size; batches are stratified so that each carries every group
        of every attribute (and every (group, label) cell for
        label-conditioned criteria).
    validation_fraction : float, default=0.1
        Share of the training set held out for early stopping on the projected
        validation loss; the best parameters, possibly the starting ones, are kept.
    n_iter_no_change : int, default=5
        Epochs without improvement of at least ``tol`` before stopping.
    tol : float, default=1e-4
        Smallest improvement of the validation loss that counts.
    margin : float, default=1e-6
        Outputs stay in ``[margin, 1 - margin]`` during training so the
        log-loss stays finite.
    label_free : bool, default=False
        Label-conditioned criteria: project each minibatch with the training
        labels (``False``, as the fit-time projection does) or with their
        plug-in form (``True``, as the layer at prediction).

    Examples
    --------
    >>> from skfairlayer import FairnessLayerClassifier, FineTuning
    >>> clf = FairnessLayerClassifier(fine_tune=FineTuning(max_epochs=5))
    >>> clf.set_params(fine_tune__learning_rate=1e-3).fine_tune.learning_rate
    0.001
    """

    def __init__(
        self,
        max_epochs=50,
        learning_rate=3e-3,
        batch_size=1024,
        validation_fraction=0.1,
        n_iter_no_change=5,
        tol=1e-4,
        margin=1e-6,
        label_free=False,
    ):
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.margin = margin
        self.label_free = label_free

    def settings(self):
        """The validated settings as a dict (keys of :data:`FINE_TUNE_DEFAULTS`).

        Returns
        -------
        settings : dict
            The parameters, each checked (a wrong value raises ``ValueError``).
        """
        return check_fine_tune_params(self.get_params())


def check_fine_tune_params(params):
    """Merge ``params`` into the defaults, validating every key and value."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise TypeError(f"The fine-tuning settings must be a dict or None. Got {params!r} instead.")
    unknown = sorted(set(params) - set(FINE_TUNE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"FineTuning has no setting(s) {unknown!r}; the settings are "
            f"{sorted(FINE_TUNE_DEFAULTS)!r}. Got {params!r} instead."
        )
    out = {**FINE_TUNE_DEFAULTS, **params}

    def _check(name, ok, what):
        value = out[name]
        if isinstance(value, bool) or not ok(value):
            raise ValueError(f"FineTuning({name}=...) must be {what}. Got {value!r} instead.")

    def _int(v):
        return isinstance(v, Integral)

    def _real(v):
        return isinstance(v, Real) and np.isfinite(v)

    _check("max_epochs", lambda v: _int(v) and v >= 1, "an integer >= 1")
    _check("batch_size", lambda v: _int(v) and v >= 2, "an integer >= 2")
    _check("n_iter_no_change", lambda v: _int(v) and v >= 1, "an integer >= 1")
    _check("learning_rate", lambda v: _real(v) and v > 0, "a positive float")
    _check("tol", lambda v: _real(v) and v >= 0, "a float >= 0")
    _check("validation_fraction", lambda v: _real(v) and 0 <= v < 1, "a float in [0, 1)")
    _check("margin", lambda v: _real(v) and 0 < v < 0.1, "a float in (0, 0.1)")
    if not isinstance(out["label_free"], (bool, np.bool_)):
        raise ValueError(
            f"FineTuning(label_free=...) must be a bool. Got {out['label_free']!r} instead."
        )
    return out


# --------------------------------------------------------------------------- batches
def _as_columns(codes):
    """Group codes as an (n_samples, n_groupings) integer array (one column per grouping)."""
    if isinstance(codes, (list, tuple)):
        return np.column_stack([np.asarray(c, dtype=np.intp) for c in codes])
    codes = np.asarray(codes)
    return (codes[:, None] if codes.ndim == 1 else codes).astype(np.intp, copy=False)


def _intersection(codes2d):
    """One code per combination of the grouping columns (dense, from 0)."""
    if codes2d.shape[1] == 1:
        return np.unique(codes2d[:, 0], return_inverse=True)[1].ravel()
    return np.unique(codes2d, axis=0, return_inverse=True)[1].ravel()


def _strata(codes2d, y, label_cells):
    """Per grouping, a dense stratum code per row: the group, or the (group, label) cell."""
    views = []
    for j in range(codes2d.shape[1]):
        key = codes2d[:, j].astype(np.int64)
        if label_cells:
            key = key * (int(y.max()) + 1) + y
        views.append(np.unique(key, return_inverse=True)[1].ravel())
    return views


def _stratified_order(codes, y, rng):
    """Rows grouped by sensitive group, sorted by label within it, shuffled within (group, label)."""
    perm = rng.permutation(codes.shape[0])
    key = codes[perm].astype(np.int64) * (int(y.max()) + 1) + y[perm]
    order = perm[np.argsort(key, kind="stable")]
    counts = np.bincount(codes, minlength=int(codes.max()) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty(codes.shape[0], dtype=np.int64)
    position[order] = np.arange(codes.shape[0]) - np.repeat(starts, counts)
    return position, counts


def _validation_split(codes, y, fraction, rng):
    """Boolean mask of validation rows: systematic sampling along each group's label order.

    ``codes`` of shape (n_samples,) or (n_samples, n_groupings); several
    groupings are sampled along their intersections.
    """
    codes = _as_columns(codes)
    codes = _intersection(codes)
    if fraction == 0:
        return np.zeros(codes.shape[0], dtype=bool)
    position, counts = _stratified_order(codes, y, rng)
    offset = rng.uniform(size=counts.size)[codes]
    val = np.floor(fraction * (position + 1) + offset) > np.floor(fraction * position + offset)
    n_val = np.bincount(codes[val], minlength=counts.size)
    val &= (counts - n_val > 0)[codes]  # every group keeps training rows
    return val


def _minibatches(codes, y, batch_size, rng, *, label_cells=False):
    """Split rows into batches that each carry every group of every grouping.

    ``codes`` is of shape (n_samples,) or (n_samples, n_groupings) (marginal
    groups: one column per attribute). With ``label_cells`` every
    (group, label) cell must be in every batch (label-conditioned criteria).
    The number of batches is capped by the smallest required stratum. Rows
    sorted by (first grouping's stratum, label, other groupings) are dealt
    round-robin, which covers the first grouping; a repair pass then moves
    rows into batches that miss a stratum of another grouping, never
    uncovering one.
    """
    codes = _as_columns(codes)
    n = codes.shape[0]
    views = _strata(codes, y, label_cells)
    smallest = min(int(np.bincount(v).min()) for v in views)
    n_batches = int(max(1, min(round(n / batch_size), smallest)))
    perm = rng.permutation(n)
    keys = [views[0], y] + views[1:]
    order = perm[np.lexsort([k[perm] for k in reversed(keys)])]
    batch_of = np.empty(n, dtype=np.intp)
    batch_of[order] = (np.arange(n) + rng.randint(n_batches)) % n_batches
    if n_batches > 1 and len(views) > 1:
        _cover(views, batch_of, n_batches)
    order = np.argsort(batch_of, kind="stable")
    bounds = np.cumsum(np.bincount(batch_of, minlength=n_batches))[:-1]
    return [b for b in np.split(order, bounds) if b.size]


def _cover(views, batch_of, n_batches):
    """Move rows (in place) so that every batch holds every stratum of every view, if possible.

    A row moves from a batch holding its stratum at least twice, and only if
    it is not the last row of any of its strata (in any view) there.
    """
    counts = [
        np.bincount(v * n_batches + batch_of, minlength=(v.max() + 1) * n_batches).reshape(
            -1, n_batches
        )
        for v in views
    ]
    members = [np.split(np.argsort(v, kind="stable"), np.cumsum(np.bincount(v))[:-1]) for v in views]
    for j in range(1, len(views)):
        for s, b in np.argwhere(counts[j] == 0):
            rows = members[j][s]
            for donor in np.argsort(-counts[j][s], kind="stable"):
                if counts[j][s, donor] < 2:
                    break
                cand = rows[batch_of[rows] == donor]
                ok = np.ones(cand.size, dtype=bool)
                for i, v in enumerate(views):
                    ok &= counts[i][v[cand], donor] >= 2
                if ok.any():
                    r = cand[np.argmax(ok)]
                    for i, v in enumerate(views):
                        counts[i][v[r], donor] -= 1
                        counts[i][v[r], b] += 1
                    batch_of[r] = b
                    break


def _needs_label_cells(criterion):
    """Whether batches must hold every (group, label) cell: label-conditioned statistics."""
    return not isinstance(criterion, (DemographicParity, MeanResidual))


# --------------------------------------------------------------------------- layer
def _shrunk(problem, margin):
    """The problem for ``Q`` with ``P = margin + scale * Q`` (``P >= margin`` on the simplex).

    Group statistics (weights summing to one per group) and rows read ``P``:
    ``m(P) = margin + scale * m(Q)``, ``A P = margin * A 1 + scale * A Q``.
    """
    scale = 1.0 - problem.scores.shape[1] * margin
    fams = tuple(dataclasses.replace(f, tolerance=f.tolerance / scale) for f in problem.families)
    rows = problem.rows
    if rows is not None:
        offset = margin * np.asarray(rows.matrix.sum(axis=1)).ravel()
        rows = dataclasses.replace(
            rows, lower=(rows.lower - offset) / scale, upper=(rows.upper - offset) / scale
        )
    return ProjectionProblem(
        (problem.scores - margin) / scale, fams, simplex=True, rows=rows
    ), scale


def _project(scores, codes, labels, criterion, tolerance, solver, margin):
    """Projected outputs within the margin, the VJP through the layer, the problem and its scale.

    ``codes`` of shape (n_samples, n_groupings): the batch problem is built by
    :func:`~skfairlayer._criteria.build_problem` exactly as the classifier
    builds it (groups absent from the batch and families with fewer than two
    groups dropped), with ``labels`` (label-based criteria during training).
    Binary outputs are bounded in ``[margin, 1 - margin]``; multiclass rows
    are ``margin + scale * Q`` with ``Q`` on the simplex (``dP/dS = dQ/dS'``
    for ``S' = (S - margin) / scale``; plug-in posterior weights are read
    from ``S = margin + scale * S'``, so they move by ``scale`` per unit of
    ``S'``).
    """
    groupings = [(codes[:, j], int(codes[:, j].max()) + 1) for j in range(codes.shape[1])]
    names = [f"attribute {j}" for j in range(len(groupings))] if len(groupings) > 1 else None
    binary = scores.ndim == 1

    def build(S):
        if binary:
            return build_problem(
                criterion, S, groupings, tolerance, labels=labels, lower=margin,
                upper=1.0 - margin, names=names,
            ), 1.0
        return _shrunk(build_problem(criterion, S, groupings, tolerance, labels=labels,
                                     names=names), margin)

    problem, scale = build(scores)
    if not problem.families and problem.rows is None:  # e.g. a batch with one group
        out = (np.clip(problem.scores, margin, 1.0 - margin) if binary
               else project_simplex_rows(problem.scores))
    else:
        out = solve_problem(problem, solver=solver).outputs
    rebuild = None
    if type(criterion) not in CRITERIA.values():  # custom: check its declared dependence
        def rebuild(moved):
            return build(moved if binary else margin + scale * moved)[0]
    lin = Linearization(problem, out, rebuild=rebuild, weight_scale=scale)
    p = out if binary else margin + scale * out
    return p, lin.vjp, problem, scale


def _criterion_gap(problem, scale):
    """Largest gap of the problem's scores in its criterion (group statistics, or row residual)."""
    s = problem.scores
    gaps = [fam.gap(s) for fam in problem.families]
    if problem.rows is not None:
        rows = problem.rows
        mid = 0.5 * (np.asarray(rows.lower) + np.asarray(rows.upper))
        finite = np.isfinite(mid)
        if finite.any():
            gaps.append(float(np.max(np.abs(rows.matrix @ s.ravel() - mid)[finite])))
    return scale * max(gaps, default=0.0)


def _loss_and_grad(p, y, weight):
    """Weighted mean log-loss of projected outputs and its gradient with respect to them."""
    total = weight.sum()
    if p.ndim == 1:
        pos = y == 1
        loss_i = -np.where(pos, np.log(p), np.log1p(-p))
        grad = np.where(pos, -1.0 / p, 1.0 / (1.0 - p)) * weight / total
    else:
        rows = np.arange(p.shape[0])
        py = p[rows, y]
        loss_i = -np.log(py)
        grad = np.zeros_like(p)
        grad[rows, y] = -weight / (total * py)
    return float(np.dot(weight, loss_i) / total), grad


def batch_loss(
    adapter, X, params, codes, y, weight, *, criterion, tolerance, solver, margin,
    label_free=False, gradient=False,
):
    """Projected log-loss of one batch and, optionally, its gradient in the parameters.

    ``codes`` is of shape (n_samples,) or (n_samples, n_groupings) (one column
    per attribute for marginal groups); ``y`` holds class indices, which
    label-based criteria use unless ``label_free`` (then the layer takes its
    plug-in form, as at prediction). Returns ``(loss, base_gap, grads)``:
    ``base_gap`` is the criterion's gap of the base outputs on the batch
    (label-based; for rows, the largest distance to the rows' centre) and
    ``grads`` (``None`` unless ``gradient``) is ``(ds/dtheta)' J' (dL/dp)``:
    the loss gradient pulled back through the layer (closed-form VJP) and then
    through the base.
    """
    proba, vjp = adapter.forward(X, params)
    binary = proba.shape[1] == 2
    s = proba[:, 1] if binary else proba
    p, jac_t, problem, scale = _project(
        s, _as_columns(codes), None if label_free else y, criterion, tolerance, solver, margin
    )
    loss, grad_p = _loss_and_grad(p, y, weight)
    gap = _criterion_gap(problem, scale)
    if not gradient:
        return loss, gap, None
    grad_s = jac_t(grad_p)
    if binary:
        grad_proba = np.zeros_like(proba)
        grad_proba[:, 1] = grad_s
    else:
        grad_proba = grad_s
    return loss, gap, vjp(grad_proba)


class _Adam:
    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = learning_rate, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


# --------------------------------------------------------------------------- loop
def fine_tune(
    estimator,
    X,
    y,
    codes,
    *,
    classes,
    tolerance,
    criterion="demographic_parity",
    solver="auto",
    sample_weight=None,
    params=None,
    random_state=None,
    verbose=0,
):
    """Fine-tune a fitted differentiable estimator, in place, through the fairness layer.

    Parameters
    ----------
    estimator : estimator object
        A fitted base supported by :mod:`skfairlayer._differentiable`; its
        weights are updated in place (pass a clone).
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
        What the estimator's ``predict_proba`` receives.
    y : array-like of shape (n_samples,)
        Labels, among ``classes``.
    codes : ndarray of shape (n_samples,) or list of such arrays
        Group code of each row: one array (intersectional groups) or one per
        sensitive attribute (marginal parity, one set of families per
        attribute), as the classifier encodes them.
    classes : ndarray of shape (n_classes,)
        The estimator's ``classes_``.
    tolerance : float
        Parity tolerance of the layer.
    criterion : str or Criterion, default="demographic_parity"
        Parity criterion. Labels are known during training, so label-based
        criteria (equal opportunity, equalized odds, mean residual) use them on
        each minibatch, as the classifier's fit-time projection does; batches
        then carry every (group, label) cell.
    solver : {"auto", "exact", "osqp"}, default="auto"
        Projection solver.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights of the loss (multiplied by the base's ``class_weight``).
    params : dict, default=None
        Settings, see :data:`FINE_TUNE_DEFAULTS`.
    random_state : int, RandomState instance or None, default=None
        Seed of the validation split and of the batch shuffles.
    verbose : int, default=0
        Print one line per epoch when positive.

    Returns
    -------
    history : dict
        Per epoch (``0`` is the starting model) the training and validation
        projected log-loss and the validation gap of the base outputs in the
        criterion (label-based);
        ``best_epoch`` is the epoch whose parameters were kept.
    """
    settings = check_fine_tune_params(params)
    crit = make_criterion(criterion)
    rng = check_random_state(random_state)
    adapter = make_adapter(estimator)
    Xt = check_array(adapter.transform(X), accept_sparse="csr", dtype=np.float64)
    y = np.asarray(y)
    y_idx = np.searchsorted(classes, y)
    codes = _as_columns(codes)
    weight = adapter.sample_weight(y)
    if sample_weight is not None:
        weight = weight * np.asarray(sample_weight, dtype=np.float64)
    margin = settings["margin"]

    params_now = adapter.parameters()
    _check_forward(adapter, estimator, X, Xt, params_now)

    val = _validation_split(codes, y_idx, settings["validation_fraction"], rng)
    if any(np.unique(c).size < 2 for c in codes[val].T):
        val[:] = False  # too small to validate parity: train on everything, no early stopping
    train = np.flatnonzero(~val)
    val_idx = np.flatnonzero(val)

    label_free = bool(settings["label_free"])
    layer = {
        "criterion": crit, "tolerance": tolerance, "solver": solver, "margin": margin,
        "label_free": label_free,
    }
    label_cells = _needs_label_cells(crit) and not label_free

    def evaluate(idx, params, gradient=False):
        return batch_loss(adapter, Xt[idx], params, codes[idx], y_idx[idx], weight[idx],
                          **layer, gradient=gradient)

    def epoch_batches():
        return _minibatches(
            codes[train], y_idx[train], settings["batch_size"], rng, label_cells=label_cells
        )

    return train_loop(adapter, params_now, settings["learning_rate"], evaluate, epoch_batches,
                      train, val_idx, settings, verbose)


def train_loop(adapter, params, learning_rate, evaluate, epoch_batches, train, val_idx, settings,
               verbose):
    """Minibatch Adam through the layer, early stopping on the projected validation loss.

    ``evaluate(idx, params, gradient=False) -> (loss, base_gap, grads)`` scores
    rows ``idx``; ``epoch_batches()`` gives one epoch's batches (positions in
    ``train``). The best parameters seen, possibly the starting ones, are
    written back to the model. Shared by the classification and regression
    fine-tuning.

    Returns
    -------
    history : dict
        Per epoch the training and validation loss and the validation base gap;
        ``best_epoch`` and ``improved``.
    """
    optimizer = _Adam(params, learning_rate)
    history = {"epoch": [], "train_loss": [], "val_loss": [], "val_base_gap": []}
    has_val = val_idx.size > 0
    best_loss, best_gap, _ = evaluate(val_idx if has_val else train, params)
    best_params, best_epoch, stall = [p.copy() for p in params], 0, 0
    _record(history, 0, np.nan, best_loss if has_val else np.nan, best_gap, verbose, settings, 0.0)
    start = time.perf_counter()
    for epoch in range(1, settings["max_epochs"] + 1):
        total, n_seen = 0.0, 0
        for batch in epoch_batches():
            idx = train[batch]
            loss, _, grads = evaluate(idx, params, gradient=True)
            _, penalty_grads = adapter.penalty(params, train.size)
            optimizer.step(params, [g + r for g, r in zip(grads, penalty_grads, strict=True)])
            total, n_seen = total + loss * idx.size, n_seen + idx.size
        val_loss, val_gap, _ = evaluate(val_idx if has_val else train, params)
        _record(history, epoch, total / n_seen, val_loss if has_val else np.nan, val_gap,
                verbose, settings, time.perf_counter() - start)
        if not has_val:
            continue
        if val_loss < best_loss - settings["tol"]:
            best_loss, best_params, best_epoch, stall = val_loss, [p.copy() for p in params], \
                epoch, 0
        else:
            stall += 1
            if stall >= settings["n_iter_no_change"]:
                break
    if not has_val:
        best_params, best_epoch = params, history["epoch"][-1]
    adapter.write(best_params)
    history["best_epoch"] = best_epoch
    history["improved"] = best_epoch != 0
    if verbose:
        kept = (
            "the starting parameters (epoch 0): no epoch lowered the projected validation loss"
            if best_epoch == 0
            else f"the parameters of epoch {best_epoch}"
        )
        print(f"Fine-tuning kept {kept}.", file=sys.stderr)
    return history


def _check_forward(adapter, estimator, X, Xt, params):
    """Refuse to fine-tune when the differentiable forward pass does not reproduce predict_proba."""
    m = min(64, Xt.shape[0])
    ours, _ = adapter.forward(Xt[:m], params)
    theirs = np.asarray(estimator.predict_proba(X[:m] if not hasattr(X, "iloc") else X.iloc[:m]))
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=1e-6, atol=1e-8):
        raise RuntimeError(
            f"The differentiable forward pass of {estimator!r} does not reproduce its "
            "predict_proba (largest difference "
            f"{np.max(np.abs(ours - theirs)) if ours.shape == theirs.shape else 'shape mismatch'}); "
            "refusing to fine-tune a model whose gradients would be wrong."
        )


def _record(history, epoch, train_loss, val_loss, gap, verbose, settings, elapsed):
    history["epoch"].append(epoch)
    history["train_loss"].append(train_loss)
    history["val_loss"].append(val_loss)
    history["val_base_gap"].append(gap)
    if verbose:
        print(
            f"Epoch {epoch}/{settings['max_epochs']}: train loss {train_loss:.5f}, "
            f"val loss {val_loss:.5f}, base parity gap {gap:.4f} ({elapsed:.2f} s)",
            file=sys.stderr,
        )
