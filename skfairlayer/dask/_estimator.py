"""A fitted :class:`~skfairlayer.FairnessLayerClassifier` applied to Dask collections.

The only coupling between :mod:`skfairlayer.dask` and the estimator: its
public fitted attributes (``estimator_``, ``classes_``, ``groups_``,
``layer_.shifts``, ``layer_.thresholds``) and parameters (``tolerance``,
``sensitive_features``, ``sensitive_as_feature``, ``criterion``, ``groups``,
``inference``, ``decision``, ``threshold``). The base scores each partition
with ``map_blocks`` / ``map_partitions``; the layer then solves over the whole
collection.
"""

from numbers import Integral

import dask.array as da
import numpy as np
from dask.delayed import delayed
from sklearn.utils.validation import check_is_fitted

from ..exceptions import UnseenGroupError
from ._blocks import as_blocks, global_codes
from ._decisions import parity_decisions
from ._project import project


def _check_supported(estimator):
    check_is_fitted(estimator)
    criterion = estimator.criterion
    if len(estimator.classes_) != 2 or criterion != "demographic_parity" \
            or estimator.groups != "intersectional":
        raise NotImplementedError(
            "skfairlayer.dask supports binary classifiers with criterion='demographic_parity' "
            "and groups='intersectional' (one shift and one threshold per group, solved from "
            f"per-group aggregates). Got {len(estimator.classes_)} classes, criterion="
            f"{criterion!r} and groups={estimator.groups!r} instead; use the estimator's own "
            "methods on in-memory batches."
        )
    if callable(estimator.sensitive_features):
        raise NotImplementedError(
            "skfairlayer.dask reads the sensitive features from column names or indices of X, "
            "or from sensitive_features=; a callable is not supported."
        )


def _positive(estimator):
    base = estimator.estimator_

    def score(block):
        return base.predict_proba(block)[:, -1].astype(np.float64)

    return score


def _split(estimator, X, sensitive_features):
    """Base scores (lazy, one value per row) and the sensitive features of ``X``."""
    spec = estimator.sensitive_features
    columns = None if spec is None else (list(spec) if isinstance(spec, list | tuple) else [spec])
    if (columns is None) == (sensitive_features is None):
        raise ValueError(
            "Give the sensitive features once: as the estimator's sensitive_features columns "
            "of X, or as sensitive_features=. Got "
            f"sensitive_features={spec!r} on the estimator and "
            f"{'an array' if sensitive_features is not None else 'None'} here instead."
        )
    keep_all = estimator.sensitive_as_feature
    if hasattr(X, "map_partitions"):  # a Dask DataFrame
        groups = sensitive_features
        base_X = X
        if columns is not None:
            names = [X.columns[c] if isinstance(c, Integral) else c for c in columns]
            groups = X[names]
            base_X = X if keep_all else X.drop(columns=names)
        score = _positive(estimator)
        scores = base_X.map_partitions(
            lambda df: _series(score(df) if len(df) else np.zeros(0), df.index),
            meta=("proba", "f8"),
        )
        return scores, groups
    if not isinstance(X, da.Array) or X.ndim != 2:
        raise TypeError(
            "X must be a 2-D Dask array or a Dask DataFrame. "
            f"Got {type(X).__name__} instead; use the estimator's own methods on in-memory data."
        )
    X = X.rechunk({1: -1})
    groups, base_X = sensitive_features, X
    if columns is not None:
        if not all(isinstance(c, Integral) and not isinstance(c, bool) for c in columns):
            raise ValueError(
                "sensitive_features must be column indices when X is a Dask array. "
                f"Got {spec!r} instead."
            )
        idx = sorted({int(c) % X.shape[1] for c in columns})
        keep = [j for j in range(X.shape[1]) if j not in idx]
        groups = X[:, idx]
        base_X = X if keep_all else X[:, keep]
    score = _positive(estimator)
    scores = base_X.map_blocks(
        lambda b: score(b) if b.shape[0] else np.zeros(0), drop_axis=1, dtype=np.float64
    )
    return scores, groups


def _series(values, index):
    import pandas as pd

    return pd.Series(values, index=index, name="proba")


def _check_known(estimator, labels):
    known = {lab.item() if hasattr(lab, "item") else lab for lab in estimator.groups_.tolist()}
    unseen = [lab for lab in labels.tolist() if lab not in known]
    if unseen:
        raise UnseenGroupError(
            f"Group label(s) {unseen[:5]!r} were not seen during fit. Known groups: "
            f"{estimator.groups_.tolist()[:20]!r}."
        )


def _fitted_rule(estimator, scores, groups, table, rule):
    """Per-row fitted shift or threshold: ``rule(scores, table[code])``, lazily."""
    lookup = {(lab.item() if hasattr(lab, "item") else lab): j
              for j, lab in enumerate(estimator.groups_.tolist())}
    score_blocks, group_blocks, chunks = as_blocks(scores, groups)

    def block(s, g):
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        return rule(s, table[global_codes(g, lookup)])

    arrays = [da.from_delayed(delayed(block, pure=True)(s, g), shape=(n,),
                              dtype=np.float64)
              for s, g, n in zip(score_blocks, group_blocks, chunks, strict=True)]
    return da.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def _proba(estimator, X, sensitive_features):
    _check_supported(estimator)
    scores, groups = _split(estimator, X, sensitive_features)
    if estimator.inference == "fitted":
        return _fitted_rule(estimator, scores, groups, estimator.layer_.shifts,
                            lambda s, c: np.clip(s - c, 0.0, 1.0)), scores, groups
    result = project(scores, groups, tolerance=float(estimator.tolerance))
    _check_known(estimator, result.groups)
    if len(result.groups) < 2:  # one group: the fitted shifts, as in memory
        return _fitted_rule(estimator, scores, groups, estimator.layer_.shifts,
                            lambda s, c: np.clip(s - c, 0.0, 1.0)), scores, groups
    return result.proba, scores, groups


def predict_proba(estimator, X, *, sensitive_features=None):
    """Projected class probabilities of a Dask collection, parity over the whole collection.

    Parameters
    ----------
    estimator : FairnessLayerClassifier
        Fitted (in memory), binary, ``criterion="demographic_parity"``.
    X : dask.array.Array of shape (n_samples, n_features) or dask DataFrame
        Samples; the base model scores each partition.
    sensitive_features : dask array / Series / DataFrame, default=None
        Group of each row, when the estimator does not read them from ``X``.

    Returns
    -------
    proba : dask.array.Array of shape (n_samples, 2)
        Lazy projected probabilities of ``estimator.classes_``: with
        ``inference="batch"`` the group means of the positive column differ by
        at most ``tolerance`` over the whole collection (verified when
        computed); with ``inference="fitted"`` the training shifts.
    """
    p, _, _ = _proba(estimator, X, sensitive_features)
    return p.map_blocks(lambda b: np.column_stack([1.0 - b, b]), new_axis=1,
                        chunks=(p.chunks[0], (2,)), dtype=np.float64)


def predict(estimator, X, *, sensitive_features=None):
    """Class labels of a Dask collection with selection-rate parity over the whole collection.

    Parameters
    ----------
    estimator : FairnessLayerClassifier
        Fitted (in memory), binary, ``criterion="demographic_parity"``.
    X : dask.array.Array of shape (n_samples, n_features) or dask DataFrame
        Samples.
    sensitive_features : dask array / Series / DataFrame, default=None
        Group of each row, when the estimator does not read them from ``X``.

    Returns
    -------
    y_pred : dask.array.Array of shape (n_samples,)
        Lazy labels from ``estimator.classes_``. With ``decision="parity"`` and
        ``inference="batch"``: the decisions of maximal expected accuracy whose
        group selection rates differ by at most ``tolerance`` over the whole
        collection (the in-memory decisions on the concatenated data).
    """
    classes = estimator.classes_
    _check_supported(estimator)
    if estimator.decision == "threshold":
        p, _, _ = _proba(estimator, X, sensitive_features)
        labels = (p >= estimator.threshold).astype(int)
    else:
        scores, groups = _split(estimator, X, sensitive_features)
        if estimator.inference == "fitted":
            labels = _fitted_rule(estimator, scores, groups, estimator.layer_.thresholds,
                                  lambda s, t: (s > t).astype(np.float64)).astype(int)
        else:
            result = parity_decisions(scores, groups, tolerance=float(estimator.tolerance))
            _check_known(estimator, result.groups)
            if len(result.groups) < 2:
                labels = _fitted_rule(estimator, scores, groups, estimator.layer_.thresholds,
                                      lambda s, t: (s > t).astype(np.float64)).astype(int)
            else:
                labels = result.decisions
    return labels.map_blocks(lambda b: classes[b], dtype=classes.dtype)
