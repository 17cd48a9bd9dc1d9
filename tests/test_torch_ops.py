"""Tests of the batched CPU path (vmap, leading dimensions) and the custom operators (compile)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skfairlayer import project  # noqa: E402
from skfairlayer.torch import FairnessLayer, _function, _op, _solve, fairness_layer  # noqa: E402

CRITERIA = ["demographic_parity", "equal_opportunity", "equalized_odds", "mean_residual"]
DYNAMO_WARNING = "ignore:.*should not be instantiated:DeprecationWarning"
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
JIT_METHOD_WARNING = "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"


def _problems(seed, B=12, n=90, k=3):
    rng = np.random.default_rng(seed)
    S = rng.uniform(-0.1, 1.1, (B, n)) + 0.15 * (np.arange(n) % k)
    g = np.arange(n) % k
    y = rng.integers(0, 2, n)
    y[: 2 * k] = np.r_[np.zeros(k), np.ones(k)].astype(int)
    return torch.tensor(S), torch.tensor(g), torch.tensor(y), k


@pytest.fixture
def batched_only(monkeypatch):
    """Fail if the batched CPU path hands a batch to the general solve."""

    def refuse(*args, **kwargs):
        raise AssertionError("the batched path left this batch to the general solve")

    monkeypatch.setattr(_solve, "solve", refuse)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (None, None), (0.2, None)])
def test_vmap_and_batch_match_the_loop(criterion, bounds, batched_only):
    """Check that vmap and a leading batch dimension give the looped answers to 1e-12."""
    S, g, y, k = _problems(1)
    labels = None if criterion == "demographic_parity" else y

    def f(x):
        return fairness_layer(x, g, k, tolerance=0.02, criterion=criterion, labels=labels,
                              bounds=bounds if criterion != "mean_residual" else (None, None))

    loop = torch.stack([f(x) for x in S])
    torch.testing.assert_close(torch.func.vmap(f)(S), loop, atol=1e-12, rtol=0)
    torch.testing.assert_close(f(S), loop, atol=1e-12, rtol=0)


def test_vmap_with_per_problem_groups_and_bounds():
    """Check vmap over groups (a one-hot matrix per problem) and over tensor bounds."""
    S, _, _, k = _problems(2)
    rng = np.random.default_rng(2)
    G = torch.tensor(np.stack([rng.permutation(np.arange(S.shape[1]) % k) for _ in S]))

    def f(x, gr):
        return fairness_layer(x, gr, k, tolerance=0.01)

    loop = torch.stack([f(x, gr) for x, gr in zip(S, G, strict=True)])
    torch.testing.assert_close(torch.func.vmap(f)(S, G), loop, atol=1e-12, rtol=0)
    ub = torch.full((S.shape[0],), 0.9, dtype=torch.float64)
    h = lambda x, u: fairness_layer(x, G[0], k, tolerance=0.01, bounds=(0.0, u))  # noqa: E731
    loop = torch.stack([fairness_layer(x, G[0], k, tolerance=0.01, bounds=(0.0, 0.9)) for x in S])
    torch.testing.assert_close(torch.func.vmap(h)(S, ub), loop, atol=1e-12, rtol=0)


def test_vmap_missing_and_fully_clamped_groups():
    """Check problems with a missing group and with a fully clamped group against the loop and the core."""
    S, g, _, k = _problems(3, B=6)
    g = torch.where(g == 1, 2, g)  # group 1 is missing in every problem
    f = lambda x: fairness_layer(x, g, k, tolerance=0.0)  # noqa: E731
    loop = torch.stack([f(x) for x in S])
    torch.testing.assert_close(torch.func.vmap(f)(S), loop, atol=1e-12, rtol=0)
    ref = project(S[0].numpy(), g.numpy(), tolerance=0.0).proba
    np.testing.assert_allclose(loop[0].numpy(), ref, atol=1e-12)
    # group 0 far above the upper bound in half the problems: fully clamped at the start
    S2, g2, _, _ = _problems(4, B=6, k=2)
    S2[::2, g2 == 0] = 5.0
    f2 = lambda x: fairness_layer(x, g2, 2, tolerance=0.0)  # noqa: E731
    loop = torch.stack([f2(x) for x in S2])
    torch.testing.assert_close(torch.func.vmap(f2)(S2), loop, atol=1e-12, rtol=0)
    torch.testing.assert_close(f2(S2), loop, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="no row in this batch"):
        torch.func.vmap(lambda x: fairness_layer(x, g, k, tolerance=0.0, strict=True))(S)


def test_vmap_gradients_match_the_loop():
    """Check vmap of grad, and an input requiring grad outside vmap, against the loop."""
    S, g, _, k = _problems(5, B=5)
    w = torch.tensor(np.random.default_rng(5).normal(size=S.shape))
    f = lambda x: fairness_layer(x, g, k, tolerance=0.02)  # noqa: E731
    X = S.clone().requires_grad_(True)
    (torch.func.vmap(f)(X) * w).sum().backward()
    grads = torch.func.vmap(torch.func.grad(lambda x, v: (f(x) * v).sum()))(S, w)
    for i in range(S.shape[0]):
        x = S[i].clone().requires_grad_(True)
        (f(x) * w[i]).sum().backward()
        torch.testing.assert_close(X.grad[i], x.grad, atol=1e-12, rtol=0)
        torch.testing.assert_close(grads[i], x.grad, atol=1e-12, rtol=0)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_custom_operators_gradcheck():
    """Check the operators' backward passes (and their double backward) by finite differences."""
    rng = np.random.default_rng(6)
    n = 30
    s = torch.tensor(rng.uniform(0.05, 0.95, n) + 0.1 * (np.arange(n) % 2), requires_grad=True)
    g = torch.tensor(np.arange(n) % 2)

    def direct(x):  # the compiled direct path's autograd.Function, called eagerly
        return _function._DirectTraced.apply(x, g, None, 0.0, 1.0, 0.02, 1, 2, 0, 0)

    lb, ub = (torch.tensor(b, dtype=torch.float64) for b in (0.0, 1.0))

    def batch(x):
        return _op.project(x.reshape(3, 10), g[:10], None, lb, ub, 0.02, 1, 2, 0)[0]

    for f in (direct, batch):
        assert torch.autograd.gradcheck(f, (s,))
        assert torch.autograd.gradgradcheck(f, (s,))
    torch.testing.assert_close(direct(s), fairness_layer(s, g, 2, tolerance=0.02), atol=1e-12, rtol=0)


@pytest.mark.filterwarnings(DYNAMO_WARNING)
@pytest.mark.parametrize("criterion", ["demographic_parity", "equalized_odds"])
def test_compiled_fullgraph_matches_eager(criterion):
    """Check torch.compile(fullgraph=True) with the operators: outputs and gradients as eager.

    (The traced Newton graph, ``OPAQUE_COMPILED_CPU = False``, is tested in test_torch.py.)
    """
    assert _function.OPAQUE_COMPILED_CPU
    torch._dynamo.reset()
    S, g, y, k = _problems(7, B=3, n=64)
    labels = None if criterion == "demographic_parity" else y
    layer = FairnessLayer(n_groups=k, tolerance=0.01, criterion=criterion)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    for x0 in (S[0], S):
        x, xe = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        out, ref = compiled(x, g, labels), layer(xe, g, labels)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
        (out ** 2).sum().backward()
        (ref ** 2).sum().backward()
        torch.testing.assert_close(x.grad, xe.grad, atol=1e-12, rtol=0)
    torch._dynamo.reset()


@pytest.mark.filterwarnings(DYNAMO_WARNING)
def test_compiled_graph_verifies():
    """Check that the operator in a compiled graph verifies and raises as eager does."""
    torch._dynamo.reset()
    S, g, _, k = _problems(8, B=2, n=40)
    g = torch.where(g == 1, 2, g)
    compiled = torch.compile(FairnessLayer(n_groups=k, tolerance=0.0, strict=True),
                             fullgraph=True, backend="aot_eager")
    for x in (S[0], S):
        with pytest.raises(ValueError, match="no row in this batch"):
            compiled(x, g)
    torch._dynamo.reset()


@pytest.mark.filterwarnings(DYNAMO_WARNING, JIT_WARNING, JIT_METHOD_WARNING)
@pytest.mark.parametrize("verify", [True, False])
def test_compiled_direct_path_inductor(verify):
    """Check the compiled direct path (inductor, fullgraph) against eager to 1e-12, one graph per setting.

    One problem of scalar bounds compiles to the traced ``_DirectTraced``: the operator
    ``skfairlayer::direct_parts`` and the backward pass in torch operations. Covers
    demographic parity and equalized odds (rows of no cell), a float32 input and the
    general solve inside the operator (Newton not settled in the direct solve's steps).
    """
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    S, g, y, k = _problems(9, B=3, n=64)
    w = torch.tensor(np.random.default_rng(9).normal(size=64))
    for criterion, labels in (("demographic_parity", None), ("equalized_odds", y)):
        counter = CompileCounterWithBackend("inductor")
        layer = FairnessLayer(n_groups=k, tolerance=0.01, criterion=criterion, verify=verify)
        compiled = torch.compile(layer, fullgraph=True, dynamic=False, backend=counter)
        for x0 in (S[0], S[1], S[0].float()):
            x, xe = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
            out, ref = compiled(x, g, labels), layer(xe, g, labels)
            tol = 1e-12 if x0.dtype == torch.float64 else 1e-6
            torch.testing.assert_close(out, ref, atol=tol, rtol=0)
            (out * w.to(out.dtype)).sum().backward()
            (ref * w.to(ref.dtype)).sum().backward()
            torch.testing.assert_close(x.grad, xe.grad, atol=tol, rtol=0)
        assert counter.frame_count == 2  # float64 and float32: no graph break, no other retrace
    torch._dynamo.reset()


@pytest.mark.filterwarnings(DYNAMO_WARNING)
def test_compiled_direct_path_general_fallback(monkeypatch):
    """Check the compiled direct path when the direct solve hands over to the general solve."""
    from skfairlayer.torch import _direct

    torch._dynamo.reset()
    monkeypatch.setattr(_direct, "_MAX_STEPS", 1)  # Newton cannot settle: the general solve answers
    S, g, _, k = _problems(10, B=1, n=80)
    layer = FairnessLayer(n_groups=k, tolerance=0.0)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x, xe = S[0].clone().requires_grad_(True), S[0].clone().requires_grad_(True)
    out, ref = compiled(x, g), layer(xe, g)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    np.testing.assert_allclose(out.detach().numpy(), project(S[0].numpy(), g.numpy(), tolerance=0.0).proba,
                               atol=1e-12)
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, xe.grad, atol=1e-12, rtol=0)
    torch._dynamo.reset()
