"""Tests of skfairlayer.torch's multiclass (simplex) and marginal layers against the numpy core."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skfairlayer import project  # noqa: E402
from skfairlayer.torch import VERIFY_TOL, FairnessLayer, fairness_layer  # noqa: E402

# torch's forward-mode gradcheck loads decompositions through torch.jit.script (deprecated).
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"


def _multiclass(seed, n=None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(30, 300))
    K, k = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    P = rng.dirichlet(np.full(K, 0.7), n)
    g = rng.integers(0, k, n)
    g[:k] = np.arange(k)
    return P, g, k


def _marginal(seed, n=None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(30, 300))
    sizes = [int(rng.integers(2, 5)) for _ in range(int(rng.integers(2, 4)))]
    G = np.stack([rng.integers(0, k, n) for k in sizes], 1)
    for a, k in enumerate(sizes):
        G[:k, a] = np.arange(k)
    s = rng.beta(2, 3, n) if seed % 2 else rng.uniform(-0.2, 1.2, n)
    return s, G, sizes


def _gap(p, g):
    m = np.array([p[g == j].mean(0) for j in np.unique(g)])
    return (m.max(0) - m.min(0)).max()


def test_multiclass_matches_numpy_core():
    """Check that simplex outputs and VJPs match skfairlayer.project (2-D scores) to 1e-12 / 1e-10."""
    for seed in range(30):
        P, g, k = _multiclass(seed)
        eps = [0.0, 0.01, 0.1][seed % 3]
        ref = project(P, g, tolerance=eps)
        x = torch.tensor(P, requires_grad=True)
        p = fairness_layer(x, torch.tensor(g), k, tolerance=eps, simplex=True)
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
        q = p.detach().numpy()
        assert q.min() >= 0.0 and np.abs(q.sum(1) - 1.0).max() <= 1e-12
        assert _gap(q, g) <= eps + VERIFY_TOL
        grad = np.random.default_rng(seed).normal(size=P.shape)
        (vjp,) = torch.autograd.grad(p, x, torch.tensor(grad))
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(grad), rtol=0, atol=1e-10)


def test_marginal_matches_numpy_core():
    """Check that marginal outputs and VJPs match project(..., groups='marginal') to 1e-12 / 1e-10."""
    for seed in range(30):
        s, G, sizes = _marginal(seed)
        eps = [0.0, 0.01, 0.1][seed % 3]
        ref = project(s, G, tolerance=eps, groups="marginal")
        x = torch.tensor(s, requires_grad=True)
        p = fairness_layer(x, torch.tensor(G), tuple(sizes), tolerance=eps, groups_mode="marginal")
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
        q = p.detach().numpy()
        assert q.min() >= 0.0 and q.max() <= 1.0
        for a in range(G.shape[1]):
            assert _gap(q, G[:, a]) <= eps + VERIFY_TOL
        grad = np.random.default_rng(seed).normal(size=s.size)
        (vjp,) = torch.autograd.grad(p, x, torch.tensor(grad))
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(grad), rtol=0, atol=1e-10)


def test_marginal_any_bounds():
    """Check marginal parity and the bounds for unbounded, one-sided and per-row bounds."""
    for seed, bounds in enumerate([(None, None), (0.2, None), (-0.5, 2.0)]):
        s, G, sizes = _marginal(seed + 40)
        if bounds == (-0.5, 2.0):
            bounds = (torch.full((s.size,), -0.5, dtype=torch.float64), 2.0)
        p = fairness_layer(torch.tensor(s), torch.tensor(G), tuple(sizes), tolerance=0.02,
                           groups_mode="marginal", bounds=bounds).numpy()
        for a in range(G.shape[1]):
            assert _gap(p, G[:, a]) <= 0.02 + VERIFY_TOL
        if bounds[0] is not None:
            assert p.min() >= float(torch.as_tensor(bounds[0], dtype=torch.float64).min())


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("kind", ["simplex", "marginal"])
def test_gradcheck(kind):
    """Check backward, double backward and forward mode against finite differences."""
    if kind == "simplex":
        rng = np.random.default_rng(3)
        n, k = 15, 3
        x = torch.tensor(rng.dirichlet(np.full(3, 4.0), n), requires_grad=True)  # full supports
        g = torch.tensor(np.r_[np.arange(k), rng.integers(0, k, n - k)])

        def f(v):
            return fairness_layer(v, g, k, tolerance=0.02, simplex=True)
    else:
        s, G, sizes = _marginal(5, n=20)
        x = torch.tensor(np.clip(s, 0.05, 0.95), requires_grad=True)
        g = torch.tensor(G)

        def f(v):
            return fairness_layer(v, g, tuple(sizes), tolerance=0.02, groups_mode="marginal")

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    assert torch.autograd.gradcheck(f, (x,), check_forward_ad=True, check_backward_ad=False)


def test_batches_module_and_float32():
    """Check leading batch dims, the module form and float32 outputs."""
    P, g, k = _multiclass(7, n=60)
    batch = torch.tensor(np.stack([P, P[::-1].copy()]))
    out = fairness_layer(batch, torch.tensor(g), k, tolerance=0.05, simplex=True)
    ref = project(P[::-1].copy(), g, tolerance=0.05).proba
    np.testing.assert_allclose(out[1].numpy(), ref, atol=1e-12)
    layer = FairnessLayer(k, tolerance=0.05, simplex=True)
    assert "simplex=True" in repr(layer)
    out32 = layer(torch.tensor(P, dtype=torch.float32), torch.tensor(g))
    assert out32.dtype == torch.float32
    assert _gap(out32.double().numpy(), g) <= 0.05 + 1e-6
    s, G, sizes = _marginal(8, n=50)
    layer = FairnessLayer(tuple(sizes), tolerance=0.03, groups_mode="marginal")
    out = layer(torch.tensor(np.stack([s, s])), torch.tensor(G))
    ref = project(s, G, tolerance=0.03, groups="marginal").proba
    np.testing.assert_allclose(out.numpy(), np.stack([ref, ref]), atol=1e-12)


def test_errors():
    """Check the errors of the multiclass and marginal layers."""
    P, g, k = _multiclass(1, n=30)
    s, G, sizes = _marginal(1, n=30)
    Pt, gt, st, Gt = torch.tensor(P), torch.tensor(g), torch.tensor(s), torch.tensor(G)
    with pytest.raises(ValueError, match="bounds do not apply"):
        fairness_layer(Pt, gt, k, simplex=True, bounds=(None, None))
    with pytest.raises(ValueError, match="demographic_parity"):
        fairness_layer(Pt, gt, k, simplex=True, criterion="equal_opportunity", labels=gt)
    with pytest.raises(ValueError, match="n_samples, n_attributes"):
        fairness_layer(st, gt, 2, groups_mode="marginal")
    with pytest.raises(ValueError, match="one number per attribute"):
        fairness_layer(st, Gt, (2,) * (G.shape[1] + 1), groups_mode="marginal")
    with pytest.raises(ValueError, match="out of range"):
        fairness_layer(st, Gt, 1, groups_mode="marginal")
    with pytest.raises(ValueError, match="groups_mode"):
        fairness_layer(st, gt, 2, groups_mode="joint")
    with pytest.raises(ValueError, match="no row in this batch"):
        fairness_layer(Pt, gt, k + 1, simplex=True, strict=True)


def test_marginal_infeasible_bounds_raise():
    """Check that bounds no outputs can satisfy raise InfeasibleProblemError."""
    from skfairlayer import InfeasibleProblemError

    G = torch.tensor(np.c_[np.r_[np.zeros(20), np.ones(20)], np.tile([0, 1], 20)].astype(int))
    lb = torch.where(G[:, 0] == 0, 0.9, 0.0).double()
    ub = torch.where(G[:, 0] == 1, 0.1, 1.0).double()
    s = torch.rand(40, dtype=torch.float64)
    with pytest.raises(InfeasibleProblemError, match="Widen"):
        fairness_layer(s, G, 2, tolerance=0.01, groups_mode="marginal", bounds=(lb, ub))


@pytest.mark.filterwarnings(JIT_WARNING)
@pytest.mark.parametrize("kind", ["simplex", "marginal"])
def test_jacobian_is_a_symmetric_projector_and_vmap(kind):
    """Check that J (jacrev = jacfwd) is a symmetric idempotent map, and vmap matches a loop."""
    if kind == "simplex":
        P, g, k = _multiclass(11, n=20)
        x, gt, kw = torch.tensor(P), torch.tensor(g), {"simplex": True}
    else:
        s, G, sizes = _marginal(11, n=30)
        x, gt, k, kw = torch.tensor(s), torch.tensor(G), tuple(sizes), {"groups_mode": "marginal"}

    def f(v):
        return fairness_layer(v, gt, k, tolerance=0.02, **kw)

    m = x.numel()
    jr = torch.func.jacrev(f)(x).reshape(m, m)
    jf = torch.func.jacfwd(f)(x).reshape(m, m)
    torch.testing.assert_close(jr, jf, atol=1e-12, rtol=0)
    torch.testing.assert_close(jr, jr.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(jr @ jr, jr, atol=1e-10, rtol=0)
    batch = torch.stack([x, x.flip(0)])
    torch.testing.assert_close(torch.func.vmap(f)(batch), torch.stack([f(b) for b in batch]))


def test_multiclass_core_start_fallback(monkeypatch):
    """Check that when Newton from zero shifts does not settle, the core's multipliers start it."""
    from skfairlayer.torch import _active

    real, calls = _active.newton, []

    def first_fails(c, *args):
        calls.append(bool(c.abs().amax() > 0))
        return None if len(calls) == 1 else real(c, *args)

    monkeypatch.setattr(_active, "newton", first_fails)
    P, g, k = _multiclass(2, n=80)
    p = fairness_layer(torch.tensor(P), torch.tensor(g), k, tolerance=0.01, simplex=True)
    np.testing.assert_allclose(p.numpy(), project(P, g, tolerance=0.01).proba, atol=1e-12)
    assert calls == [False, True]


# Instances the fuzzing of the layer against the core found: the active-set Newton does not
# settle (rows at vertices, groups missing, outputs clamped), or a tolerance of zero leaves
# a cell already on its level out of the Jacobian.
DEGENERATE_SIMPLEX = {
    "groups missing, small batch": (
        [[0.6106, 0.0245, 0.3649], [0.0666, 0.6416, 0.2918], [0.4193, 0.5477, 0.033]],
        [2, 0, 2], 3, 0.001),
    "rows at vertices, zero tolerance": (
        [[0.7, 0.2, 0.1, 0.0], [0.0, 0.3, 0.7, 0.0], [0.9, 0.0, 0.0, 0.1], [0.1, 0.0, 0.0, 0.9],
         [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], [3, 2, 0, 3, 2, 0], 5, 0.0),
}
DEGENERATE_MARGINAL = {
    "clamped outputs": (
        [0.7518, 3.6125, 0.2791, -2.8364, -4.5369, 1.4448, -0.8958, -2.7171, 6.4015, -1.9051,
         1.4421, 2.6741, 2.8962, -2.2495, -1.4584, 2.2836, 2.0089, 0.604, -0.2334, 0.5702],
        [[1, 0], [2, 2], [0, 0], [2, 1], [2, 0], [2, 2], [1, 2], [0, 2], [0, 0], [0, 1], [1, 1],
         [2, 0], [2, 2], [2, 2], [0, 0], [2, 2], [1, 1], [1, 0], [2, 0], [2, 1]], [3, 3], 0.001),
    "clamped outputs, zero tolerance": (
        [0.468, 4.8602, -2.9765, 0.1803, -0.9902, 6.2552],
        [[0, 0], [1, 0], [0, 1], [0, 0], [1, 1], [1, 1]], [2, 2], 0.0),
    "zero tolerance, a cell on its level": (
        [0.5, 0.1, 0.5], [[1, 1], [0, 0], [1, 0]], [2, 3], 0.0),
    "an attribute with one group in the batch": (
        [-3.7108, 1.916, 0.0472], [[0, 0], [1, 0], [1, 0]], [2, 3], 0.3),
}


@pytest.mark.parametrize("name", list(DEGENERATE_SIMPLEX) + list(DEGENERATE_MARGINAL))
def test_degenerate_problems_match_the_core(name):
    """Check that the layer answers what the core answers (its verified solution where the
    layer's own Newton does not settle) and, at differentiable points, its gradients."""
    simplex = name in DEGENERATE_SIMPLEX
    x, g, k, eps = (DEGENERATE_SIMPLEX if simplex else DEGENERATE_MARGINAL)[name]
    x, g = np.asarray(x, dtype=float), np.asarray(g)
    if simplex:
        x = x / x.sum(1, keepdims=True)

    def core(v):
        return project(v, g, tolerance=eps, **({} if simplex else {"groups": "marginal"}))

    ref = core(x)
    xt = torch.tensor(x, requires_grad=True)
    p = fairness_layer(xt, torch.tensor(g), k, tolerance=eps, simplex=simplex,
                       groups_mode="intersectional" if simplex else "marginal")
    np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-9)
    rng = np.random.default_rng(0)
    w = rng.normal(size=x.shape)
    (vjp,) = torch.autograd.grad(p, xt, torch.tensor(w))
    for _ in range(3):
        v, h = rng.normal(size=x.shape), 1e-7
        if simplex:
            v -= v.mean(1, keepdims=True)
        ahead = (w * (core(x + h * v).proba - ref.proba)).sum() / h
        behind = (w * (ref.proba - core(x - h * v).proba)).sum() / h
        if abs(ahead - behind) < 1e-6:  # differentiable in this direction
            assert abs((vjp.numpy() * v).sum() - ahead) < 1e-5


def test_groups_tied_to_rounding_share_one_gradient_rule():
    """Check two groups holding the same rows to within 1e-17 (rounded, renormalised
    probabilities): the active-set rule read the sign of a rounding-size residual and
    classified their tied cells apart, a wrong vector-Jacobian product (by up to 0.7) at a
    differentiable point; a residual of rounding size is now a tie."""
    P = np.array([[0.8, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.8]])
    P = np.c_[P, 1 - P.sum(1)]
    P /= P.sum(1, keepdims=True)
    g = np.array([1, 0, 2, 0, 2, 1])
    ref = project(P, g, tolerance=0.02)
    st = torch.tensor(P, requires_grad=True)
    p = fairness_layer(st, torch.tensor(g), 3, tolerance=0.02, simplex=True)
    np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
    for seed in range(5):
        w = np.random.default_rng(seed).normal(size=P.shape)
        (vjp,) = torch.autograd.grad(p, st, torch.tensor(w), retain_graph=True)
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(w), rtol=0, atol=1e-12)
