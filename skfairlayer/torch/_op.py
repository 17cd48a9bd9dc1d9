"""The layer's solve as one opaque operator, ``torch.ops.skfairlayer.project``.

Used where an ``autograd.Function`` costs more than the solve: under a plain
``torch.func.vmap`` (the operator's vmap rule solves the mapped problems as one
batch) and in ``torch.compile``'d graphs on the CPU (the graph calls the eager,
verified solve as one node, with no graph break and no retrace). The backward
pass is the projector of :func:`skfairlayer.torch._solve.jacobian_apply`, written
in differentiable torch operations (double backward). Forward mode and the
``grad``-type transforms use :class:`skfairlayer.torch._function._Project`
instead. See ``docs/user_guide/torch.rst``.
"""

import torch

__all__ = ["project", "solve", "only_vmap"]


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


def only_vmap():
    """Whether every active ``torch.func`` transform is a ``vmap`` (none of grad, jvp, ...)."""
    functorch = torch._C._functorch
    try:
        vmap = functorch.TransformType.Vmap
        return all(level.key() == vmap for level in functorch.get_interpreter_stack())
    except AttributeError:  # pragma: no cover - another torch version: the autograd.Function
        return False
