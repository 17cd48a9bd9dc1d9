"""Helpers shared by the displays: lazy pyplot import, groups, tolerances, inputs.

matplotlib is imported by :func:`_import_pyplot` only, when a display draws.
"""

import numpy as np

from .._groups import SensitiveColumns, encode, resolve


def _import_pyplot(what):
    """Import matplotlib.pyplot, or raise an ImportError telling how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"{what} requires matplotlib. You can install it with "
            "`pip install skfairlayer[plot]` (or `pip install matplotlib`)."
        ) from exc
    return plt


def _check_ax(ax, what):
    """Return (figure, ax), creating them when ``ax`` is None."""
    plt = _import_pyplot(what)
    if ax is None:
        fig, ax = plt.subplots(layout="constrained")
        return fig, ax
    return ax.figure, ax


def _codes(sensitive_features, n_samples):
    (grouping,), labels = encode(sensitive_features, n_samples=n_samples)
    return grouping.codes, labels


def _group_means(values, codes, n_groups):
    """Per-group mean of 1-D ``values`` or, for 2-D, of each column: shape (n_groups, n_cols)."""
    values = values[:, None] if values.ndim == 1 else values
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    sums = np.stack(
        [np.bincount(codes, weights=values[:, j], minlength=n_groups) for j in
         range(values.shape[1])],
        axis=1,
    )
    return sums / counts[:, None]


def _parity_gap(values, codes, n_groups):
    """Largest difference between two groups' mean output (max over columns)."""
    means = _group_means(values, codes, n_groups)
    return float((means.max(axis=0) - means.min(axis=0)).max())


def _label(group):
    if isinstance(group, tuple):
        return ", ".join(str(g) for g in group)
    return str(group.item() if isinstance(group, np.generic) else group)


def _layer_params(estimator):
    """Constructor parameters of the estimator (empty for objects without get_params)."""
    return estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}


def _columns_of(X, spec):
    """The columns ``spec`` (names or positions, or a callable) of ``X``."""
    return resolve(SensitiveColumns(spec, owner="This display").split(X)[1])


def _groups_and_kwargs(estimator, X, sensitive_features):
    """Groups of the rows of ``X`` and the keyword arguments the estimator's methods need.

    A :class:`~skfairlayer.FairnessLayerClassifier` that reads its groups from
    ``X`` (constructor ``sensitive_features`` set) gets no keyword; one that
    takes them as a keyword gets ``sensitive_features=``. Other estimators get
    no keyword and ``sensitive_features`` is used for the metrics only.
    """
    params = _layer_params(estimator)
    if "sensitive_features" not in params or params["sensitive_features"] is None:
        if sensitive_features is None:
            raise ValueError(
                "sensitive_features is required: this estimator does not read the groups "
                "from X. Got None instead."
            )
        kwargs = {"sensitive_features": sensitive_features} if "sensitive_features" in params else {}
        return sensitive_features, kwargs
    if sensitive_features is not None:
        return sensitive_features, {}
    return _columns_of(X, params["sensitive_features"]), {}


def _check_tolerances(tolerances):
    tol = np.asarray(tolerances, dtype=np.float64).reshape(-1)
    if tol.size == 0 or not np.isfinite(tol).all() or (tol < 0).any():
        raise ValueError(
            "tolerances must be a non-empty sequence of finite numbers >= 0. "
            f"Got {tolerances!r} instead."
        )
    return tol


def _positive_column(proba, classes, pos_label):
    """The probability column of ``pos_label`` (the last class by default); 2-D kept for K > 2."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:
        return proba
    if proba.shape[1] == 2 or pos_label is not None:
        if pos_label is None:
            return proba[:, -1]
        classes = list(classes)
        if pos_label not in classes:
            raise ValueError(
                f"pos_label must be one of the classes {classes!r}. Got {pos_label!r} instead."
            )
        return proba[:, classes.index(pos_label)]
    return proba


def _base_input(X, params):
    """``X`` as the layer feeds it to its base: sensitive columns dropped unless kept."""
    spec = params.get("sensitive_features")
    if spec is None or callable(spec) or params.get("sensitive_as_feature", False):
        return X
    cols = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if hasattr(X, "iloc"):
        if all(isinstance(c, str) for c in cols):
            return X.drop(columns=cols)
        keep = [j for j in range(X.shape[1]) if j not in {c % X.shape[1] for c in cols}]
        return X.iloc[:, keep]
    arr = np.asarray(X)
    return np.delete(arr, [c % arr.shape[1] for c in cols], axis=1)
