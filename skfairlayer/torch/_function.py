"""The fairness layer as an autograd function, a functional form and an ``nn.Module``.

The forward pass is the exact solve of :mod:`skfairlayer.torch._solve` (float64,
on the input's device). The backward pass, the forward-mode product and the
Jacobian are one map, the orthogonal projector onto the free, non-active
directions, written in differentiable torch operations (double backward works).
On the CPU one problem takes :mod:`skfairlayer.torch._direct`, a batch (leading
dimensions, or the mapped batch of one plain ``torch.func.vmap``)
:mod:`skfairlayer.torch._batched`; other transforms use explicit vmap rules, and
compiled CPU graphs the operators of :mod:`skfairlayer.torch._op`. Multiclass (``simplex=True``) and marginal
(``groups_mode="marginal"``) problems go to :mod:`skfairlayer.torch._structured`.
See ``docs/user_guide/torch.rst``.
"""

import math

import torch

from ..exceptions import InfeasibleProblemError, SolverError
from . import _batched, _direct, _op, _solve
from ._args import CRITERIA, cells, check_args, common_call
from ._structured import StructuredProject

__all__ = ["fairness_layer", "FairnessLayer", "CRITERIA", "VERIFY_TOL", "output_tolerance"]

#: Largest parity violation tolerated in a float64 answer (as in the numpy core).
VERIFY_TOL = 1e-9

#: Compiled graphs on the CPU call the solve as one opaque operator (``torch.ops.skfairlayer``):
#: the direct path for one problem of scalar bounds (verified with ``verify=True``, as in
#: eager mode), the batched solve for a batch with ``verify=True``. ``False`` traces the
#: synchronisation-free Newton graph instead, as on CUDA (and for a batch with ``verify=False``).
OPAQUE_COMPILED_CPU = True

def output_tolerance(dtype, scale=1.0):
    """Parity violation tolerated in an answer of ``dtype`` (rounding of the outputs).

    ``VERIFY_TOL`` (1e-9) in float64; ``8 * eps(dtype) * max(1, scale)`` in lower
    precision (float32: about 9.5e-7 for outputs in [0, 1]), since the exact float64
    solution is rounded to the output dtype.

    Parameters
    ----------
    dtype : torch.dtype
        Floating-point dtype of the outputs.
    scale : float, default=1.0
        Largest magnitude of the outputs (bounds or values).

    Returns
    -------
    tolerance : float

    Examples
    --------
    >>> import torch
    >>> from skfairlayer.torch import output_tolerance
    >>> output_tolerance(torch.float64)
    1e-09
    >>> round(output_tolerance(torch.float32), 9)
    9.54e-07
    """
    if dtype == torch.float64:
        return VERIFY_TOL
    return 8 * torch.finfo(dtype).eps * max(1.0, scale)


def _flat(x, batch_shape, n):
    """Bounds as (B, n), or (1, 1) for a scalar (broadcast, never materialised)."""
    if x.dim() == 0:
        return x.reshape(1, 1)
    return x.expand(*batch_shape, n).reshape(-1, n)


class _ProjectBase(torch.autograd.Function):
    """``p = argmin ||p - s||^2`` over the cells' parity bands and the bounds.

    No custom ``jvp``: the class ``torch.compile`` traces (Dynamo does not trace one).
    """

    @staticmethod
    def forward(s, cell, bands, lb, ub, eps, n_families, n_groups, check):
        batch, n = s.shape[:-1], s.shape[-1]
        c = n_families * n_groups
        if (s.device.type == "cpu" and lb.dim() == 0 and ub.dim() == 0
                and not torch.compiler.is_compiling()):  # the batched CPU path
            cell2 = cell.expand(*batch, n).reshape(-1, n)
            bands2 = None if bands is None else bands.expand(*batch, c, 2).reshape(-1, c, 2)
            out = _batched.solve(s.reshape(-1, n), cell2, bands2, float(lb), float(ub), eps,
                                 n_families, n_groups, bool(check), VERIFY_TOL)
            if out is not None:
                p, top, bottom, level = out
                return (p.reshape(s.shape), top.reshape(*batch, c), bottom.reshape(*batch, c),
                        level.reshape(*batch, n_families))
        lay = _layout(cell, bands, batch, n, n_families, n_groups)
        s2 = s.reshape(-1, n)
        lb2, ub2 = _flat(lb, batch, n), _flat(ub, batch, n)
        if check is not None and not torch.compiler.is_compiling():
            # Eager with verification: the fast path, certified by the same synchronisation
            # as the verification; the bracketed path if Newton has not settled.
            p, st = _solve.solve(s2, lb2, ub2, lay, eps, fast=True)
            if not _check(p, s2, st, lay, eps, check, final=False):
                p, st = _solve.solve(s2, lb2, ub2, lay, eps)
                _check(p, s2, st, lay, eps, check)
        elif torch.compiler.is_compiling():
            p, top, bottom, level = _solve.solve_guarded(s2, lb2, ub2, lay, eps)
            st = {"top": top, "bottom": bottom, "level": level}
        else:
            p, st = _solve.solve(s2, lb2, ub2, lay, eps)
        level = st["level"] if st["level"] is not None else p.new_zeros(p.shape[0], n_families)
        return (p.reshape(s.shape), st["top"].reshape(*batch, c),
                st["bottom"].reshape(*batch, c), level.reshape(*batch, n_families))

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, cell, bands, lb, ub, eps, n_families, n_groups, _ = inputs
        p, top, bottom, _ = output
        ctx.mark_non_differentiable(top, bottom, output[3])
        ctx.save_for_backward(p, cell, bands, lb, ub, top, bottom)
        ctx.save_for_forward(p, cell, bands, lb, ub, top, bottom)
        ctx.dims = (n_families, n_groups, bands is None)

    @staticmethod
    def backward(ctx, grad, *_):
        return _apply_jacobian(ctx, grad), None, None, None, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, s, cell, bands, lb, ub, eps, n_families, n_groups, check):
        args = _vmap_inputs(info, in_dims, s, cell, bands, lb, ub)
        # With no transform left (plain vmap, or the forward of jacfwd) nothing records
        # this call: solve directly; an outer grad level needs the autograd.Function.
        solve = _ProjectBase.forward if not _transforms_active() else _Project.apply
        out = solve(*args, eps, n_families, n_groups, check)
        return out, (0, 0, 0, 0)


def _vmap_inputs(info, in_dims, s, cell, bands, lb, ub):
    """The inputs of a vmapped call with the mapped dimension first (a batch of problems)."""
    size = info.batch_size

    def front(x, d):
        if x is None:
            return None
        if d is None:
            return x.unsqueeze(0).expand(size, *x.shape)
        return x.movedim(d, 0)

    s_d, cell_d, bands_d, lb_d, ub_d = in_dims[:5]
    s = front(s, s_d)
    cell = front(cell, cell_d)
    bands = front(bands, bands_d)
    lb = lb if lb_d is None else lb.movedim(lb_d, 0)
    ub = ub if ub_d is None else ub.movedim(ub_d, 0)
    if lb_d is not None and lb.dim() < s.dim():
        lb = lb.reshape(lb.shape + (1,) * (s.dim() - lb.dim()))
    if ub_d is not None and ub.dim() < s.dim():
        ub = ub.reshape(ub.shape + (1,) * (s.dim() - ub.dim()))
    return s, cell, bands, lb, ub


class _Project(_ProjectBase):
    """:class:`_ProjectBase` with forward mode (eager)."""

    @staticmethod
    def jvp(ctx, tangent, *_):
        return _apply_jacobian(ctx, tangent), None, None, None


class _Direct(torch.autograd.Function):
    """One problem of scalar bounds on the CPU: :func:`skfairlayer.torch._direct.solve`.

    ``lb``, ``ub`` are floats. The backward pass and forward mode apply
    ``_direct.jacobian_apply``. Problems the direct solve leaves (Newton not
    settled, a pinned family, an invalid code) go to the general solve, whose
    state gives the same tensors. Not used under ``torch.func`` transforms
    (:class:`_Project` has the ``vmap`` rule) nor while compiling. A ``ctx``
    forward: binding a ``setup_context`` signature costs more than the solve.
    """

    @staticmethod
    def forward(ctx, s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset):
        grad = ctx.needs_input_grad[0]
        res, idx = direct_solve(s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset, grad)
        p, res.p = res.p, None  # the context keeps the output through the saved tensors only
        ctx.save_for_forward(p, idx)  # forward mode: the Jacobian's parts when asked
        ctx.direct = res
        if grad:  # the parts now (the direct solve has them): the backward pass only applies them
            ctx.save_for_backward(*(torch.from_numpy(a) for a in res.backward_parts(p, idx)))
        res.onehot = None
        return p

    @staticmethod
    def backward(ctx, grad):
        free, onehot, matrix = ctx.saved_tensors
        if torch.is_grad_enabled() or grad.dtype != torch.float64:  # double backward: torch ops
            return _direct.jacobian_apply(grad, free, onehot, matrix), *([None] * 9)
        g = grad.detach().resolve_neg().numpy()
        out = _direct.jacobian_apply_numpy(g, free.numpy(), onehot.numpy(), matrix.numpy())
        return torch.from_numpy(out), *([None] * 9)

    @staticmethod
    def jvp(ctx, tangent, *_):
        p, idx = ctx.saved_tensors
        parts = ctx.direct.backward_parts(p.detach(), idx)
        return _direct.jacobian_apply(tangent, *(torch.from_numpy(a) for a in parts))


class _DirectTraced(torch.autograd.Function):
    """:class:`_Direct` in a compiled graph: the verified solve as one opaque node, traced.

    Dynamo traces this class: the forward pass is the operator
    ``skfairlayer::direct_parts`` (the outputs and the Jacobian's parts, no autograd of
    its own), the backward pass ``J g = free g - (M U g) U`` in torch operations, which
    the compiler fuses. Cheaper per call than an operator with a registered autograd
    (``torch.library.custom_op``): no Python dispatch wraps the call.
    """

    @staticmethod
    def forward(ctx, s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset):
        p, free, U, matrix = _op.direct_parts(s, cell, bands, lb, ub, eps, n_families, n_groups,
                                              check, offset)
        ctx.save_for_backward(free, U, matrix)
        return p

    @staticmethod
    def backward(ctx, grad):
        free, U, matrix = ctx.saved_tensors
        # _direct.jacobian_apply as sums (the compiler fuses them into one pass; few slots),
        # written here: a function of another module adds Python guards on its globals
        corr = (matrix * (U * grad).sum(1)).sum(1)
        return grad * free - (corr.unsqueeze(1) * U).sum(0), *([None] * 9)


def direct_solve(s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset, parts=False):
    """:func:`skfairlayer.torch._direct.solve`, or the general solve where it leaves; ``(Direct, slots)``.

    ``parts``: the direct solve computes the Jacobian's parts at once (a backward pass follows).
    """
    idx = cell if offset == 0 else cell + offset
    band_list = None
    if bands is not None:
        band_list = [(0.0, 0.0)] * offset + [tuple(b) for b in bands.tolist()]
    res = _direct.solve(s, idx, n_families * n_groups + offset, n_groups, offset, lb, ub, eps,
                        band_list, bool(check), VERIFY_TOL if check is not None else math.inf, parts)
    if res is None:
        res = _general_direct(s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset)
    return res, idx


def _transforms_active():
    """Whether a ``torch.func`` transform (vmap, grad, jacrev, ...) is tracing this call."""
    return getattr(torch._C, "_are_functorch_transforms_active", lambda: True)()


def _mark_invalid(groups, n_groups):
    return torch.where((groups >= 0) & (groups < n_groups), groups, torch.full_like(groups, -2))


def _general_direct(s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset):
    """The general solve of one problem, with its state as ``_Direct``'s outputs."""
    if offset == 0:
        cell = _mark_invalid(cell, n_groups)
    lb, ub = (torch.tensor(b, dtype=s.dtype) for b in (lb, ub))
    p, top, bottom, _ = _ProjectBase.forward(s, cell, bands, lb, ub, eps, n_families, n_groups, check)
    lay = _layout(cell, bands, (), s.shape[-1], n_families, n_groups)
    free = ((p > lb) & (p < ub)).to(p.dtype)
    counts = lay.sums(torch.ones_like(s)[None]).tolist()
    nf = lay.sums(free[None]).tolist()
    active = (top | bottom).tolist()
    pad = [0.0] * offset
    fams = _direct._families(n_families * n_groups, n_groups, offset)
    matrix = _direct.jacobian_matrix(pad + counts, pad + nf, [False] * offset + active, fams, bands is None)
    return _direct.Direct(p, None, None, None, None, lb, ub, parts=(free, torch.from_numpy(matrix)))


def _layout(cell, bands, batch, n, n_families, n_groups):
    cell2 = cell.expand(*batch, n).reshape(-1, n)
    fixed = None
    if bands is not None:
        fixed = bands.expand(*batch, n_families * n_groups, 2).reshape(-1, n_families * n_groups, 2)
    return _solve.Layout(cell2, n_families, n_groups, fixed)


def _apply_jacobian(ctx, g):
    p, cell, bands, lb, ub, top, bottom = ctx.saved_tensors
    n_families, n_groups, shared = ctx.dims
    batch, n = p.shape[:-1], p.shape[-1]
    lay = _layout(cell, bands, batch, n, n_families, n_groups)
    counts = lay.sums(torch.ones_like(p.reshape(-1, n)))
    state = {
        "lb": _flat(lb, batch, n), "ub": _flat(ub, batch, n), "counts": counts,
        "top": top.reshape(-1), "bottom": bottom.reshape(-1), "level": True if shared else None,
    }
    out = _solve.jacobian_apply(g.reshape(-1, n), p.reshape(-1, n), state, lay)
    return out.reshape(g.shape)


def _check(p, s, st, lay, eps, strict, final=True):
    """Verify the float64 answer (one host synchronisation); raise if it fails.

    With ``final=False`` (the fast path) return False instead of raising when Newton
    has not settled or the answer fails, so that the bracketed path can answer.
    """
    invalid = (lay.cell < -1).any()
    viol = _solve.violation(p, st, lay, eps).amax()
    box = torch.maximum(st["lb"] - p, p - st["ub"]).amax()
    finite = torch.isfinite(p).all()
    missing = clamped = torch.zeros((), dtype=torch.bool, device=p.device)
    if strict:  # a missing group, or an active one with every output at a bound
        missing = (st["counts"] == 0).any()
        z = s - lay.per_row(st["shift"])
        nfree = lay.sums(((z > st["lb"]) & (z < st["ub"])).to(p.dtype))
        clamped = ((st["top"] | st["bottom"]) & (nfree == 0)).any()
    moved = st["moved"] if st["moved"] is not None else p.new_zeros(())
    scale = 1e-12 * (1.0 + s.abs().amax())
    flags = torch.stack([viol, box, finite.to(p.dtype), missing.to(p.dtype), clamped.to(p.dtype),
                         (moved > scale).to(p.dtype), invalid.to(p.dtype)])
    viol, box, finite, missing, clamped, unsettled, invalid = flags.tolist()  # one synchronisation
    if invalid:
        raise ValueError(
            "groups must be integer codes in [0, n_groups) and labels 0/1 for this criterion. "
            "Got a code or label out of range instead."
        )
    if not final and (unsettled or not finite or viol > VERIFY_TOL or box > 0):
        return False
    if strict and missing:
        raise ValueError(
            "A group has no row in this batch (or, with labels, no row of a label the "
            "criterion conditions on); strict=True forbids it. Use a stratified sampler "
            "(skfairlayer.torch.GroupStratifiedBatchSampler) or strict=False, which drops the "
            "missing group from the constraints as skfairlayer.project does."
        )
    if strict and clamped:
        raise ValueError(
            "An active group has every output at a bound (fully clamped), where the layer "
            "is not differentiable; strict=True forbids it. Use strict=False to proceed."
        )
    if not finite:
        raise SolverError("The torch fairness layer produced non-finite outputs; are the scores finite?")
    if viol > VERIFY_TOL or box > 0:
        if _infeasible(st, lay, eps):
            raise InfeasibleProblemError(
                "No outputs within the bounds meet the tolerance: some group's bounds keep "
                "its mean out of reach of the others. Widen the bounds or the tolerance."
            )
        raise SolverError(
            f"The torch fairness layer's answer violates parity by {viol:.3g} "
            f"(> {VERIFY_TOL:g}) or the bounds by {box:.3g}. This is a bug; please report it."
        )
    return True


def _infeasible(st, lay, eps):
    low, high, present = st["low"], st["high"], st["counts"] > 0
    if lay.fixed_bands is not None:
        lo, hi = lay.fixed_bands[..., 0].reshape(-1), lay.fixed_bands[..., 1].reshape(-1)
        return bool((present & ((low > hi) | (high < lo))).any())
    big = math.inf
    fl = torch.where(present, low, -big).reshape(lay.B * lay.F, lay.G).amax(1)
    fh = torch.where(present, high, big).reshape(lay.B * lay.F, lay.G).amin(1)
    return bool((fl - fh > eps + 1e-12).any())


def fairness_layer(
    scores,
    groups,
    n_groups,
    *,
    labels=None,
    tolerance=0.01,
    criterion="demographic_parity",
    bounds=(0.0, 1.0),
    verify=True,
    strict=False,
    simplex=False,
    groups_mode="intersectional",
):
    """Project a batch of outputs onto group parity (differentiable, on the input's device).

    Parameters
    ----------
    scores : Tensor of shape (..., n_samples), or (..., n_samples, n_classes) with ``simplex``
        Outputs to project (probabilities, logits or regression outputs); leading
        dimensions are independent problems.
    groups : LongTensor of shape (n_samples,) or (..., n_samples)
        Group code of each row in ``[0, n_groups)`` (encode several sensitive
        attributes intersectionally, e.g. ``a * n_b + b``). With
        ``groups_mode="marginal"``: shape (n_samples, n_attributes) or
        (..., n_samples, n_attributes), one code per row and attribute.
    n_groups : int or sequence of int
        Number of groups; with ``groups_mode="marginal"`` one number per attribute
        (an int: the same for every attribute).
    labels : Tensor of shape (n_samples,) or (..., n_samples), default=None
        0/1 labels for ``"equal_opportunity"`` and ``"equalized_odds"``; labels
        (0/1 or real targets) for ``"mean_residual"``.
    tolerance : float, default=0.01
        Largest allowed difference between two group means (for
        ``"mean_residual"``: largest allowed mean residual of a group).
    criterion : str, default="demographic_parity"
        One of ``"demographic_parity"``, ``"equal_opportunity"``, ``"equalized_odds"``,
        ``"mean_residual"``.
    bounds : tuple of (float, Tensor or None), default=(0.0, 1.0)
        Lower and upper bounds of the outputs; ``None`` (or an infinite value) for
        none, e.g. ``(None, None)`` for logits or regression outputs.
    verify : bool, default=True
        Check the answer (one host synchronisation per call) and raise
        :class:`~skfairlayer.SolverError` or
        :class:`~skfairlayer.InfeasibleProblemError` if it fails. Skipped while
        ``torch.compile`` traces; set ``False`` to keep the call free of
        synchronisation.
    strict : bool, default=False
        With ``verify``: raise ``ValueError`` when a group has no row in the batch (by
        default it is left out of the constraints, as :func:`skfairlayer.project` does)
        or when an active group has every output at a bound.
    simplex : bool, default=False
        Multiclass demographic parity: each row of ``scores`` (last dimension) is a
        probability vector, each output row is on the probability simplex, and in
        every class column the group means agree within ``tolerance``. ``bounds``
        does not apply (leave the default).
    groups_mode : {"intersectional", "marginal"}, default="intersectional"
        ``"marginal"``: every attribute's groups meet demographic parity at once
        (one family of constraints per column of ``groups``), as
        ``skfairlayer.project(..., groups="marginal")``.

    Returns
    -------
    outputs : Tensor of the shape and dtype of ``scores``

    Examples
    --------
    >>> import torch
    >>> from skfairlayer.torch import fairness_layer
    >>> s = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.3, 0.4], dtype=torch.float64)
    >>> g = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> fairness_layer(s, g, 2, tolerance=0.1)
    tensor([0.7000, 0.6000, 0.5000, 0.4000, 0.5000, 0.6000], dtype=torch.float64)
    """
    if (labels is None and criterion == "demographic_parity" and not simplex
            and groups_mode == "intersectional" and not torch.compiler.is_compiling()):
        box = common_call(scores, groups, n_groups, tolerance, bounds)
        if box is not None and not _transforms_active():
            # the common eager call: the direct path at once (it passes every check below)
            return _Direct.apply(scores, groups, None, *box, tolerance, 1, n_groups,
                                 bool(strict) if verify else None, 0)
    check_args(scores, groups, tolerance, criterion, n_groups, simplex, groups_mode)
    tolerance = float(tolerance)
    groups = groups.to(device=scores.device, dtype=torch.int64)
    if simplex or groups_mode == "marginal":
        return _structured(scores, groups, n_groups, tolerance, labels, bounds, strict, simplex)
    if labels is not None:
        labels = torch.as_tensor(labels, device=scores.device)
    s = scores.to(torch.float64)
    check = bool(strict) if verify else None
    compiling = torch.compiler.is_compiling()
    if not compiling and _transforms_active():
        unbatched = _op.unbatch(s, groups, labels, *bounds)
        if unbatched is not None:  # one plain vmap: the batch's forward pass
            return _vmapped(unbatched, scores, groups, labels, criterion, n_groups, tolerance,
                            bounds, check)
    opaque = s.device.type == "cpu" and (not compiling or (OPAQUE_COMPILED_CPU and verify))
    direct = s.device.type == "cpu" and (not compiling or OPAQUE_COMPILED_CPU)
    if (direct and s.dim() == 1 and groups.dim() == 1
            and all(b is None or isinstance(b, (int, float)) for b in bounds)
            and (labels is None or labels.dim() <= 1) and (compiling or not _transforms_active())):
        return _direct_call(s, groups, labels, criterion, n_groups, tolerance, bounds, check,
                            scores.dtype, compiling)
    lb, ub = (_bound(b, default, scores) for b, default in zip(bounds, (-math.inf, math.inf), strict=True))
    cell, n_families, bands = cells(groups, labels, criterion, n_groups, tolerance)
    code = -1 if check is None else int(check)
    grad = None if compiling or not _transforms_active() else _op.vmap_only(s)
    if opaque and compiling or grad:  # a compiled graph's node, or vmap with outer autograd
        p = _op.project(s, cell, bands, lb, ub, tolerance, n_families, n_groups, code)[0]
    elif grad is not None:  # vmapped problems, forward only: the cheapest dispatch
        p = _op.solve(s, cell, bands, lb, ub, tolerance, n_families, n_groups, code)
    else:
        func = _ProjectBase if compiling else _Project
        p = func.apply(s, cell, bands, lb, ub, tolerance, n_families, n_groups, check)[0]
    if scores.dtype == torch.float64:
        return p
    out = p.to(scores.dtype)
    # rounding to the output dtype must not leave the bounds
    return torch.minimum(torch.maximum(out, lb.to(out.dtype)), ub.to(out.dtype))


def _vmapped(unbatched, scores, groups, labels, criterion, n_groups, tolerance, bounds, check):
    """The forward pass of a batch of vmapped problems (``_op.unbatch``), mapped back."""
    s, rebatch = unbatched
    if (criterion == "demographic_parity" and s.device.type == "cpu" and groups.dim() == 1
            and all(b is None or isinstance(b, (int, float)) for b in bounds)):
        codes = groups.numpy()  # valid codes are the cells: the batched path alone
        lb, ub = (d if b is None else float(b) for b, d in zip(bounds, (-math.inf, math.inf), strict=True))
        if codes.size and codes.min() >= 0 and codes.max() < n_groups:
            n = s.shape[-1]
            out = _batched.solve(s.reshape(-1, n), groups.expand(s.shape).reshape(-1, n), None,
                                 lb, ub, tolerance, 1, n_groups, bool(check), VERIFY_TOL)
            if out is not None:
                p = rebatch(out[0].reshape(s.shape))
                return p if scores.dtype == torch.float64 else p.to(scores.dtype).clamp(lb, ub)
    lb, ub = (_bound(b, default, scores) for b, default in zip(bounds, (-math.inf, math.inf), strict=True))
    cell, n_families, bands = cells(groups, labels, criterion, n_groups, tolerance)
    p = rebatch(_ProjectBase.forward(s, cell, bands, lb, ub, tolerance, n_families, n_groups, check)[0])
    if scores.dtype == torch.float64:
        return p
    return torch.minimum(torch.maximum(p.to(scores.dtype), lb.to(scores.dtype)), ub.to(scores.dtype))


def _direct_call(s, groups, labels, criterion, n_groups, tolerance, bounds, check, dtype, compiling):
    """One CPU problem of scalar bounds through :class:`_Direct`, cast back to ``dtype``.

    In a compiled graph: :class:`_DirectTraced`, one opaque node.
    """
    lb, ub = (-math.inf if bounds[0] is None else float(bounds[0]),
              math.inf if bounds[1] is None else float(bounds[1]))
    if criterion == "demographic_parity":  # the codes are the cells (checked by the solve)
        cell, n_families, bands, offset = groups, 1, None, 0
    else:
        cell, n_families, bands = cells(groups, labels, criterion, n_groups, tolerance)
        offset = 1
    if compiling:
        p = _DirectTraced.apply(s, cell, bands, lb, ub, tolerance, n_families, n_groups,
                                -1 if check is None else int(check), offset)
    else:
        p = _Direct.apply(s, cell, bands, lb, ub, tolerance, n_families, n_groups, check, offset)
    # rounding to the output dtype must not leave the bounds
    return p if dtype == torch.float64 else p.to(dtype).clamp(lb, ub)


def _structured(scores, groups, n_groups, tolerance, labels, bounds, strict, simplex):
    """The multiclass or marginal layer: always verified (its solve synchronises anyway)."""
    if labels is not None:
        raise ValueError("labels are not used by demographic parity; pass labels=None.")
    if simplex:
        if any(not isinstance(b, (int, float)) or float(b) != d for b, d in zip(bounds, (0.0, 1.0), strict=True)):
            raise ValueError(
                "bounds do not apply with simplex=True (output rows are probability vectors); "
                f"leave the default (0.0, 1.0). Got {bounds!r} instead."
            )
        sizes = (int(n_groups),)
    else:
        n_attr = groups.shape[-1]
        sizes = tuple(n_groups) if isinstance(n_groups, (tuple, list)) else (n_groups,) * n_attr
        if len(sizes) != n_attr:
            raise ValueError(
                f"n_groups must give one number per attribute ({n_attr} columns of groups). "
                f"Got {n_groups!r} instead."
            )
    limit = torch.tensor(sizes, device=groups.device)
    if bool(((groups < 0) | (groups >= limit)).any()):
        raise ValueError(
            f"groups must be integer codes in [0, n_groups) (n_groups={n_groups!r}). "
            "Got a code out of range instead."
        )
    lb, ub = (_bound(b, default, scores) for b, default in zip(bounds, (-math.inf, math.inf), strict=True))
    kind = "simplex" if simplex else "marginal"
    p = StructuredProject.apply(scores.to(torch.float64), groups, lb, ub, tolerance, kind, sizes,
                                bool(strict))[0]
    if scores.dtype == torch.float64:
        return p
    out = p.to(scores.dtype)
    if simplex:
        return out
    return torch.minimum(torch.maximum(out, lb.to(out.dtype)), ub.to(out.dtype))


def _bound(value, default, scores):
    if value is None:
        value = default
    return torch.as_tensor(value, dtype=torch.float64, device=scores.device)


class FairnessLayer(torch.nn.Module):
    """The fairness layer as the last module of a network.

    Projects each batch of outputs onto the closest outputs (squared distance)
    whose group means agree within ``tolerance`` (see :func:`fairness_layer`).

    Parameters
    ----------
    n_groups : int or tuple of int
        Number of groups (codes ``0 .. n_groups - 1``); one per attribute with
        ``groups_mode="marginal"``.
    tolerance : float, default=0.01
        Largest allowed difference between two group means.
    criterion : str, default="demographic_parity"
        See :func:`fairness_layer`.
    bounds : tuple, default=(0.0, 1.0)
        Output bounds; ``(None, None)`` for logits or regression outputs.
    verify : bool, default=True
        Verify every answer (one synchronisation per call).
    strict : bool, default=False
        Raise on a missing or fully clamped group.
    simplex : bool, default=False
        Multiclass outputs: rows on the probability simplex (see :func:`fairness_layer`).
    groups_mode : {"intersectional", "marginal"}, default="intersectional"
        ``"marginal"``: groups of shape (n_samples, n_attributes), every attribute at once.

    Examples
    --------
    >>> import torch
    >>> from skfairlayer.torch import FairnessLayer
    >>> layer = FairnessLayer(n_groups=2, tolerance=0.0)
    >>> s = torch.tensor([0.9, 0.7, 0.2, 0.4], dtype=torch.float64)
    >>> layer(s, torch.tensor([0, 0, 1, 1]))
    tensor([0.6500, 0.4500, 0.4500, 0.6500], dtype=torch.float64)
    """

    def __init__(self, n_groups, tolerance=0.01, criterion="demographic_parity",
                 bounds=(0.0, 1.0), verify=True, strict=False, simplex=False,
                 groups_mode="intersectional"):
        super().__init__()
        self.simplex = simplex
        self.groups_mode = groups_mode
        self.n_groups = n_groups
        self.tolerance = tolerance
        self.criterion = criterion
        self.bounds = bounds
        self.verify = verify
        self.strict = strict

    def forward(self, scores, groups, labels=None):
        """Project a batch of outputs.

        Parameters
        ----------
        scores : Tensor of shape (..., n_samples), or (..., n_samples, n_classes) with ``simplex``
            Outputs to project.
        groups : LongTensor of shape (n_samples,) or (..., n_samples)
            Group code of each row; (..., n_samples, n_attributes) for marginal groups.
        labels : Tensor of shape (n_samples,) or (..., n_samples), default=None
            Labels, for the label-conditioned criteria.

        Returns
        -------
        outputs : Tensor of the shape and dtype of ``scores``
        """
        return fairness_layer(
            scores, groups, self.n_groups, labels=labels, tolerance=self.tolerance,
            criterion=self.criterion, bounds=self.bounds, verify=self.verify, strict=self.strict,
            simplex=self.simplex, groups_mode=self.groups_mode,
        )

    def extra_repr(self):
        """The layer's settings, shown in its ``repr``.

        Returns
        -------
        text : str
        """
        text = (f"n_groups={self.n_groups}, tolerance={self.tolerance}, "
                f"criterion={self.criterion!r}, bounds={self.bounds}")
        if self.simplex:
            text += ", simplex=True"
        if self.groups_mode != "intersectional":
            text += f", groups_mode={self.groups_mode!r}"
        return text
