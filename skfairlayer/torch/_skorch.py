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

    Examples
    --------
    >>> import numpy as np, torch, skorch
    >>> from skfairlayer.torch import SkorchFineTuning
    >>> X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.float32)
    >>> net = skorch.NeuralNetBinaryClassifier(torch.nn.Linear(3, 1), max_epochs=1,
    ...                                        train_split=None, verbose=0)
    >>> model = SkorchFineTuning(net).fit(X, y)
    >>> [p.shape for p in model.fine_tune_parameters()]
    [(1, 3), (1,)]
    """

    def __init__(self, net):
        self.net = net

    def fit(self, X, y, **fit_params):
        """Fit the net.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Labels.
        **fit_params : dict
            Passed to the net's ``fit``.

        Returns
        -------
        self : SkorchFineTuning
        """
        self.net.fit(X, y, **fit_params)
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return np.asarray(self.net.predict_proba(X), dtype=np.float64)

    def predict(self, X):
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _named(self):
        return [(n, p) for n, p in self.net.module_.named_parameters() if p.requires_grad]

    def fine_tune_parameters(self):
        """The trainable parameters of the module.

        Returns
        -------
        parameters : list of ndarray
            Copies, as float64 arrays.
        """
        return [p.detach().cpu().numpy().astype(np.float64) for _, p in self._named()]

    def set_fine_tune_parameters(self, parameters):
        """Write parameters into the module.

        Parameters
        ----------
        parameters : list of array-like
            In :meth:`fine_tune_parameters` order.
        """
        with torch.no_grad():
            for (_, p), value in zip(self._named(), parameters, strict=True):
                p.copy_(torch.as_tensor(np.asarray(value), dtype=p.dtype, device=p.device))

    def fine_tune_forward(self, X, parameters):
        """Probabilities with given parameters, and their vector-Jacobian product.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data, as ``predict_proba`` receives it.
        parameters : list of array-like
            In :meth:`fine_tune_parameters` order.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        vjp : callable
            ``vjp(grad_proba)`` returns the gradients of ``sum(grad_proba * proba)``
            with respect to ``parameters`` (a list of arrays of their shapes).
        """
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
