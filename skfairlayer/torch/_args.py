"""The layer's argument checks, and the cells of its criteria (a code per row, families, bands).

The common eager call (one float64 problem on the CPU, demographic parity, scalar
bounds) is recognised by :func:`common_call` from the arguments' types alone, before
the general checks of :func:`check_args`, all of which it passes.
"""

import math

import torch

from . import _solve

__all__ = ["CRITERIA", "cells", "check_args", "common_call"]

CRITERIA = ("demographic_parity", "equal_opportunity", "equalized_odds", "mean_residual")


def common_call(scores, groups, n_groups, tolerance, bounds):
    """``(lb, ub)`` (floats) for the common eager call, or None for any other.

    One float64 CPU problem of int64 CPU codes (one per row), an int ``n_groups``,
    a float tolerance and bounds of floats or None: every check of :func:`check_args`
    passes. The caller checks the criterion, the labels and the transforms.
    """
    if not (type(scores) is torch.Tensor and type(groups) is torch.Tensor
            and scores.dtype is torch.float64 and groups.dtype is torch.int64
            and scores.dim() == 1 and groups.dim() == 1 and scores.shape == groups.shape
            and scores.is_cpu and groups.is_cpu
            and type(n_groups) is int and n_groups >= 1
            and type(tolerance) is float and 0 <= tolerance < math.inf
            and type(bounds) in (tuple, list) and len(bounds) == 2):
        return None
    lb, ub = bounds
    if not (lb is None or type(lb) in (float, int)) or not (ub is None or type(ub) in (float, int)):
        return None
    return -math.inf if lb is None else float(lb), math.inf if ub is None else float(ub)


def cells(groups, labels, criterion, n_groups, tolerance):
    """Cell of each row (``-2`` marks an invalid group code or label), families, fixed bands."""
    bad = torch.full_like(groups, -2)
    groups = torch.where((groups >= 0) & (groups < n_groups), groups, bad)
    if criterion == "demographic_parity":
        return groups, 1, None
    if labels is None:
        raise ValueError(
            f"criterion {criterion!r} needs labels in skfairlayer.torch (the label-free "
            "plug-in form is only in skfairlayer.project); pass labels=y."
        )
    if criterion in ("equal_opportunity", "equalized_odds"):
        binary = (labels == 0) | (labels == 1)
        if criterion == "equal_opportunity":  # the negatives are in no cell
            others, n_families = torch.full_like(groups, -1), 1
        else:  # family 0: Y = 1, family 1: Y = 0 (the order of skfairlayer.project)
            others, n_families = groups + n_groups, 2
        cell = torch.where(labels == 1, groups, torch.where(groups >= 0, others, bad))
        return torch.where(binary, cell, bad), n_families, None
    # mean residual: each group's mean within tolerance of its label mean
    y = labels.to(torch.float64)
    batch = torch.broadcast_shapes(groups.shape, y.shape)
    g2 = groups.expand(batch).reshape(-1, batch[-1])
    lay = _solve.Layout(g2, 1, n_groups)
    y2 = y.expand(batch).reshape(-1, batch[-1])
    n = lay.sums(torch.ones_like(y2)).clamp_min(1.0)
    ybar = lay.sums(y2) / n
    bands = torch.stack([ybar - tolerance, ybar + tolerance], -1)
    return groups, 1, bands.reshape(*batch[:-1], n_groups, 2)


def check_args(scores, groups, tolerance, criterion, n_groups, simplex, groups_mode):
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point torch.Tensor. Got {type(scores)!r} instead.")
    if not isinstance(groups, torch.Tensor) or groups.dtype not in (torch.int32, torch.int64):
        raise TypeError(
            "groups must be an integer torch.Tensor of group codes in [0, n_groups). "
            f"Got {getattr(groups, 'dtype', type(groups))!r} instead."
        )
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}. Got {criterion!r} instead.")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < math.inf):  # NaN fails too
        raise ValueError(f"tolerance must be a finite float >= 0. Got {tolerance!r} instead.")
    if groups_mode not in ("intersectional", "marginal"):
        raise ValueError(
            f"groups_mode must be 'intersectional' or 'marginal'. Got {groups_mode!r} instead."
        )
    sizes = n_groups if isinstance(n_groups, (tuple, list)) else (n_groups,)
    if not sizes or not all(isinstance(k, int) and k >= 1 for k in sizes):
        raise ValueError(
            f"n_groups must be a positive int (or, for marginal groups, a sequence of them). "
            f"Got {n_groups!r} instead."
        )
    if simplex and (scores.dim() < 2 or groups.dim() == 0 or groups.shape[-1] != scores.shape[-2]):
        raise ValueError(
            "With simplex=True, scores are probabilities of shape (..., n_samples, n_classes) "
            "and groups hold one code per row, of shape (n_samples,) or (..., n_samples). Got "
            f"scores of shape {tuple(scores.shape)} and groups of shape {tuple(groups.shape)} instead."
        )
    if groups_mode == "marginal" and (groups.dim() < 2 or groups.shape[-2] != scores.shape[-1]):
        raise ValueError(
            "With groups_mode='marginal', groups hold one code per row and attribute, of shape "
            f"(n_samples, n_attributes) or (..., n_samples, n_attributes) ({scores.shape[-1]} rows). "
            f"Got groups of shape {tuple(groups.shape)} instead."
        )
    if not simplex and groups_mode == "intersectional" and (
        groups.dim() == 0 or groups.shape[-1] != scores.shape[-1]
    ):
        raise ValueError(
            "groups must hold one code per row, along the last dimension of scores "
            f"({scores.shape[-1]} rows). Got groups of shape {tuple(groups.shape)} instead. "
            "For multiclass outputs (rows on the simplex) pass simplex=True with scores of shape "
            "(..., n_samples, n_classes); for marginal parity over several attributes pass groups "
            "of shape (n_samples, n_attributes) with groups_mode='marginal'."
        )
    if len(sizes) > 1 and groups_mode != "marginal":
        raise ValueError(f"n_groups must be an int unless groups_mode='marginal'. Got {n_groups!r} instead.")
    if (simplex or groups_mode == "marginal") and criterion != "demographic_parity":
        raise ValueError(
            "Multiclass (simplex=True) and marginal (groups_mode='marginal') layers support "
            f"criterion='demographic_parity' only. Got {criterion!r} instead; use "
            "skfairlayer.project for the other criteria."
        )
    if simplex and groups_mode == "marginal":
        raise ValueError(
            "simplex=True with groups_mode='marginal' is not supported by skfairlayer.torch; "
            "encode the attributes intersectionally (one code per combination) or use "
            "skfairlayer.project."
        )
