"""The layer's solve as one opaque operator, ``torch.ops.skfairlayer.project``.

Used where an ``autograd.Function`` costs more than the solve: under a plain
``torch.func.vmap`` (the operator's vmap rule solves the mapped problems as one
batch) and in ``torch.compile``'d graphs on the CPU (the graph calls the eager,
verified solve as one node, with no graph break and no retrace). The backward
pass is the projector of :func:`skfairlayer.torch._solve.jacobian_apply`, written
in differentiable torch operations (double backward). Forward mode and the
``grad``-type transforms use :class:`skfairlayer.torch._function._Project`
instead. One problem of scalar bounds in a compiled graph calls
``skfairlayer::direct_parts`` (no autograd of its own) inside the traced
:class:`skfairlayer.torch._function._DirectTraced`. See ``docs/user_guide/torch.rst``.
"""

import torch

__all__ = ["direct_parts", "project", "solve", "unbatch", "vmap_only"]


_SCHEMA = ("(Tensor s, Tensor cell, Tensor? bands, Tensor lb, Tensor ub, float eps, "
           "int n_families, int n_groups, int check)")


def _impl(s, cell, bands, lb, ub, eps, n_families, n_groups, check):
    from ._function import _ProjectBase

    return _ProjectBase.forward(s, cell, bands, lb, ub, eps, n_families, n_groups,
                                None if check < 0 else bool(check))


def _fake(s, cell, bands, lb, ub, eps, n_families, n_groups, check):
    batch = s.shape[:-1]
    flag = torch.empty((*batch, n_families * n_groups), dtype=torch.bool, device=s.device)
    return (torch.empty_like(s), flag, torch.empty_like(flag),
            s.new_empty((*batch, n_families)))


def _setup_context(ctx, inputs, output):
    _, cell, bands, lb, ub, _, n_families, n_groups, _ = inputs
    p, top, bottom, _ = output
    ctx.save_for_backward(p, cell, bands, lb, ub, top, bottom)
    ctx.dims = (n_families, n_groups, bands is None)


def _backward(ctx, grad, *_):
    from ._function import _apply_jacobian

    return _apply_jacobian(ctx, grad), None, None, None, None, None, None, None, None


def _vmap_inputs(info, in_dims, s, cell, bands, lb, ub):
    from ._function import _vmap_inputs

    return _vmap_inputs(info, in_dims, s, cell, bands, lb, ub)


def _project_vmap(info, in_dims, s, cell, bands, lb, ub, eps, n_families, n_groups, check):
    args = _vmap_inputs(info, in_dims, s, cell, bands, lb, ub)
    return project(*args, eps, n_families, n_groups, check), (0, 0, 0, 0)


def _solve_vmap(info, in_dims, s, cell, bands, lb, ub, eps, n_families, n_groups, check):
    args = _vmap_inputs(info, in_dims, s, cell, bands, lb, ub)
    return solve(*args, eps, n_families, n_groups, check), 0


#: The solve with its backward pass: outputs, active cells (top, bottom) and levels.
project = torch.library.custom_op("skfairlayer::project", _impl, mutates_args=(),
                                  schema=_SCHEMA + " -> (Tensor, Tensor, Tensor, Tensor)")
project.register_fake(_fake)
project.register_autograd(_backward, setup_context=_setup_context)
project.register_vmap(_project_vmap)

#: The outputs alone, without autograd (a vmapped forward pass: the cheapest dispatch).
solve = torch.library.custom_op("skfairlayer::solve", lambda *args: _impl(*args)[0],
                                mutates_args=(), schema=_SCHEMA + " -> Tensor")
solve.register_fake(lambda s, *args: torch.empty_like(s))
solve.register_vmap(_solve_vmap)


def _parts_impl(s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset):
    from ._function import direct_solve

    res, idx = direct_solve(s, cell, bands, lb, ub, eps, n_families, n_groups,
                            None if check < 0 else bool(check), offset)
    free, U, matrix = res.jacobian(res.p.numpy(), idx.numpy())
    return res.p, *(torch.from_numpy(a) for a in (free, U, matrix))


def _parts_fake(s, cell, bands, lb, ub, eps, n_families, n_groups, check, offset):
    slots, n = n_families * n_groups + offset, s.shape[-1]
    return torch.empty_like(s), s.new_empty((n,)), s.new_empty((slots, n)), s.new_empty((slots, slots))


#: The operators below are declared on a ``torch.library.Library`` (kept by this module: the
#: registration lives as long as it) with a CPU kernel and a fake kernel only: no Python
#: autograd or device dispatch wraps the call, which in a compiled graph costs more than a
#: small solve. Their derivative is given by :class:`skfairlayer.torch._function._DirectTraced`.
_LIB = torch.library.Library("skfairlayer", "FRAGMENT")
_LIB.define("direct_parts(Tensor s, Tensor cell, Tensor? bands, float lb, float ub, float eps, "
            "int n_families, int n_groups, int check, int offset) -> (Tensor, Tensor, Tensor, Tensor)")
_LIB.impl("direct_parts", _parts_impl, "CPU")
torch.library.register_fake("skfairlayer::direct_parts", _parts_fake, lib=_LIB)

#: One CPU problem of scalar bounds (the direct path), verified: the outputs and the parts of
#: its Jacobian ``(free, U, M)`` (see ``_direct.Direct.jacobian``), without autograd.
direct_parts = torch.ops.skfairlayer.direct_parts.default


def vmap_only(s):
    """Under ``vmap`` transforms only (no grad, jvp, ...): whether ``s`` needs a gradient; else None.

    Under ``vmap`` a tensor's ``requires_grad`` is that of its unbatched value.
    """
    functorch = torch._C._functorch
    try:
        vmap = functorch.TransformType.Vmap
        if not all(level.key() == vmap for level in functorch.get_interpreter_stack()):
            return None
        while functorch.is_batchedtensor(s):
            s = functorch.get_unwrapped(s)
    except AttributeError:  # pragma: no cover - another torch version: the autograd.Function
        return None
    return s.requires_grad and torch.is_grad_enabled()


def unbatch(s, *others):
    """Under one plain ``vmap`` with only ``s`` mapped: ``(its value, mapped dimension first; level)``.

    None in every other case (nested or other transforms, another mapped input, a
    gradient to record), where the operators' rules answer. The rule of one
    ``vmap`` level without their dispatch (which costs more than a small batch's solve).
    """
    functorch = torch._C._functorch
    try:
        stack = functorch.get_interpreter_stack()
        if (len(stack) != 1 or stack[0].key() != functorch.TransformType.Vmap
                or not functorch.is_batchedtensor(s)
                or any(isinstance(x, torch.Tensor) and functorch.is_batchedtensor(x) for x in others)):
            return None
        level, dim = functorch.maybe_get_level(s), functorch.maybe_get_bdim(s)
        value = functorch.get_unwrapped(s)
        add = functorch._add_batch_dim
    except AttributeError:  # pragma: no cover - another torch version: the operators
        return None
    if level != stack[0].level() or (value.requires_grad and torch.is_grad_enabled()):
        return None
    return value.movedim(dim, 0), lambda p: add(p, 0, level)
