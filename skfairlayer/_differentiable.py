"""Forward probabilities and parameter gradients of differentiable base classifiers.

Fine-tuning through the fairness layer needs, for the base model, the map
``parameters -> predict_proba(X)`` and its vector-Jacobian product. This module
provides it for :class:`~sklearn.linear_model.LogisticRegression` (binary and
multinomial), :class:`~sklearn.linear_model.SGDClassifier` with
``loss="log_loss"``, :class:`~sklearn.neural_network.MLPClassifier` (any of its
hidden activations), each of these as the last step of a
:class:`~sklearn.pipeline.Pipeline` whose earlier steps stay fixed, and any
estimator implementing the *fine-tuning protocol*:

``fine_tune_parameters()``
    Return the trainable parameters of the fitted model as a list of arrays.
``fine_tune_forward(X, parameters)``
    Return ``(proba, vjp)``: ``proba`` is what ``predict_proba(X)`` would return
    with these parameters, of shape (n_samples, n_classes); ``vjp(grad_proba)``
    returns the list of gradients (shapes of ``parameters``) of
    ``sum(grad_proba * proba)``.
``set_fine_tune_parameters(parameters)``
    Write the parameters into the fitted model, so that ``predict_proba`` uses
    them.
``fine_tune_penalty(parameters, n_samples)`` (optional)
    Return ``(value, gradients)`` of a regularization term added to the mean
    training loss over ``n_samples`` rows.

``X`` given to ``fine_tune_forward`` is what the model's ``predict_proba``
receives. See ``docs/user_guide/fine_tuning.rst`` for a worked example.
"""

import numpy as np
from scipy.special import expit, softmax
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.utils.extmath import safe_sparse_dot

__all__ = ["PROTOCOL", "SUPPORTED", "check_differentiable", "make_adapter"]

#: Methods an estimator implements to be fine-tuned (the last one is optional).
PROTOCOL = ("fine_tune_parameters", "fine_tune_forward", "set_fine_tune_parameters")

#: Human-readable list of the supported bases, used in error messages.
SUPPORTED = (
    "LogisticRegression, SGDClassifier(loss='log_loss'), MLPClassifier, one of these as "
    "the last step of a Pipeline, or an estimator implementing the fine-tuning protocol "
    "(fine_tune_parameters, fine_tune_forward, set_fine_tune_parameters); for regressors "
    "Ridge, LinearRegression, SGDRegressor or MLPRegressor (alone or last in a Pipeline)"
)

#: Regressors with a differentiable view (identity output: ``forward`` returns predictions).
REGRESSORS = (Ridge, LinearRegression, SGDRegressor, MLPRegressor)


def _implements_protocol(estimator):
    return all(callable(getattr(estimator, name, None)) for name in PROTOCOL)


def _final_step(estimator):
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def check_differentiable(estimator):
    """Raise a TypeError unless ``estimator`` (fitted or not) can be fine-tuned."""
    final = _final_step(estimator)
    ok = _implements_protocol(final) or isinstance(
        final, (LogisticRegression, MLPClassifier, *REGRESSORS)
    )
    if isinstance(final, SGDClassifier):
        ok = final.loss == "log_loss"
    if not ok:
        raise TypeError(
            f"fine_tune=True needs a differentiable base estimator: {SUPPORTED}. "
            f"Got {estimator!r} instead."
        )


def make_adapter(estimator):
    """The differentiable view of a *fitted* estimator (see the module docstring)."""
    check_differentiable(estimator)
    final = _final_step(estimator)
    if _implements_protocol(final):
        adapter = _ProtocolAdapter(final)
    elif isinstance(final, MLPRegressor):
        adapter = _MLPAdapter(final)
    elif isinstance(final, REGRESSORS):
        adapter = _LinearRegressionAdapter(final)
    elif isinstance(final, MLPClassifier):
        adapter = _MLPAdapter(final)
    else:
        adapter = _LinearAdapter(final)
    if isinstance(estimator, Pipeline):
        adapter.preprocess = estimator[:-1]
    return adapter


class _Adapter:
    """Uniform interface of a differentiable base for the fine-tuning loop."""

    preprocess = None  # fitted transformer applied once to X (Pipeline steps before the last)
    loss_scale = 1.0  # regression: 1 / scale**2, the loss being the MSE in standardised units

    def transform(self, X):
        """X as the differentiable model sees it (after the fixed preprocessing)."""
        return X if self.preprocess is None else self.preprocess.transform(X)

    def penalty(self, params, n_samples):
        """Regularization added to the mean loss, and its gradients."""
        return 0.0, [np.zeros_like(p) for p in params]

    def sample_weight(self, y):
        """Per-row weights implied by the model's ``class_weight`` (ones if none)."""
        class_weight = getattr(self.model, "class_weight", None)
        if class_weight is None:
            return np.ones(y.shape[0])
        from sklearn.utils.class_weight import compute_sample_weight

        return compute_sample_weight(class_weight, y)


class _LinearRegressionAdapter(_Adapter):
    """Ridge, LinearRegression, SGDRegressor: predictions ``X @ coef + intercept`` (one target)."""

    def __init__(self, model):
        coef = np.asarray(model.coef_)
        if coef.ndim != 1 and coef.shape[0] != 1:
            raise TypeError(
                f"Fine-tuning supports {type(model).__name__} on one target. "
                f"Got coef_ of shape {coef.shape} instead."
            )
        self.model = model
        self.fit_intercept = bool(getattr(model, "fit_intercept", True))

    def parameters(self):
        params = [np.array(self.model.coef_, dtype=np.float64).ravel()]
        if self.fit_intercept:
            params.append(np.atleast_1d(np.array(self.model.intercept_, dtype=np.float64)))
        return params

    def forward(self, X, params):
        z = np.asarray(safe_sparse_dot(X, params[0], dense_output=True), dtype=np.float64)
        intercept = params[1] if self.fit_intercept else np.atleast_1d(self.model.intercept_)
        pred = z.ravel() + float(intercept[0])

        def vjp(grad):
            grad = np.asarray(grad, dtype=np.float64)
            grads = [np.asarray(safe_sparse_dot(grad, X, dense_output=True)).ravel()]
            if self.fit_intercept:
                grads.append(np.array([grad.sum()]))
            return grads

        return pred, vjp

    def penalty(self, params, n_samples):
        """The base's own penalty, relative to the mean squared error (times ``loss_scale``)."""
        m, coef = self.model, params[0]
        if isinstance(m, Ridge):  # ||y - Xw||^2 + alpha ||w||^2, over n: MSE + alpha / n ||w||^2
            strength = 2.0 * float(np.mean(m.alpha)) / n_samples
        elif isinstance(m, SGDRegressor) and m.penalty in ("l2", "elasticnet"):
            # mean(0.5 (y - p)^2) + alpha * 0.5 ||w||^2 (l2 part): MSE + alpha ||w||^2
            strength = 2.0 * m.alpha * (1.0 if m.penalty == "l2" else 1.0 - m.l1_ratio)
        else:
            strength = 0.0
        strength *= self.loss_scale
        grads = [strength * coef] + [np.zeros_like(p) for p in params[1:]]
        return 0.5 * strength * float(np.sum(coef * coef)), grads

    def write(self, params):
        m = self.model
        m.coef_ = params[0].reshape(np.shape(m.coef_)).astype(np.asarray(m.coef_).dtype)
        if self.fit_intercept:
            if np.ndim(m.intercept_) == 0:
                m.intercept_ = float(params[1][0])
            else:
                m.intercept_ = params[1].astype(np.asarray(m.intercept_).dtype, copy=True)

    def sample_weight(self, y):
        return np.ones(y.shape[0])


class _ProtocolAdapter(_Adapter):
    def __init__(self, model):
        self.model = model

    def parameters(self):
        return [np.array(p, dtype=np.float64) for p in self.model.fine_tune_parameters()]

    def forward(self, X, params):
        proba, vjp = self.model.fine_tune_forward(X, params)
        return np.asarray(proba, dtype=np.float64), vjp

    def penalty(self, params, n_samples):
        func = getattr(self.model, "fine_tune_penalty", None)
        if func is None:
            return super().penalty(params, n_samples)
        value, grads = func(params, n_samples)
        return float(value), [np.asarray(g, dtype=np.float64) for g in grads]

    def write(self, params):
        self.model.set_fine_tune_parameters([np.array(p) for p in params])

    def sample_weight(self, y):
        return np.ones(y.shape[0])


def _output_vjp(out, grad, kind):
    """Gradient with respect to the last pre-activation, from the gradient of predict_proba.

    ``kind`` is ``"binary"`` (proba = [1 - q, q], q = sigmoid(z)), ``"softmax"``
    or ``"ovr"`` (q_k = sigmoid(z_k), proba = q / sum(q)). ``out`` is ``q`` for
    binary / ovr, the probabilities for softmax.
    """
    if kind == "identity":  # regression: grad is the gradient of the predictions
        return np.reshape(grad, (-1, 1))
    if kind == "binary":
        return ((grad[:, 1] - grad[:, 0]) * out * (1.0 - out))[:, None]
    if kind == "softmax":
        return out * (grad - np.sum(grad * out, axis=1, keepdims=True))
    total = out.sum(axis=1, keepdims=True)
    proba = out / total
    dq = (grad - np.sum(grad * proba, axis=1, keepdims=True)) / total
    return dq * out * (1.0 - out)


def _output_proba(z, kind):
    """predict_proba from the last pre-activation; also the value ``_output_vjp`` needs."""
    if kind == "identity":  # regression: the predictions themselves, shape (n_samples,)
        return z[:, 0], None
    if kind == "binary":
        q = expit(z[:, 0])
        return np.column_stack([1.0 - q, q]), q
    if kind == "softmax":
        p = softmax(z, axis=1)
        return p, p
    q = expit(z)
    return q / q.sum(axis=1, keepdims=True), q


class _LinearAdapter(_Adapter):
    """LogisticRegression (sigmoid / softmax) and SGDClassifier(log_loss) (sigmoid / OvR)."""

    def __init__(self, model):
        self.model = model
        self.fit_intercept = bool(getattr(model, "fit_intercept", True))
        if model.coef_.shape[0] == 1:
            self.kind = "binary"
        else:
            self.kind = "softmax" if isinstance(model, LogisticRegression) else "ovr"

    def parameters(self):
        params = [np.array(self.model.coef_, dtype=np.float64)]
        if self.fit_intercept:
            params.append(np.array(self.model.intercept_, dtype=np.float64))
        return params

    def forward(self, X, params):
        coef = params[0]
        z = np.asarray(safe_sparse_dot(X, coef.T, dense_output=True), dtype=np.float64)
        if self.fit_intercept:
            z = z + params[1]
        else:
            z = z + np.asarray(self.model.intercept_, dtype=np.float64)
        proba, out = _output_proba(z, self.kind)

        def vjp(grad):
            dz = _output_vjp(out, np.asarray(grad, dtype=np.float64), self.kind)
            grads = [np.asarray(safe_sparse_dot(dz.T, X, dense_output=True))]
            if self.fit_intercept:
                grads.append(dz.sum(axis=0))
            return grads

        return proba, vjp

    def penalty(self, params, n_samples):
        coef = params[0]
        m = self.model
        if isinstance(m, LogisticRegression):
            l1_ratio = m.l1_ratio if m.l1_ratio is not None else 0.0
            strength = 0.0 if np.isinf(m.C) else (1.0 - l1_ratio) / (m.C * n_samples)
        else:  # SGDClassifier: mean loss + alpha * R(w)
            if m.penalty == "l2":
                strength = m.alpha
            elif m.penalty == "elasticnet":
                strength = m.alpha * (1.0 - m.l1_ratio)
            else:
                strength = 0.0
        grads = [strength * coef] + [np.zeros_like(p) for p in params[1:]]
        return 0.5 * strength * float(np.sum(coef * coef)), grads

    def write(self, params):
        dtype = self.model.coef_.dtype
        self.model.coef_ = params[0].astype(dtype, copy=True)
        if self.fit_intercept:
            self.model.intercept_ = params[1].astype(dtype, copy=True)


def _activation(name, z):
    if name == "identity":
        return z
    if name == "logistic":
        return expit(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(f"Unsupported MLP activation {name!r}.")


def _activation_grad(name, a):
    """Derivative of the activation, from its output ``a``."""
    if name == "identity":
        return np.ones_like(a)
    if name == "logistic":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a * a
    return (a > 0).astype(a.dtype)  # relu


class _MLPAdapter(_Adapter):
    """MLPClassifier: hidden layers with its activation, logistic or softmax output."""

    def __init__(self, model):
        self.model = model
        if isinstance(model, MLPRegressor):
            if model.n_outputs_ != 1:
                raise TypeError(
                    "Fine-tuning supports MLPRegressor on one target. "
                    f"Got {model.n_outputs_} outputs instead."
                )
            self.kind = "identity"
        elif model.out_activation_ == "softmax":
            self.kind = "softmax"
        elif model.out_activation_ == "logistic" and model.n_outputs_ == 1:
            self.kind = "binary"
        else:
            raise TypeError(
                "Fine-tuning supports MLPClassifier on binary or multiclass targets (not "
                f"multilabel). Got out_activation_={model.out_activation_!r} with "
                f"{model.n_outputs_} outputs instead."
            )
        self.n_layers = len(model.coefs_)

    def parameters(self):
        return [np.array(c, dtype=np.float64) for c in self.model.coefs_] + [
            np.array(b, dtype=np.float64) for b in self.model.intercepts_
        ]

    def forward(self, X, params):
        L, act = self.n_layers, self.model.activation
        coefs, intercepts = params[:L], params[L:]
        activations = [X]
        a = X
        for i in range(L):
            z = np.asarray(safe_sparse_dot(a, coefs[i], dense_output=True)) + intercepts[i]
            a = _activation(act, z) if i < L - 1 else z
            activations.append(a)
        proba, out = _output_proba(activations[-1], self.kind)

        def vjp(grad):
            dz = _output_vjp(out, np.asarray(grad, dtype=np.float64), self.kind)
            g_coefs, g_intercepts = [None] * L, [None] * L
            for i in range(L - 1, -1, -1):
                g_coefs[i] = np.asarray(safe_sparse_dot(activations[i].T, dz, dense_output=True))
                g_intercepts[i] = dz.sum(axis=0)
                if i > 0:
                    dz = (dz @ coefs[i].T) * _activation_grad(act, activations[i])
            return g_coefs + g_intercepts

        return proba, vjp

    def penalty(self, params, n_samples):
        L, alpha = self.n_layers, self.model.alpha
        coefs = params[:L]
        # The classifier's loss is the log-loss + alpha / (2 n) ||W||^2; the regressor's
        # 0.5 MSE + alpha / (2 n) ||W||^2, i.e. MSE + alpha / n ||W||^2 (see loss_scale).
        factor = 2.0 * self.loss_scale if self.kind == "identity" else 1.0
        value = 0.5 * factor * alpha * sum(float(np.sum(c * c)) for c in coefs) / n_samples
        grads = [factor * alpha * c / n_samples for c in coefs] + [
            np.zeros_like(b) for b in params[L:]
        ]
        return value, grads

    def write(self, params):
        L = self.n_layers
        self.model.coefs_ = [
            p.astype(c.dtype, copy=True) for p, c in zip(params[:L], self.model.coefs_, strict=True)
        ]
        self.model.intercepts_ = [
            p.astype(b.dtype, copy=True)
            for p, b in zip(params[L:], self.model.intercepts_, strict=True)
        ]
