"""Tests of skfairlayer.torch: the projection against the numpy core, its derivatives, vmap, compile."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skfairlayer import InfeasibleProblemError, project  # noqa: E402
from skfairlayer.torch import (  # noqa: E402
    VERIFY_TOL,
    FairnessLayer,
    _function,
    _solve,  # noqa: E402
    fairness_layer,
    output_tolerance,
)

CRITERIA = ["demographic_parity", "equal_opportunity", "equalized_odds", "mean_residual"]
# torch's forward-mode gradcheck loads decompositions through torch.jit.script (deprecated).
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
# Dynamo instantiates autograd.Function subclasses internally when tracing them (torch 2.13).
DYNAMO_WARNING = "ignore:.*should not be instantiated:DeprecationWarning"


def _batch(seed, n=None, k=None, spread=False):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(20, 300))
    k = k or int(rng.integers(2, 6))
    s = rng.uniform(-0.2, 1.2, n) if spread else rng.beta(2, 3, n)
    g = rng.integers(0, k, n)
    g[:k] = np.arange(k)
    y = rng.integers(0, 2, n)
    y[: 2 * k] = np.r_[np.zeros(k), np.ones(k)].astype(int)  # every group has both labels
    return s, g, y, k


def _gaps(p, g, k):
    m = np.array([p[g == j].mean() for j in range(k) if np.any(g == j)])
    return m.max() - m.min()


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("verify", [True, False])
def test_matches_numpy_core(criterion, verify):
    """Check that outputs and vector-Jacobian products match skfairlayer.project to 1e-12."""
    for seed in range(12):
        s, g, y, k = _batch(seed, spread=seed % 2 == 1)
        eps = [0.0, 0.01, 0.1][seed % 3]
        labels = None if criterion == "demographic_parity" else y
        ref = project(s, g, tolerance=eps, criterion=criterion, labels=labels)
        st = torch.tensor(s, requires_grad=True)
        p = fairness_layer(
            st, torch.tensor(g), k, tolerance=eps, criterion=criterion, verify=verify,
            labels=None if labels is None else torch.tensor(y),
        )
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
        grad = np.random.default_rng(seed).normal(size=s.size)
        (vjp,) = torch.autograd.grad(p, st, torch.tensor(grad))
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(grad), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bounds", [(None, None), (-1.0, None), (-1.0, 4.0)])
def test_mean_residual_of_real_targets_matches_numpy_core(bounds):
    """Real targets (regression outputs): outputs and vector-Jacobian products are the
    core's ``project(criterion="mean_residual", labels=y)`` to 1e-12, any bounds."""
    for seed in range(8):
        rng = np.random.default_rng(seed)
        n, k = int(rng.integers(20, 200)), int(rng.integers(2, 5))
        g = rng.integers(0, k, n)
        g[:k] = np.arange(k)
        y = rng.normal(g, 1.0)
        s = y + rng.normal(0.3 * g, 0.5)
        eps = [0.0, 0.05, 0.3][seed % 3]
        ref = project(s, g, tolerance=eps, criterion="mean_residual", labels=y, bounds=bounds)
        st = torch.tensor(s, requires_grad=True)
        p = fairness_layer(st, torch.tensor(g), k, tolerance=eps, criterion="mean_residual",
                           labels=torch.tensor(y), bounds=bounds)
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
        grad = rng.normal(size=n)
        (vjp,) = torch.autograd.grad(p, st, torch.tensor(grad))
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(grad), rtol=0, atol=1e-12)


def test_parity_and_bounds_over_seeds():
    """Check that parity holds to 1e-9 and the bounds exactly, for any bounds, in float64."""
    for seed in range(24):
        s, g, _, k = _batch(seed, spread=True)
        eps = [0.0, 0.02, 0.2][seed % 3]
        lb, ub = [(0.0, 1.0), (-0.5, 2.0), (None, None), (0.2, None)][seed % 4]
        p = fairness_layer(torch.tensor(s), torch.tensor(g), k, tolerance=eps, bounds=(lb, ub))
        p = p.numpy()
        assert _gaps(p, g, k) <= eps + VERIFY_TOL
        assert p.min() >= (-np.inf if lb is None else lb)
        assert p.max() <= (np.inf if ub is None else ub)


def test_unbounded_is_a_shift_per_group():
    """Check that without bounds each group moves by one constant and the result is the core's."""
    s, g, _, k = _batch(3, spread=True)
    p = fairness_layer(torch.tensor(s), torch.tensor(g), k, tolerance=0.05, bounds=(None, None))
    d = p.numpy() - s
    for j in range(k):
        assert np.ptp(d[g == j]) < 1e-12
    # (the core warns on infinite bounds; wide finite ones are the same problem here)
    ref = project(s, g, tolerance=0.05, bounds=(-1e6, 1e6)).proba
    np.testing.assert_allclose(p.numpy(), ref, atol=1e-12)


def test_float32_accuracy():
    """Check that float32 outputs keep the float32 dtype, the bounds, and parity to the documented tolerance."""
    s, g, _, k = _batch(7, n=2000, k=4)
    p = fairness_layer(torch.tensor(s, dtype=torch.float32), torch.tensor(g), k, tolerance=0.01)
    assert p.dtype == torch.float32
    q = p.double().numpy()
    assert q.min() >= 0.0 and q.max() <= 1.0
    assert _gaps(q, g, k) <= 0.01 + output_tolerance(torch.float32)


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("criterion", CRITERIA)
def test_gradcheck(criterion):
    """Check backward, double backward and forward mode against finite differences."""
    rng = np.random.default_rng(1)
    n, k = 30, 3
    s = torch.tensor(rng.uniform(0.05, 0.95, n), requires_grad=True)
    g = torch.tensor(np.r_[np.arange(k), rng.integers(0, k, n - k)])
    y = torch.tensor(np.r_[np.zeros(k), np.ones(k), rng.integers(0, 2, n - 2 * k)]).long()

    def f(x):
        return fairness_layer(x, g, k, tolerance=0.02, criterion=criterion, labels=y)

    assert torch.autograd.gradcheck(f, (s,))
    assert torch.autograd.gradgradcheck(f, (s,))
    assert torch.autograd.gradcheck(f, (s,), check_forward_ad=True, check_backward_ad=False)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_jacobian_is_a_symmetric_projector():
    """Check that J is symmetric and idempotent (jacrev and jacfwd agree)."""
    s, g, _, k = _batch(4, n=60, k=3)
    f = lambda x: fairness_layer(x, torch.tensor(g), k, tolerance=0.01)  # noqa: E731
    x = torch.tensor(s)
    jr = torch.func.jacrev(f)(x)
    jf = torch.func.jacfwd(f)(x)
    torch.testing.assert_close(jr, jf, atol=1e-14, rtol=0)
    torch.testing.assert_close(jr, jr.T, atol=1e-14, rtol=0)
    torch.testing.assert_close(jr @ jr, jr, atol=1e-12, rtol=0)


def test_vmap_and_batch_dims():
    """Check that vmap and leading batch dimensions solve independent problems."""
    rng = np.random.default_rng(5)
    n, k = 80, 3
    S = torch.tensor(rng.beta(2, 3, (16, n)))
    g = torch.tensor(np.r_[np.arange(k), rng.integers(0, k, n - k)])
    f = lambda x: fairness_layer(x, g, k, tolerance=0.02)  # noqa: E731
    loop = torch.stack([f(x) for x in S])
    torch.testing.assert_close(torch.func.vmap(f)(S), loop, atol=1e-13, rtol=0)
    torch.testing.assert_close(f(S), loop, atol=1e-13, rtol=0)
    grads = torch.func.vmap(torch.func.grad(lambda x: (f(x) ** 2).sum()))(S)
    for i in (0, 7):
        x = S[i].clone().requires_grad_(True)
        (f(x) ** 2).sum().backward()
        torch.testing.assert_close(grads[i], x.grad, atol=1e-13, rtol=0)


def test_bracketed_path_matches_fast_path():
    """Check that the sort-based bracketed solve (compile path) and the Newton fast path agree."""
    for seed in range(20):
        s, g, _, k = _batch(seed, spread=True)
        lay = _solve.Layout(torch.tensor(g)[None], 1, k)
        args = (torch.tensor(s)[None], torch.tensor(0.0, dtype=torch.float64),
                torch.tensor(1.0, dtype=torch.float64), lay, 0.01)
        p1, _ = _solve.solve(*args)
        p2, st = _solve.solve(*args, fast=True)
        torch.testing.assert_close(p1, p2, atol=1e-12, rtol=0)


@pytest.mark.filterwarnings(DYNAMO_WARNING)
def test_compile_without_graph_breaks(monkeypatch):
    """Check that torch.compile(fullgraph=True) traces forward and backward (the Newton graph)."""
    monkeypatch.setattr(_function, "OPAQUE_COMPILED_CPU", False)  # as on CUDA
    torch._dynamo.reset()
    s, g, _, k = _batch(2, n=64, k=2)
    layer = FairnessLayer(n_groups=k, tolerance=0.01, verify=False)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.tensor(s, requires_grad=True)
    out = compiled(x, torch.tensor(g))
    (out ** 2).sum().backward()
    ref = project(s, g, tolerance=0.01)
    np.testing.assert_allclose(out.detach().numpy(), ref.proba, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), ref.vjp(2 * ref.proba), atol=1e-12)


@pytest.mark.filterwarnings(DYNAMO_WARNING)
def test_compiled_fallback_branch(monkeypatch):
    """Check that a compiled graph answers through the bracketed branch when Newton has not settled."""
    torch._dynamo.reset()
    monkeypatch.setattr(_function, "OPAQUE_COMPILED_CPU", False)  # as on CUDA
    monkeypatch.setattr(_solve, "_FAST_STEPS", 1)
    s, g, _, k = _batch(6, n=200, k=3, spread=True)
    layer = torch.compile(FairnessLayer(n_groups=k, tolerance=0.0, verify=False),
                          fullgraph=True, backend="aot_eager")
    out = layer(torch.tensor(s), torch.tensor(g))
    torch._dynamo.reset()
    np.testing.assert_allclose(out.numpy(), project(s, g, tolerance=0.0).proba, atol=1e-12)


def test_missing_group_is_dropped_or_strict_raises():
    """Check that a group absent from the batch is left out (as the core does), and strict raises."""
    s, g, _, _ = _batch(9, n=100, k=3)
    g = np.where(g == 1, 2, g)  # group 1 absent out of 3
    p = fairness_layer(torch.tensor(s), torch.tensor(g), 3, tolerance=0.01)
    np.testing.assert_allclose(p.numpy(), project(s, g, tolerance=0.01).proba, atol=1e-12)
    with pytest.raises(ValueError, match="no row in this batch"):
        fairness_layer(torch.tensor(s), torch.tensor(g), 3, tolerance=0.01, strict=True)


def test_fully_clamped_group():
    """Check that a group held entirely at a bound is handled as the core does, and strict raises."""
    s = np.r_[np.ones(10), np.random.default_rng(0).uniform(0.2, 0.5, 20)]
    g = np.r_[np.zeros(10, int), np.ones(20, int)]
    bounds = (0.0, 1.0)
    p = fairness_layer(torch.tensor(s), torch.tensor(g), 2, tolerance=0.0, bounds=(0.0, 1.5))
    np.testing.assert_allclose(
        p.numpy(), project(s, g, tolerance=0.0, bounds=(0.0, 1.5)).proba, atol=1e-12
    )
    # the lower group's bounds keep it below the other: infeasible
    with pytest.raises(InfeasibleProblemError):
        fairness_layer(torch.tensor(s), torch.tensor(g), 2, tolerance=0.0,
                       bounds=(torch.tensor(np.r_[np.ones(10), np.zeros(20)]),
                               torch.tensor(np.r_[np.ones(10), np.full(20, 0.6)])))
    pinned = fairness_layer(torch.tensor(s), torch.tensor(g), 2, tolerance=0.0,
                            bounds=(torch.tensor(np.r_[np.ones(10), np.zeros(20)]), bounds[1]))
    assert abs(pinned.numpy()[10:].mean() - 1.0) < 1e-9
    with pytest.raises(ValueError, match="fully clamped"):
        fairness_layer(torch.tensor(s), torch.tensor(g), 2, tolerance=0.0, strict=True,
                       bounds=(torch.tensor(np.r_[np.ones(10), np.zeros(20)]), bounds[1]))


# Instances the fuzzing of the layer against the core found (each failed before its fix):
# a pinned cell (every row at a bound) sets the level, a missing last group, a band of no
# width with a group already on it.
PINNED_CASES = {
    "missing last groups": ("demographic_parity", 0.01, (0.0, 1.0), 4,
                            [-0.1853, 0.0191, -0.0853], [2, 1, 2], None),
    "fully clamped group sets the level": ("demographic_parity", 0.1, (-0.5, 2.0), 2,
                                           [-0.1972, 3.7472, -3.6711], [0, 1, 1], None),
    "clamped positives (equal opportunity)": ("equal_opportunity", 0.01, (0.0, 1.0), 5,
                                              [0.6379, -2.678, 2.6476], [4, 3, 1], [1, 1, 0]),
    "clamped at a lower bound only": ("equal_opportunity", 0.001, (0.2, None), 3,
                                      [-3.3633, 2.6313, -1.9247, 4.0016, -1.7579],
                                      [0, 1, 2, 1, 0], [1, 1, 1, 0, 0]),
    "equalized odds, one family pinned": ("equalized_odds", 0.5, (0.2, None), 2,
                                          [3.8511, -0.0956, -3.0039], [0, 1, 1], [0, 1, 0]),
    "zero tolerance, a group on the level": ("demographic_parity", 0.0, (-0.5, 2.0), 5,
                                             [0, 0.5, 0, 1, 1, 1, 1, 1, 1, 1],
                                             [0, 1, 2, 3, 4, 4, 0, 4, 1, 0], None),
}


@pytest.mark.parametrize("name", list(PINNED_CASES))
def test_pinned_and_degenerate_cells_match_the_core(name):
    """Check outputs and vector-Jacobian products against the core and finite differences
    where a cell's every row is at a bound, a group is missing, or the band has no width."""
    criterion, eps, bounds, k, s, g, y = PINNED_CASES[name]
    s, g = np.asarray(s, dtype=float), np.asarray(g)
    labels = None if y is None else np.asarray(y)
    core_bounds = tuple(b if b is not None else (1e6 if i else -1e6) for i, b in enumerate(bounds))

    def core(x):
        return project(x, g, tolerance=eps, criterion=criterion, labels=labels, bounds=core_bounds)

    ref = core(s)
    st = torch.tensor(s, requires_grad=True)
    p = fairness_layer(st, torch.tensor(g), k, tolerance=eps, criterion=criterion, bounds=bounds,
                       labels=None if labels is None else torch.tensor(labels))
    np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    w = rng.normal(size=s.size)
    (vjp,) = torch.autograd.grad(p, st, torch.tensor(w))
    np.testing.assert_allclose(vjp.numpy(), ref.vjp(w), rtol=0, atol=1e-10)
    for _ in range(3):  # these points are differentiable: both one-sided differences agree
        v, h = rng.normal(size=s.size), 1e-7
        ahead = w @ (core(s + h * v).proba - ref.proba) / h
        behind = w @ (ref.proba - core(s - h * v).proba) / h
        assert abs(ahead - behind) < 1e-5 and abs(vjp.numpy() @ v - ahead) < 1e-5


def test_heavily_clamped_batches_match_the_core():
    """Check the layer against the core on batches whose scores lie mostly beyond the bounds
    (many cells with every row at a bound), for every criterion: outputs to 1e-9, parity
    and bounds (the guarantee), and gradients at differentiable points."""
    for seed in range(120):
        rng = np.random.default_rng(seed)
        n, k = int(rng.choice([3, 5, 10, 40])), int(rng.integers(2, 6))
        s, g, y = rng.normal(0, 3, n), rng.integers(0, k, n), rng.integers(0, 2, n)
        criterion = CRITERIA[seed % 4]
        eps = [0.0, 0.001, 0.01, 0.5][seed % 4 if seed % 3 else (seed // 4) % 4]
        bounds = [(0.0, 1.0), (0.2, None), (None, 0.8)][seed % 3]
        core_bounds = tuple(b if b is not None else (1e6 if i else -1e6)
                            for i, b in enumerate(bounds))
        labels = None if criterion == "demographic_parity" else y
        try:
            ref = project(s, g, tolerance=eps, criterion=criterion, labels=labels, bounds=core_bounds)
        except Exception:  # the core's OSQP fallback may not certify these tiny batches
            continue
        st = torch.tensor(s, requires_grad=True)
        p = fairness_layer(st, torch.tensor(g), k, tolerance=eps, criterion=criterion,
                           bounds=bounds, labels=None if labels is None else torch.tensor(labels))
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-9)
        w = rng.normal(size=n)
        (vjp,) = torch.autograd.grad(p, st, torch.tensor(w))
        v, h = rng.normal(size=n), 1e-7
        ahead = w @ (project(s + h * v, g, tolerance=eps, criterion=criterion, labels=labels,
                             bounds=core_bounds).proba - ref.proba) / h
        behind = w @ (ref.proba - project(s - h * v, g, tolerance=eps, criterion=criterion,
                                          labels=labels, bounds=core_bounds).proba) / h
        if abs(ahead - behind) < 1e-6 * (1 + abs(ahead)):  # differentiable here
            assert abs(vjp.numpy() @ v - ahead) < 1e-4 * (1 + abs(ahead)), seed


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"tolerance": -0.1}, ValueError, "tolerance"),
        ({"criterion": "nope"}, ValueError, "criterion"),
        ({"criterion": "equal_opportunity"}, ValueError, "needs labels"),
        ({"n_groups": 0}, ValueError, "n_groups"),
    ],
)
def test_errors(kwargs, err, match):
    """Check that invalid arguments raise errors naming the parameter."""
    args = {"n_groups": 2, **kwargs}
    n_groups = args.pop("n_groups")
    with pytest.raises(err, match=match):
        fairness_layer(torch.rand(4, dtype=torch.float64), torch.tensor([0, 0, 1, 1]), n_groups,
                       **args)


def test_invalid_codes_and_shapes():
    """Check that out-of-range codes, non-binary labels and multiclass scores without simplex=True raise."""
    s = torch.rand(6, dtype=torch.float64)
    with pytest.raises(ValueError, match="out of range"):
        fairness_layer(s, torch.tensor([0, 0, 1, 1, 2, 2]), 2)
    with pytest.raises(ValueError, match="out of range"):
        fairness_layer(s, torch.tensor([0, 0, 1, 1, 0, 1]), 2, criterion="equalized_odds",
                       labels=torch.tensor([0, 1, 2, 1, 0, 1]))
    with pytest.raises(ValueError, match="simplex=True"):
        fairness_layer(torch.rand(6, 3, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 0, 1]), 2)
    with pytest.raises(TypeError, match="groups"):
        fairness_layer(s, torch.zeros(6), 2)


def test_module_state_and_repr():
    """Check that FairnessLayer holds its parameters and matches the functional form."""
    layer = FairnessLayer(n_groups=2, tolerance=0.05, criterion="equal_opportunity")
    assert "equal_opportunity" in repr(layer)
    s, g, y, _ = _batch(11, n=50, k=2)
    out = layer(torch.tensor(s), torch.tensor(g), torch.tensor(y))
    ref = fairness_layer(torch.tensor(s), torch.tensor(g), 2, tolerance=0.05,
                         criterion="equal_opportunity", labels=torch.tensor(y))
    torch.testing.assert_close(out, ref)
    assert layer.state_dict() == {}
