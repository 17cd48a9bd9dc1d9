"""Fitted fairness-layer estimators applied to Dask collections.

``inference="fitted"``: the fitted rule is row-wise, so every partition goes
through the estimator's own in-memory method (any criterion, grouping and
number of classes; the classifier and the regressor). ``inference="batch"``:
the base scores each partition and the layer solves over the whole collection
from per-group aggregates (demographic parity with one grouping: binary, or
multiclass by the core's simplex solver driven over the collection; multiclass
parity decisions are not computed this way).
The sensitive columns are selected by the core's
:class:`~skfairlayer._groups.SensitiveColumns`: checked on the driver against
the collection's empty meta, then applied partition by partition.
"""

import copy
from functools import partial

import dask
import dask.array as da
import numpy as np
from dask.delayed import delayed
from sklearn.base import is_classifier
from sklearn.utils.validation import check_is_fitted, validate_data

from .._groups import unseen_groups_error
from ._blocks import _is_frame, aligned_blocks, label_keys
from ._decisions import decide_blocks
from ._project import project_blocks
from ._simplex import project_blocks as project_multiclass

# ------------------------------------------------------------------ partitions


def _check_estimator(estimator):
    check_is_fitted(estimator)
    if callable(estimator.sensitive_features):
        raise NotImplementedError(
            "skfairlayer.dask reads the sensitive features from column names or positions of "
            "X, or from sensitive_features=; a callable is evaluated per batch, which on a "
            "Dask collection would mean per partition. Compute the groups as a Dask column "
            "and pass it as sensitive_features= (with sensitive_features=None on the "
            f"estimator) instead. Got {estimator.sensitive_features!r}."
        )


def _partitions(estimator, X, sensitive_features):
    """Aligned delayed partitions of ``X`` and of the groups (or None), and rows per partition.

    The core's column selection and input checks run first on the empty meta
    of the collections, so their errors come from the driver, before any pass.
    """
    if isinstance(X, da.Array) and X.ndim == 2:
        if X.numblocks[1] > 1:
            X = X.rechunk({1: -1})
        blocks, chunks = list(X.to_delayed()[:, 0]), X.chunks[0]
        meta = np.empty((0, X.shape[1]), dtype=X.dtype)
    elif not isinstance(X, da.Array) and _is_frame(X) and getattr(X, "ndim", 1) == 2:
        blocks, chunks, meta = list(X.to_delayed()), (np.nan,) * X.npartitions, X._meta
    else:
        raise TypeError(
            "X must be a 2-D Dask array or a Dask DataFrame. "
            f"Got {type(X).__name__} instead; use the estimator's own methods on in-memory data."
        )
    sf_meta = None if sensitive_features is None else getattr(sensitive_features, "_meta", None)
    validate_data(estimator, meta, reset=False, skip_check_array=True)
    estimator._columns().split(meta, sf_meta)  # the core's selector: names, positions, errors
    sf_blocks = [None] * len(blocks)
    if sensitive_features is not None:
        sf_blocks = aligned_blocks(sensitive_features, chunks, "X")
    return blocks, sf_blocks, tuple(chunks)


def _rows(x):
    return x.shape[0]


def _assemble(blocks, chunks, tail, dtype):
    """One lazy array from delayed blocks of ``chunks`` rows and trailing shape ``tail``."""
    arrays = [da.from_delayed(b, shape=(n, *tail), dtype=dtype)
              for b, n in zip(blocks, chunks, strict=True)]
    return da.concatenate(arrays) if len(arrays) > 1 else arrays[0]


# ------------------------------------------------------------------ the fitted rule


def _fitted_copy(estimator):
    """A shallow copy serving the fitted rule (the fitted attributes are shared)."""
    est = copy.copy(estimator)
    est.inference = "fitted"
    return est


def _apply(est, method, x, sf, tail, dtype):
    if _rows(x) == 0:
        return np.empty((0, *tail), dtype=dtype)
    return np.asarray(getattr(est, method)(x, sensitive_features=sf))


def _rowwise(estimator, method, X, sensitive_features, tail, dtype):
    """``method`` of the fitted rule, partition by partition (the rule is row-wise)."""
    blocks, sf_blocks, chunks = _partitions(estimator, X, sensitive_features)
    est = delayed(_fitted_copy(estimator), pure=True)
    out = [delayed(_apply, pure=True)(est, method, x, s, tail, dtype)
           for x, s in zip(blocks, sf_blocks, strict=True)]
    return _assemble(out, chunks, tail, dtype)


# ------------------------------------------------------------------ the global solve


def _check_batch(estimator, decisions=False):
    """Raise unless ``inference="batch"`` reduces to a solver from per-group sums.

    ``decisions``: for ``predict`` (a multiclass classifier with
    ``decision="parity"`` is then refused too).
    """
    reasons = []
    criterion = estimator.criterion
    multiclass = is_classifier(estimator) and len(estimator.classes_) > 2
    if criterion != "demographic_parity":
        reasons.append(
            f"criterion={criterion!r} shifts each row by a multiple of its own score or label "
            "(or is a custom criterion), not by one constant per group"
        )
    if len(estimator.layer_.group_sizes) != 1:
        reasons.append(
            f"groups='marginal' over {len(estimator.layer_.group_sizes)} attributes sets "
            "one constraint per attribute, coupled through every row"
        )
    if reasons:
        raise NotImplementedError(
            "skfairlayer.dask solves inference='batch' over the whole collection from "
            "per-group sums for demographic parity (binary or multiclass outputs) with one "
            "grouping (intersectional groups, or one sensitive attribute). "
            "Here " + "; ".join(reasons)
            + ". Use inference='fitted' (the rule fitted in memory, applied partition by "
            "partition: every criterion), or the estimator's own methods on in-memory data."
        )
    if decisions and multiclass and estimator.decision == "parity":
        raise NotImplementedError(
            f"predict with decision='parity' and {len(estimator.classes_)} classes picks one "
            "class per row by a linear program with integer repair over the rows of the whole "
            "batch, which per-group sums do not determine: skfairlayer.dask does not compute "
            "it over a collection. Use decision='threshold' (the most probable class of the "
            "globally projected probabilities), inference='fitted' (the fitted decision rule, "
            "partition by partition), or predict on in-memory data."
        )


def _split(est, x, sf):
    """Base scores and raw groups of one partition, by the core's selector."""
    base_X, raw = est._columns().split(x, sf)
    if _rows(x) == 0:
        return np.zeros(0), raw
    return est._scores(est.estimator_, base_X), raw


def _batch_blocks(estimator, X, sensitive_features, persist_scores):
    """Delayed blocks of base scores and of raw groups, aligned, and rows per block.

    With ``persist_scores``, both are computed once (one base call per partition) and
    kept where they were computed (the workers' memory with a distributed client);
    every pass and the lazy output then read them. They are released when nothing
    refers to them any more (the returned output included).
    """
    _check_persist(persist_scores)
    blocks, sf_blocks, chunks = _partitions(estimator, X, sensitive_features)
    est = delayed(estimator, pure=True)
    pairs = [delayed(_split, nout=2, pure=True)(est, x, s)
             for x, s in zip(blocks, sf_blocks, strict=True)]
    scores, groups = [p[0] for p in pairs], [p[1] for p in pairs]
    if persist_scores:
        kept = dask.persist(*scores, *groups)
        scores, groups = list(kept[: len(scores)]), list(kept[len(scores) :])
    return scores, groups, chunks


def _check_persist(persist_scores):
    if not isinstance(persist_scores, bool | np.bool_):
        raise TypeError(f"persist_scores must be True or False. Got {persist_scores!r} instead.")


def _check_known(estimator, labels):
    """Raise the estimator's error for group labels it did not see at fit."""
    known = estimator.groups_[0] if estimator.groups == "marginal" else estimator.groups_
    keys = set(label_keys(known))
    unseen = [lab for lab in label_keys(labels) if lab not in keys]
    if unseen:
        raise unseen_groups_error(unseen, list(known))


def _batch_outputs(estimator, X, sensitive_features, tolerance, bounds, persist_scores):
    """Globally projected base scores (multiclass: class probabilities), or None when the
    collection has fewer than two groups."""
    scores, groups, chunks = _batch_blocks(estimator, X, sensitive_features, persist_scores)
    check = partial(_check_known, estimator)
    if is_classifier(estimator) and len(estimator.classes_) > 2:
        result = project_multiclass(scores, groups, chunks, len(estimator.classes_), tolerance,
                                    check_labels=check)
    else:
        result = project_blocks(scores, groups, chunks, tolerance, bounds, check_labels=check)
    return result.proba if len(result.groups) >= 2 else None


# ------------------------------------------------------------------ public functions


def predict_proba(estimator, X, *, sensitive_features=None, persist_scores=True):
    """Projected class probabilities of a Dask collection.

    Parameters
    ----------
    estimator : FairnessLayerClassifier
        Fitted (in memory).
    X : dask.array.Array of shape (n_samples, n_features) or dask DataFrame
        Samples; the base model scores each partition.
    sensitive_features : dask array / Series / DataFrame, default=None
        Group of each row, when the estimator does not read them from ``X``.
    persist_scores : bool, default=True
        With ``inference="batch"``: compute the base scores (and the groups) once
        and keep them in the cluster's memory (about 8 bytes a row and class,
        plus the group column) for the passes of the global solve and for the
        returned lazy output, which reads them; they are released when nothing
        refers to them (the output included). The base model then runs once
        per partition instead of once per pass (probabilities: the start's few
        partitions, then 2 passes, multiclass usually 4 to 6; decisions: 3
        passes). ``False`` keeps nothing:
        each pass scores the partitions again (for a base model cheaper than
        reading its scores back, or a collection too large for the cluster's
        memory). Ignored with ``inference="fitted"``.

    Returns
    -------
    proba : dask.array.Array of shape (n_samples, n_classes)
        Lazy projected probabilities of ``estimator.classes_``. With
        ``inference="fitted"`` (any criterion, grouping and number of classes):
        the estimator's fitted rule, the in-memory answer row by row. With
        ``inference="batch"`` (demographic parity, one grouping): the group
        means of the positive column (multiclass: of every class column)
        differ by at most ``tolerance`` over the whole collection (verified),
        the in-memory answer on the concatenated data to rounding. Multiclass:
        the start's few partitions, then usually 3 to 5 passes and the checked
        output.

    Raises
    ------
    NotImplementedError
        With ``inference="batch"``, for a problem not solved from per-group sums.
    """
    _check_estimator(estimator)
    _check_persist(persist_scores)
    if not is_classifier(estimator):
        raise TypeError(
            "predict_proba needs a FairnessLayerClassifier. "
            f"Got {type(estimator).__name__} instead; use skfairlayer.dask.predict."
        )
    if estimator.inference == "fitted":
        return _rowwise(estimator, "predict_proba", X, sensitive_features,
                        (len(estimator.classes_),), np.float64)
    _check_batch(estimator)
    p = _batch_outputs(estimator, X, sensitive_features, float(estimator.tolerance), (0.0, 1.0),
                       persist_scores)
    if p is None:  # fewer than two groups: the fitted rule, as in memory
        return predict_proba(_fitted_copy(estimator), X, sensitive_features=sensitive_features)
    if p.ndim == 2:  # multiclass: the projected class probabilities
        return p
    return p.map_blocks(lambda b: np.column_stack([1.0 - b, b]), new_axis=1,
                        chunks=(p.chunks[0], (2,)), dtype=np.float64)


def predict(estimator, X, *, sensitive_features=None, persist_scores=True):
    """Class labels (classifier) or projected predictions (regressor) of a Dask collection.

    Parameters
    ----------
    estimator : FairnessLayerClassifier or FairnessLayerRegressor
        Fitted (in memory).
    X : dask.array.Array of shape (n_samples, n_features) or dask DataFrame
        Samples.
    sensitive_features : dask array / Series / DataFrame, default=None
        Group of each row, when the estimator does not read them from ``X``.
    persist_scores : bool, default=True
        As in :func:`predict_proba` (parity decisions: the base scores serve
        3 passes). Ignored with ``inference="fitted"``.

    Returns
    -------
    y_pred : dask.array.Array of shape (n_samples,)
        Lazy labels from ``estimator.classes_`` or predictions. With
        ``inference="fitted"``: the estimator's fitted rule, row by row. With
        ``inference="batch"`` and a classifier with ``decision="parity"``: the
        decisions of maximal expected accuracy whose group selection rates
        differ by at most ``tolerance`` over the whole collection (the
        in-memory decisions on the concatenated data; binary only); with
        ``decision="threshold"`` the thresholded (multiclass: most probable
        class of the) globally projected probabilities; a regressor's
        predictions meet demographic parity over the whole collection.

    Raises
    ------
    NotImplementedError
        With ``inference="batch"``, for a problem not solved from per-group sums,
        and for multiclass parity decisions (``decision="parity"`` with more
        than two classes: an integer program over every row).
    """
    _check_estimator(estimator)
    _check_persist(persist_scores)
    classifier = is_classifier(estimator)
    if estimator.inference == "fitted":
        dtype = estimator.classes_.dtype if classifier else np.float64
        return _rowwise(estimator, "predict", X, sensitive_features, (), dtype)
    _check_batch(estimator, decisions=True)
    if not classifier:
        layer = estimator.layer_
        p = _batch_outputs(estimator, X, sensitive_features, layer.tolerance,
                           (layer.lower, layer.upper), persist_scores)
        if p is None:
            return predict(_fitted_copy(estimator), X, sensitive_features=sensitive_features)
        return p.map_blocks(estimator._unscale, dtype=np.float64)
    classes = estimator.classes_
    if estimator.decision == "threshold":
        p = _batch_outputs(estimator, X, sensitive_features, float(estimator.tolerance),
                           (0.0, 1.0), persist_scores)
        if p is None:
            return predict(_fitted_copy(estimator), X, sensitive_features=sensitive_features)
        # multiclass: the most probable class, as in memory
        labels = p.argmax(axis=1) if p.ndim == 2 else (p >= estimator.threshold).astype(int)
    else:
        scores, groups, _ = _batch_blocks(estimator, X, sensitive_features, persist_scores)
        result = decide_blocks(scores, groups, float(estimator.tolerance),
                               check_labels=lambda labels: _check_known(estimator, labels))
        if len(result.groups) < 2:
            return predict(_fitted_copy(estimator), X, sensitive_features=sensitive_features)
        labels = result.decisions
    return labels.map_blocks(lambda b: classes[b], dtype=classes.dtype)
