"""Tests of the CPU direct path of skfairlayer.torch against the numpy core and the general solve."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skfairlayer import SolverError, project  # noqa: E402
from skfairlayer.torch import VERIFY_TOL, _direct, _function, fairness_layer  # noqa: E402

CRITERIA = ["demographic_parity", "equal_opportunity", "equalized_odds", "mean_residual"]
BOUNDS = [(0.0, 1.0), (-0.5, 2.0), (None, None), (0.2, None)]
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"


def _batch(seed, n, k):
    rng = np.random.default_rng(seed)
    s = rng.uniform(-0.2, 1.2, n) if seed % 2 else 1 / (1 + np.exp(-1.5 * rng.normal(size=n)))
    g = rng.integers(0, k, n)
    g[:k] = np.arange(k)
    s = s + 0.1 * g
    y = rng.integers(0, 2, n)
    y[: 2 * k] = np.r_[np.zeros(k), np.ones(k)].astype(int)
    return s, g, y


def _core_bounds(bounds):
    # the core warns on infinite bounds; finite ones out of reach are the same problem here
    # (not +-1e6: the core's answer is then off by ~1e-8)
    return tuple(-50.0 if b is None and i == 0 else 50.0 if b is None else b for i, b in enumerate(bounds))


@pytest.fixture
def direct_only(monkeypatch):
    """Fail if the direct solve hands a problem to the general one."""

    def refuse(*args):
        raise AssertionError("the direct solve left this problem to the general solve")

    monkeypatch.setattr(_function, "_general_direct", refuse)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_direct_path_matches_core(criterion, direct_only):
    """Check that the direct path answers alone and matches project() and its vjp to 1e-12."""
    for seed in range(16):
        n, k = [(256, 2), (300, 4), (2000, 2), (120, 3)][seed % 4]
        s, g, y = _batch(seed, n, k)
        eps = [0.0, 0.01, 0.05, 0.2][seed % 4]
        bounds = BOUNDS[seed % 4] if criterion != "mean_residual" else (None, None)
        labels = None if criterion == "demographic_parity" else y
        ref = project(s, g, tolerance=eps, criterion=criterion, labels=labels,
                      bounds=_core_bounds(bounds))
        x = torch.tensor(s, requires_grad=True)
        p = fairness_layer(x, torch.tensor(g), k, tolerance=eps, criterion=criterion, bounds=bounds,
                           labels=None if labels is None else torch.tensor(y))
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
        w = np.random.default_rng(seed).normal(size=n)
        (vjp,) = torch.autograd.grad(p, x, torch.tensor(w))
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(w), rtol=0, atol=1e-12)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_general_fallback_inside_direct(criterion, monkeypatch):
    """Check that problems the direct solve leaves get the general answer and the same backward."""
    monkeypatch.setattr(_direct, "solve", lambda *args: None)
    for seed in range(6):
        s, g, y = _batch(seed, 150, 3)
        eps = [0.0, 0.02, 0.1][seed % 3]
        labels = None if criterion == "demographic_parity" else y
        ref = project(s, g, tolerance=eps, criterion=criterion, labels=labels)
        x = torch.tensor(s, requires_grad=True)
        p = fairness_layer(x, torch.tensor(g), 3, tolerance=eps, criterion=criterion,
                           labels=None if labels is None else torch.tensor(y))
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
        w = np.random.default_rng(seed).normal(size=s.size)
        (vjp,) = torch.autograd.grad(p, x, torch.tensor(w))
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(w), rtol=0, atol=1e-12)


def test_headline_sizes_two_and_four_groups(direct_only):
    """Check the benchmark's setting (sigmoid scores, 256 / 2,000 / 10,000 rows) against the core."""
    for n in (256, 2000, 10000):
        for k in (2, 4):
            rng = np.random.default_rng(n + k)
            g = rng.integers(0, k, n)
            s = 1 / (1 + np.exp(-(1.5 * rng.normal(size=n) + 0.4 * g - 0.6)))
            p = fairness_layer(torch.tensor(s), torch.tensor(g), k, tolerance=0.01).numpy()
            ref = project(s, g, tolerance=0.01).proba
            np.testing.assert_allclose(p, ref, rtol=0, atol=1e-12)
            m = [p[g == j].mean() for j in range(k)]
            assert max(m) - min(m) <= 0.01 + VERIFY_TOL


def test_rows_exactly_at_a_bound_have_no_gradient(direct_only):
    """Check that scores exactly at a bound (saturated) are held there with a zero gradient."""
    rng = np.random.default_rng(3)
    s = rng.uniform(0.1, 0.9, 200)
    g = np.r_[np.zeros(100, int), np.ones(100, int)]
    s[:5], s[100:105] = 1.0, 0.0  # saturated outputs in both groups
    x = torch.tensor(s, requires_grad=True)
    p = fairness_layer(x, torch.tensor(g), 2, tolerance=0.5)  # inactive: nothing moves
    w = torch.tensor(rng.normal(size=200))
    (vjp,) = torch.autograd.grad(p, x, w)
    np.testing.assert_array_equal(p.detach().numpy(), s)
    ref = project(s, g, tolerance=0.5)
    np.testing.assert_allclose(vjp.numpy(), ref.vjp(w.numpy()), rtol=0, atol=1e-12)
    assert not vjp[:5].any() and not vjp[100:105].any()


@pytest.mark.filterwarnings(JIT_WARNING)
def test_direct_path_derivatives(direct_only):
    """Check backward, double backward and forward mode of the direct path (finite differences)."""
    rng = np.random.default_rng(2)
    n, k = 40, 2
    s = torch.tensor(rng.uniform(0.05, 0.95, n) + 0.05 * (np.arange(n) % 2), requires_grad=True)
    g = torch.tensor(np.arange(n) % k)

    def f(x):
        return fairness_layer(x, g, k, tolerance=0.02)

    assert torch.autograd.gradcheck(f, (s,))
    assert torch.autograd.gradgradcheck(f, (s,))
    assert torch.autograd.gradcheck(f, (s,), check_forward_ad=True, check_backward_ad=False)


def test_float32_direct(direct_only):
    """Check that float32 scores keep their dtype, the bounds and parity on the direct path."""
    s, g, _ = _batch(4, 2000, 4)
    p = fairness_layer(torch.tensor(s, dtype=torch.float32), torch.tensor(g), 4, tolerance=0.01)
    assert p.dtype == torch.float32
    q = p.double().numpy()
    assert q.min() >= 0.0 and q.max() <= 1.0
    m = [q[g == j].mean() for j in range(4)]
    assert max(m) - min(m) <= 0.01 + 1e-6


def test_grad_of_vmap_matches_the_loop():
    """Check that an outer grad over a vmapped layer (the vmap rule under a grad level) is exact."""
    rng = np.random.default_rng(8)
    S = torch.tensor(rng.beta(2, 3, (6, 90)))
    g = torch.tensor(np.arange(90) % 3)
    w = torch.tensor(rng.normal(size=(6, 90)))

    def f(x):
        return fairness_layer(x, g, 3, tolerance=0.02)

    grads = torch.func.grad(lambda X: (torch.func.vmap(f)(X) * w).sum())(S)
    for i in range(6):
        x = S[i].clone().requires_grad_(True)
        (f(x) * w[i]).sum().backward()
        torch.testing.assert_close(grads[i], x.grad, atol=1e-13, rtol=0)


def test_common_call_matches_the_checked_call():
    """Check that the common eager call (int64 codes, float bounds) equals the general dispatch bit for bit."""
    for seed in range(8):
        n, k = [(256, 2), (300, 4), (2000, 2), (120, 3)][seed % 4]
        s, g, _ = _batch(seed, n, k)
        bounds = BOUNDS[seed % 4]
        eps = [0.0, 0.01, 0.05, 0.2][seed % 4]
        w = torch.tensor(np.random.default_rng(seed).normal(size=n))
        out = []
        # int64 codes and float bounds take the early dispatch; int32 codes and a list of
        # bounds with an int the checked one (both reach the direct path)
        for codes, bnds in [(torch.tensor(g), bounds),
                            (torch.tensor(g, dtype=torch.int32), [b if b != 0.0 else 0 for b in bounds])]:
            x = torch.tensor(s, requires_grad=True)
            p = fairness_layer(x, codes, k, tolerance=eps, bounds=tuple(bnds) if seed % 2 else bnds)
            (p * w).sum().backward()
            out.append((p.detach(), x.grad))
        torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
        torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"tolerance": -0.1}, ValueError, "tolerance must be a finite float"),
        ({"tolerance": float("nan")}, ValueError, "tolerance must be a finite float"),
        ({"n_groups": 0}, ValueError, "n_groups must be a positive int"),
        ({"n_groups": 1, "codes": [0, 1, 0, 1]}, ValueError, "groups must be integer codes"),
        ({"codes": [0, 1, -1, 1]}, ValueError, "groups must be integer codes"),
        ({"codes": [0, 1, 1]}, ValueError, "groups must hold one code per row"),
        ({"scores": [0.2, float("nan"), 0.5, 0.7]}, SolverError, "non-finite"),
    ],
)
def test_common_call_keeps_the_checks(kwargs, err, match):
    """Check that calls shaped like the common one still raise the general path's errors."""
    scores = torch.tensor(kwargs.get("scores", [0.9, 0.2, 0.8, 0.1]), dtype=torch.float64)
    codes = torch.tensor(kwargs.get("codes", [0, 1, 0, 1]))
    with pytest.raises(err, match=match):
        fairness_layer(scores, codes, kwargs.get("n_groups", 2),
                       tolerance=kwargs.get("tolerance", 0.01))


def test_one_sided_bounds_and_ties_after_a_shift(direct_only):
    """Check one-sided bounds, and a row that its group's shift puts exactly on a bound, against the core."""
    rng = np.random.default_rng(11)
    g = np.r_[np.zeros(64, int), np.ones(64, int)]
    s = rng.uniform(0.25, 0.75, 128) + 0.2 * g
    # exact in binary: group 0 moves up by 0.25 (its 0.75 lands on 1.0), group 1 down to 0.625
    tie = np.array([0.25, 0.25, 0.25, 0.75, 0.875, 0.875, 0.875, 0.875])
    g_tie = np.r_[np.zeros(4, int), np.ones(4, int)]
    cases = [(s, g, b, eps) for b in [(0.0, 1.0), (0.25, None), (None, 0.75), (0.0, 0.75)]
             for eps in (0.0, 0.02)]
    cases += [(tie, g_tie, (0.0, 1.0), 0.0), (tie, g_tie, (None, 1.0), 0.0),
              (1 - tie, g_tie, (0.0, 1.0), 0.0), (1 - tie, g_tie, (0.0, None), 0.0)]
    for scores, codes, bounds, eps in cases:
        ref = project(scores, codes, tolerance=eps, bounds=_core_bounds(bounds))
        x = torch.tensor(scores, requires_grad=True)
        p = fairness_layer(x, torch.tensor(codes), 2, tolerance=eps, bounds=bounds)
        np.testing.assert_allclose(p.detach().numpy(), ref.proba, rtol=0, atol=1e-12)
        w = rng.normal(size=scores.size)
        (vjp,) = torch.autograd.grad(p, x, torch.tensor(w))
        np.testing.assert_allclose(vjp.numpy(), ref.vjp(w), rtol=0, atol=1e-12)
        if scores.size == 8:  # the row on the bound: held there, no gradient
            assert p[3].item() in (0.0, 1.0) and vjp[3].item() == 0.0


def test_two_cell_start_is_the_root():
    """Check that the closed-form level of two cells is the root of the bisection's function."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        m0 = rng.uniform(0, 1, 2).tolist()
        n = rng.integers(1, 500, 2).astype(float).tolist()
        eps = float(rng.choice([0.0, 0.01, 0.3]))
        t = _direct._unclipped_level(m0, n, eps)
        phi = sum(k * (m - min(max(m, t), t + eps)) for m, k in zip(m0, n, strict=True))
        assert abs(phi) <= 1e-9 * sum(n)
        three = _direct._unclipped_level(m0 + [t + eps / 2], n + [1.0], eps)  # the general search
        assert abs(three - t) <= 1e-12


def test_backward_forms_agree_with_the_dense_jacobian():
    """Check the numpy backward, the torch backward and the dense Jacobian against each other."""
    rng = np.random.default_rng(4)
    s, g, _ = _batch(4, 300, 3)
    x = torch.tensor(s, requires_grad=True)
    p = fairness_layer(x, torch.tensor(g), 3, tolerance=0.02)
    free, onehot, matrix = p.grad_fn.saved_tensors
    dense = torch.diag(free) - (onehot * free).T @ matrix @ (onehot * free)
    gr = torch.tensor(rng.normal(size=300))
    torch.testing.assert_close(_direct.jacobian_apply(gr, free, onehot, matrix), dense @ gr,
                               rtol=0, atol=1e-13)
    out = _direct.jacobian_apply_numpy(gr.numpy(), free.numpy(), onehot.numpy(), matrix.numpy())
    torch.testing.assert_close(torch.from_numpy(out), dense @ gr, rtol=0, atol=1e-13)
    (vjp,) = torch.autograd.grad(p, x, gr)
    np.testing.assert_allclose(vjp.numpy(), project(s, g, tolerance=0.02).vjp(gr.numpy()),
                               rtol=0, atol=1e-12)


def test_empty_batch(direct_only):
    """Check that an empty batch gives an empty output and gradient on the direct path."""
    x = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    p = fairness_layer(x, torch.zeros(0, dtype=torch.int64), 2, tolerance=0.01)
    assert p.shape == (0,)
    p.sum().backward()
    assert x.grad.shape == (0,)
