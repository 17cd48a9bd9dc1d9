"""A fitted skorch classifier seen through the fine-tuning protocol of skfairlayer."""

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

__all__ = ["SkorchFineTuning"]


class SkorchFineTuning(ClassifierMixin, BaseEstimator):
    """Wrap a skorch classifier so that the fairness-layer meta-estimator can fine-tune it.

    Implements the fine-tuning protocol of :mod:`skfairlayer._differentiable`
    (``fine_tune_parameters``, ``fine_tune_forward``, ``set_fine_tune_parameters``)
    over the parameters of the net's module, with gradients from ``torch.autograd``.

    Parameters
    ----------
    net : skorch.NeuralNetBinaryClassifier or skorch.NeuralNetClassifier
        The net. A binary net's module returns one logit per row; a
        ``NeuralNetClassifier``'s module returns class probabilities (skorch's convention).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels seen by :meth:`fit`.
    """

    def __init__(self, net):
        self.net = net

    def fit(self, X, y, **fit_params):
        """Fit the net on ``X``, ``y``; return ``self``."""
        self.net.fit(X, y, **fit_params)
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X):
        """Class probabilities of shape (n_samples, n_classes)."""
        return np.asarray(self.net.predict_proba(X), dtype=np.float64)

    def predict(self, X):
        """Most probable class of each row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _named(self):
        return [(n, p) for n, p in self.net.module_.named_parameters() if p.requires_grad]

    def fine_tune_parameters(self):
        """The trainable parameters of the module, as float64 arrays."""
        return [p.detach().cpu().numpy().astype(np.float64) for _, p in self._named()]

    def set_fine_tune_parameters(self, parameters):
        """Write ``parameters`` (arrays, in :meth:`fine_tune_parameters` order) into the module."""
        with torch.no_grad():
            for (_, p), value in zip(self._named(), parameters, strict=True):
                p.copy_(torch.as_tensor(np.asarray(value), dtype=p.dtype, device=p.device))

    def fine_tune_forward(self, X, parameters):
        """``(proba, vjp)``: probabilities with ``parameters`` and their vector-Jacobian product."""
        module = self.net.module_
        first = next(iter(module.parameters()))
        tensors = {
            name: torch.tensor(np.asarray(v), dtype=first.dtype, device=first.device,
                               requires_grad=True)
            for (name, _), v in zip(self._named(), parameters, strict=True)
        }
        x = torch.as_tensor(np.asarray(X), dtype=first.dtype, device=first.device)
        out = torch.func.functional_call(module, tensors, (x,))
        if out.dim() == 1 or out.shape[-1] == 1:  # binary: one logit per row
            pos = torch.sigmoid(out.reshape(-1))
            proba = torch.stack([1 - pos, pos], dim=1)
        else:
            proba = out
        values = proba.detach().cpu().numpy().astype(np.float64)

        def vjp(grad_proba):
            g = torch.as_tensor(np.asarray(grad_proba), dtype=proba.dtype, device=proba.device)
            grads = torch.autograd.grad(proba, list(tensors.values()), g, retain_graph=True,
                                        allow_unused=True)
            return [np.zeros(t.shape) if gr is None else gr.detach().cpu().numpy().astype(np.float64)
                    for t, gr in zip(tensors.values(), grads, strict=True)]

        return values, vjp
