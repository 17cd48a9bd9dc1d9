"""Fine-tuning a differentiable base through the fairness layer (the paper's F-Layer).

Starting from the fitted base, minimise the log-loss of the *projected*
probabilities by minibatch Adam. Each minibatch is projected by the exact
verified solver (:func:`skfairlayer.projection.solve_problem`) with the same
criterion and tolerance as at inference; the gradient flows back through the
layer with its closed-form VJP (:mod:`skfairlayer._sensitivity`) and through
the base with the chain rule ``dL/dtheta = (ds/dtheta)' J (dL/dp)``
(:mod:`skfairlayer._differentiable`).

Details that matter:

* batches are stratified by group and label, so every batch carries every
  group (the layer acts on the batch: a missing group is unconstrained);
* during training the outputs are bounded in ``[margin, 1 - margin]``
  (``margin=1e-6``) so the log-loss stays finite;
* a stratified validation fraction drives early stopping, and the best
  parameters seen — including the starting ones — are kept: fine-tuning never
  returns a base whose projected validation loss is worse than where it began.
"""

import time
from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_array, check_random_state

from ._differentiable import make_adapter
from ._sensitivity import Linearization
from .constraints import ProjectionProblem, make_criterion
from .projection import solve_problem

__all__ = ["FINE_TUNE_DEFAULTS", "batch_loss", "check_fine_tune_params", "fine_tune"]

#: Default settings of the fine-tuning loop (the keys ``fine_tune_params`` accepts).
FINE_TUNE_DEFAULTS = {
    "max_epochs": 50,
    "learning_rate": 3e-3,
    "batch_size": 1024,
    "validation_fraction": 0.1,
    "n_iter_no_change": 5,
    "tol": 1e-4,
    "margin": 1e-6,
}


def check_fine_tune_params(params):
    """Merge ``params`` into the defaults, validating every key and value."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise TypeError(f"fine_tune_params must be a dict or None. Got {params!r} instead.")
    unknown = sorted(set(params) - set(FINE_TUNE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"fine_tune_params has unknown key(s) {unknown!r}; the keys are "
            f"{sorted(FINE_TUNE_DEFAULTS)!r}. Got {params!r} instead."
        )
    out = {**FINE_TUNE_DEFAULTS, **params}

    def _check(name, ok, what):
        value = out[name]
        if isinstance(value, bool) or not ok(value):
            raise ValueError(f"fine_tune_params[{name!r}] must be {what}. Got {value!r} instead.")

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
    return out


# --------------------------------------------------------------------------- batches
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
    """Boolean mask of validation rows: systematic sampling along each group's label order."""
    if fraction == 0:
        return np.zeros(codes.shape[0], dtype=bool)
    position, counts = _stratified_order(codes, y, rng)
    offset = rng.uniform(size=counts.size)[codes]
    val = np.floor(fraction * (position + 1) + offset) > np.floor(fraction * position + offset)
    n_val = np.bincount(codes[val], minlength=counts.size)
    val &= (counts - n_val > 0)[codes]  # every group keeps training rows
    return val


def _minibatches(codes, y, batch_size, rng):
    """Split rows into batches that each carry every group (stratified by group and label)."""
    position, counts = _stratified_order(codes, y, rng)
    present = counts[counts > 0]
    n_batches = int(max(1, min(round(codes.shape[0] / batch_size), present.min())))
    offset = rng.randint(0, n_batches, size=counts.size)[codes]
    batch_id = (position + offset) % n_batches
    order = np.argsort(batch_id, kind="stable")
    bounds = np.cumsum(np.bincount(batch_id, minlength=n_batches))[:-1]
    return [b for b in np.split(order, bounds) if b.size]


# --------------------------------------------------------------------------- layer
def _project(scores, codes, labels, criterion, tolerance, solver, margin):
    """Projected outputs within ``[margin, 1 - margin]`` and their Jacobian operator."""
    present = np.unique(codes)
    local = np.searchsorted(present, codes)
    k = present.size
    if scores.ndim == 1:
        if k < 2:
            p = np.clip(scores, margin, 1.0 - margin)
            free = (scores > margin) & (scores < 1.0 - margin)
            return p, lambda g: g * free
        fams = criterion.families(local, k, scores, tolerance, labels=labels)
        problem = ProjectionProblem(scores, fams, lower=margin, upper=1.0 - margin)
        p = solve_problem(problem, solver=solver).outputs
        return p, Linearization(problem, p).apply
    # Simplex shrunk to entries >= margin: P = margin + scale * Q, Q on the simplex.
    scale = 1.0 - scores.shape[1] * margin
    s = (scores - margin) / scale
    fams = criterion.families(local, k, s, tolerance / scale, labels=labels) if k >= 2 else ()
    problem = ProjectionProblem(s, fams, simplex=True)
    q = solve_problem(problem, solver="osqp" if solver == "exact" else solver).outputs
    return margin + scale * q, Linearization(problem, q).apply  # dP/dS = J_Q


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


def _base_gap(scores, codes):
    """Largest parity gap of the base outputs (over classes for multiclass)."""
    present = np.unique(codes)
    if present.size < 2:
        return 0.0
    local = np.searchsorted(present, codes)
    s2 = scores[:, None] if scores.ndim == 1 else scores
    counts = np.bincount(local, minlength=present.size)
    means = np.stack(
        [
            np.bincount(local, weights=s2[:, j], minlength=present.size) / counts
            for j in range(s2.shape[1])
        ]
    )
    return float((means.max(axis=1) - means.min(axis=1)).max())


def batch_loss(
    adapter, X, params, codes, y, weight, *, criterion, tolerance, solver, margin, gradient=False
):
    """Projected log-loss of one batch and, optionally, its gradient in the parameters.

    Returns ``(loss, base_gap, grads)``; ``grads`` (``None`` unless
    ``gradient``) is ``(ds/dtheta)' J (dL/dp)``: the loss gradient pulled back
    through the layer (closed-form VJP) and then through the base.
    """
    proba, vjp = adapter.forward(X, params)
    binary = proba.shape[1] == 2
    s = proba[:, 1] if binary else proba
    p, jac = _project(s, codes, y, criterion, tolerance, solver, margin)
    loss, grad_p = _loss_and_grad(p, y, weight)
    gap = _base_gap(s, codes)
    if not gradient:
        return loss, gap, None
    grad_s = jac(grad_p)
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
    codes : ndarray of shape (n_samples,)
        Group code of each row.
    classes : ndarray of shape (n_classes,)
        The estimator's ``classes_``.
    tolerance : float
        Parity tolerance of the layer.
    criterion : str or Criterion, default="demographic_parity"
        Parity criterion; label-based criteria receive the class indices.
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
        projected log-loss and the validation parity gap of the base outputs;
        ``best_epoch`` is the epoch whose parameters were kept.
    """
    settings = check_fine_tune_params(params)
    crit = make_criterion(criterion)
    rng = check_random_state(random_state)
    adapter = make_adapter(estimator)
    Xt = check_array(adapter.transform(X), accept_sparse="csr", dtype=np.float64)
    y = np.asarray(y)
    y_idx = np.searchsorted(classes, y)
    codes = np.asarray(codes)
    weight = adapter.sample_weight(y)
    if sample_weight is not None:
        weight = weight * np.asarray(sample_weight, dtype=np.float64)
    margin = settings["margin"]

    params_now = adapter.parameters()
    _check_forward(adapter, estimator, X, Xt, params_now)

    val = _validation_split(codes, y_idx, settings["validation_fraction"], rng)
    if np.unique(codes[val]).size < 2:
        val[:] = False  # too small to validate parity: train on everything, no early stopping
    train = np.flatnonzero(~val)
    val_idx = np.flatnonzero(val)

    layer = {"criterion": crit, "tolerance": tolerance, "solver": solver, "margin": margin}

    def evaluate(idx, params):
        return batch_loss(adapter, Xt[idx], params, codes[idx], y_idx[idx], weight[idx], **layer)

    optimizer = _Adam(params_now, settings["learning_rate"])
    history = {"epoch": [], "train_loss": [], "val_loss": [], "val_base_gap": []}
    has_val = val_idx.size > 0
    best_loss, best_gap, _ = evaluate(val_idx if has_val else train, params_now)
    best_params, best_epoch, stall = [p.copy() for p in params_now], 0, 0
    _record(history, 0, np.nan, best_loss if has_val else np.nan, best_gap, verbose, settings, 0.0)
    start = time.perf_counter()
    for epoch in range(1, settings["max_epochs"] + 1):
        total, n_seen = 0.0, 0
        for batch in _minibatches(codes[train], y_idx[train], settings["batch_size"], rng):
            idx = train[batch]
            loss, _, grads = batch_loss(
                adapter,
                Xt[idx],
                params_now,
                codes[idx],
                y_idx[idx],
                weight[idx],
                **layer,
                gradient=True,
            )
            _, penalty_grads = adapter.penalty(params_now, train.size)
            grads = [g + r for g, r in zip(grads, penalty_grads, strict=True)]
            optimizer.step(params_now, grads)
            total += loss * idx.size
            n_seen += idx.size
        train_loss = total / n_seen
        if has_val:
            val_loss, val_gap, _ = evaluate(val_idx, params_now)
        else:
            val_loss, val_gap = np.nan, evaluate(train, params_now)[1]
        _record(
            history,
            epoch,
            train_loss,
            val_loss,
            val_gap,
            verbose,
            settings,
            time.perf_counter() - start,
        )
        if not has_val:
            continue
        if val_loss < best_loss - settings["tol"]:
            best_loss, best_params, best_epoch, stall = (
                val_loss,
                [p.copy() for p in params_now],
                epoch,
                0,
            )
        else:
            stall += 1
            if stall >= settings["n_iter_no_change"]:
                break
    if not has_val:
        best_params, best_epoch = params_now, history["epoch"][-1]
    adapter.write(best_params)
    history["best_epoch"] = best_epoch
    if verbose:
        print(f"Fine-tuning kept the parameters of epoch {best_epoch}.")
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
            f"val loss {val_loss:.5f}, base parity gap {gap:.4f} ({elapsed:.2f} s)"
        )
