"""skfairlayer.torch: speed, memory, vmap and compile of the torch fairness layer.

Parts (``--part``, default all):

Times are the minimum over repeated calls (200 for a training step) of the process's CPU
time on the CPU (torch with one thread: time the process waited for other jobs on a shared
machine does not count), of the wall clock on CUDA and for the generic layers.

``speed``
    One training step through the layer (forward + backward of ``sum(p * w)``) at batch
    256 / 2,000 / 10,000, 2 groups (binary demographic parity, the paper's headline
    setting) and 4 groups (CelebA's intersectional groups), tolerance 0.01, scores
    ``sigmoid(N(0, 1.5) + group offset)``. Columns: the floor (``clamp(s, 0, 1)`` forward +
    backward, same tensors), eager with verification (the default), eager without
    verification, ``torch.compile`` (inductor, ``fullgraph=True``, ``dynamic=False``)
    without verification (on the CPU the unverified direct solve as one opaque node, as in
    eager mode; on CUDA the traced Newton graph), ``torch.compile`` with verification (on
    the CPU the verified direct solve, one opaque node); ratios to the floor, and the
    speed-up on the paper package's figures (15.8 ms / 101.5 ms / 2.13 s per step,
    cvxpylayers + SCS, measured on a machine of this kind; not re-measured here). Eager on
    the CPU takes the direct path (Newton on the cells' shifts, passes in numpy, the
    per-cell arithmetic in Python floats); on CUDA the synchronisation-free path.
``compile``
    ``torch.compile`` against eager in the same process, interleaved (each round runs
    every variant once; minima over 300 rounds), 2 groups, n = 256 / 2,000 / 10,000:
    the layer-only step of ``speed`` (eager, compiled with ``verify=True`` and with
    ``verify=False``), and a training step of the paper's kind: an MLP (10 features,
    64 ReLU units, one output) gives the scores (``sigmoid``), the layer projects them and
    a Brier loss (``mean((p - y)^2)``) is back-propagated to the weights (forward +
    backward, no optimizer step), eager and compiled (the whole loss function,
    ``fullgraph=True``, ``verify=True``). Ratios are compiled / eager; the floor row is
    the ``clamp`` step of ``speed``, eager and compiled (torch.compile's own cost per call).
``generic``
    The same QP (two groups, ``|mean_0 - mean_1| <= eps``, bounds [0, 1]) at 4,096 rows
    through generic layers in this process: a cvxpy ``Parameter`` problem solved by
    Clarabel (forward only, first solve and re-solve), and ``cvxpylayers.torch.CvxpyLayer``
    (its default solver, SCS through diffcp) forward + backward if importable (skipped
    with a message otherwise; ``pip install skfairlayer[bench]``), with the largest
    differences of its outputs and gradients from ours. Floors: the same step through an
    identity ``autograd.Function`` (the least any custom layer costs), through
    ``clamp(0, 1)``, and through an oracle ``autograd.Function`` handed the solution (the
    shifts, the free rows, the Jacobian's parts): one output pass with its group sums and
    the projector backward, alone and with the passes the leanest exact solve makes
    before its output (the group sums, one evaluation): floors of any exact layer.
``memory``
    Bytes saved for the backward pass (``saved_tensors_hooks``) per row, n = 1e3 .. 1e5:
    constant per row means O(n) extra memory (a dense Jacobian would be n**2).
``vmap``
    ``torch.func.vmap`` of the layer over 64 independent problems of 256 rows vs a Python
    loop over them (minima over 50 and 20 calls).
``structured``
    Multiclass demographic parity on the simplex (4 classes, 4 groups, ``simplex=True``)
    and marginal parity over two attributes (2 x 3 groups, ``groups_mode="marginal"``),
    tolerance 0.02, at batch 256 / 2,000: one training step (forward + backward) vs its
    floor (``softmax`` or ``clamp`` forward + backward on the same tensors), and the numpy
    core's ``skfairlayer.project`` on the same problem (forward only, for reference).
``regression``
    The paper's synthetic regression comparison at reduced size: an MLP trained through
    the layer (F-Layer, mean parity of unbounded outputs) vs the same MLP trained plainly
    and projected post hoc; test MSE and test gap of group means, over seeds.

Runs on CUDA when available (``--device``); on CPU with one thread unless ``--threads``.
Usage::

    python benchmarks/bench_torch.py [--part speed|compile|generic|memory|vmap|structured|regression] [--quick]
"""

import argparse
import time
import warnings

import numpy as np
import torch

from skfairlayer.torch import fairness_layer

PAPER = {256: 15.8e-3, 2000: 101.5e-3, 10000: 2.13}
NEEDED = {256: 50, 2000: 200, 10000: 1000}
K = 4


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats=30, clock=None):
    """Minimum time over ``repeats`` calls (robust to a busy, shared machine).

    ``clock`` defaults to the process's CPU time on the CPU (time the process was
    descheduled by other jobs does not count; torch runs one thread) and to the wall
    clock on CUDA.
    """
    if clock is None:
        clock = time.perf_counter if device.type == "cuda" else time.process_time
    fn()
    fn()
    ts = []
    for _ in range(repeats):
        _sync(device)
        t = clock()
        fn()
        _sync(device)
        ts.append(clock() - t)
    return float(np.min(ts))


def _scores(n, device, seed=0, k=K):
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(0, k, (n,), generator=g)
    z = 1.5 * torch.randn(n, generator=g, dtype=torch.float64) + 0.4 * groups - 0.6
    return torch.sigmoid(z).to(device), groups.to(device)


def _step(s, groups, w, k=K, **kw):
    x = s.detach().requires_grad_(True)

    def run():
        x.grad = None
        p = fairness_layer(x, groups, k, tolerance=0.01, **kw)
        (p * w).sum().backward()

    return run


def part_speed(device, quick):
    print("\n## speed: forward + backward per step (ms), ratio to the floor, speed-up on the paper")
    print("| groups | n | floor | eager (verify) | ratio | eager (no verify) | ratio | compiled | ratio "
          "| compiled (verify) | ratio | paper pkg | speed-up (eager) | speed-up (compiled) | needed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in (2, K):
        for n in (256, 2000, 10000):
            s, groups = _scores(n, device, k=k)
            w = torch.randn(n, dtype=torch.float64, device=device)
            x = s.detach().requires_grad_(True)

            def floor(x=x, w=w):
                x.grad = None
                (x.clamp(0, 1) * w).sum().backward()

            t_floor = _time(floor, device, repeats=200)
            t_ver = _time(_step(s, groups, w, k), device, repeats=200)
            t_nov = _time(_step(s, groups, w, k, verify=False), device, repeats=200)
            t_cmp = _compiled(s, groups, w, device, k) if not quick else float("nan")
            t_op = _compiled(s, groups, w, device, k, verify=True) if not quick else float("nan")
            paper = PAPER[n]
            print(f"| {k} | {n} | {t_floor * 1e3:.3f} | {t_ver * 1e3:.3f} | {t_ver / t_floor:.0f}x "
                  f"| {t_nov * 1e3:.3f} | {t_nov / t_floor:.0f}x | {t_cmp * 1e3:.3f} "
                  f"| {t_cmp / t_floor:.0f}x | {t_op * 1e3:.3f} | {t_op / t_floor:.0f}x "
                  f"| {paper * 1e3:.1f} | {paper / t_ver:.0f}x "
                  f"| {paper / t_cmp:.0f}x | {NEEDED[n]}x |", flush=True)


def _compiled(s, groups, w, device, k=K, verify=False):
    torch._dynamo.reset()
    return _time(_compiled_step(s, groups, w, k, verify), device, repeats=200)


def _compiled_step(s, groups, w, k, verify):
    from skfairlayer.torch import FairnessLayer

    layer = torch.compile(FairnessLayer(k, tolerance=0.01, verify=verify), fullgraph=True,
                          dynamic=False)
    x = s.detach().requires_grad_(True)

    def run():
        x.grad = None
        (layer(x, groups) * w).sum().backward()

    return run


def _interleaved(fns, device, rounds):
    """Minimum time of each of ``fns`` over ``rounds`` rounds, each round running every one once."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for fn in fns.values():
        fn()
        fn()
    ts = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            t = clock()
            fn()
            _sync(device)
            ts[name].append(clock() - t)
    return {name: float(np.min(v)) for name, v in ts.items()}


def _mlp_step(n, device, compiled):
    """Forward + backward of an MLP's Brier loss through the layer (the paper's training step)."""
    from torch import nn

    from skfairlayer.torch import FairnessLayer

    g = torch.Generator().manual_seed(n)
    groups = torch.randint(0, 2, (n,), generator=g)
    X = torch.randn(n, 10, generator=g, dtype=torch.float64)
    X[:, 0] += 0.8 * groups
    y = (X[:, 0] + torch.randn(n, generator=g, dtype=torch.float64) > 0.4).to(torch.float64)
    X, y, groups = X.to(device), y.to(device), groups.to(device)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1)).double().to(device)
    layer = FairnessLayer(2, tolerance=0.01)

    def loss_fn(X, groups, y):
        p = layer(torch.sigmoid(net(X).squeeze(-1)), groups)
        return ((p - y) ** 2).mean()

    if compiled:
        loss_fn = torch.compile(loss_fn, fullgraph=True, dynamic=False)

    def run():
        net.zero_grad(set_to_none=True)
        loss_fn(X, groups, y).backward()

    return run


def part_compile(device, quick):
    print("\n## compile: compiled / eager, same process, interleaved (ms, 2 groups)")
    print("| step | n | eager | compiled (verify) | ratio | compiled (no verify) | ratio |")
    print("|---|---|---|---|---|---|---|")
    rounds = 50 if quick else 300
    for n in (256, 2000, 10000):
        torch._dynamo.reset()
        s, groups = _scores(n, device, k=2)
        w = torch.randn(n, dtype=torch.float64, device=device)
        fns = {"eager": _step(s, groups, w, 2), "verify": _compiled_step(s, groups, w, 2, True),
               "no verify": _compiled_step(s, groups, w, 2, False)}
        x = s.detach().requires_grad_(True)
        clamp = torch.compile(lambda v: v.clamp(0, 1), fullgraph=True, dynamic=False)

        def floor(f, x=x, w=w):
            def run():
                x.grad = None
                (f(x) * w).sum().backward()

            return run

        fns["floor"], fns["floor compiled"] = floor(lambda v: v.clamp(0, 1)), floor(clamp)
        t = _interleaved(fns, device, rounds)
        print(f"| floor (`clamp`) | {n} | {t['floor'] * 1e3:.3f} | {t['floor compiled'] * 1e3:.3f} | "
              f"{t['floor compiled'] / t['floor']:.2f} | | |")
        print(f"| layer | {n} | {t['eager'] * 1e3:.3f} | {t['verify'] * 1e3:.3f} | "
              f"{t['verify'] / t['eager']:.2f} | {t['no verify'] * 1e3:.3f} | "
              f"{t['no verify'] / t['eager']:.2f} |", flush=True)
        torch._dynamo.reset()
        t = _interleaved({"eager": _mlp_step(n, device, False), "compiled": _mlp_step(n, device, True)},
                         device, rounds)
        print(f"| MLP + layer + loss | {n} | {t['eager'] * 1e3:.3f} | {t['compiled'] * 1e3:.3f} | "
              f"{t['compiled'] / t['eager']:.2f} | | |", flush=True)


def _dp_problem(n, groups, eps):
    """The demographic-parity QP of two groups as a cvxpy ``Parameter`` problem (DPP)."""
    import cvxpy as cp

    sp, p = cp.Parameter(n), cp.Variable(n)
    g = np.asarray(groups)
    a = np.where(g == 0, 1.0 / np.sum(g == 0), -1.0 / np.sum(g == 1))  # mean_0 - mean_1
    cons = [p >= 0, p <= 1, a @ p <= eps, a @ p >= -eps]
    return cp.Problem(cp.Minimize(cp.sum_squares(p - sp)), cons), sp, p


def _oracle(s, groups, eps, search=False):
    """An autograd Function handed what the solve finds (shifts, free rows, the Jacobian's
    parts): a floor of any exact layer of this API, whatever its solver.

    Forward: the output pass ``clip(s - c_g)`` at the solution's shifts and its group sums
    (the verification's); backward: the projector, as ours. ``search`` adds the passes
    that the leanest exact solve makes before its output, still handed the answer: the
    direct solve's own first pass (group sums and sizes of ``s``) and one of its
    evaluations (clip, free rows, their group sums) at other shifts (here the same ones).
    """
    from skfairlayer.torch import _direct

    res = _direct.solve(s, groups, 2, 2, 0, 0.0, 1.0, eps, None, False, 1e-9, True)
    free, onehot, matrix = res.parts
    p, sn = res.p.numpy(), s.numpy()
    shifts = [float(np.mean((sn - p)[(free > 0) & (groups.numpy() == g)])) for g in (0, 1)]
    f, c0, d = onehot[1].copy(), shifts[0], shifts[1] - shifts[0]
    rows = _direct._Rows(sn, groups.numpy(), 2, 0.0, 1.0)  # its slots' one-hot handed too

    def shifted(v):
        z = f * -d
        z += v
        z -= c0
        return z

    class Oracle(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            v = v.detach().numpy()
            if search:
                rows.s = v
                rows.first(True)  # the scores lie within the bounds
                rows.pass_(shifts)
            out = np.clip(shifted(v), 0.0, 1.0)
            np.dot(onehot, out)  # the group sums the verification reads
            return torch.from_numpy(out)

        @staticmethod
        def backward(ctx, g):
            return torch.from_numpy(_direct.jacobian_apply_numpy(g.numpy(), free, onehot, matrix))

    return Oracle.apply


def part_generic(device, quick):
    n, eps = 4096, 0.01
    print(f"\n## generic: the same QP at {n} rows (2 groups) through generic layers, same process")
    s, groups = _scores(n, torch.device("cpu"), k=2)
    w = torch.randn(n, dtype=torch.float64)

    def ours_step():
        x = s.detach().requires_grad_(True)
        (fairness_layer(x, groups, 2, tolerance=eps) * w).sum().backward()
        return x.grad

    class _Identity(torch.autograd.Function):  # the least a custom autograd layer costs
        @staticmethod
        def forward(ctx, v):
            return v.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    def floor_step(layer):
        def run():
            x = s.detach().requires_grad_(True)
            (layer(x) * w).sum().backward()
            return x.grad

        return run

    oracle, searching = _oracle(s, groups, eps), _oracle(s, groups, eps, search=True)
    ours, identity, clamp, handed, fewest = (
        _time(fn, torch.device("cpu"), repeats=300, clock=time.perf_counter)
        for fn in (ours_step, floor_step(_Identity.apply), floor_step(lambda v: v.clamp(0, 1)),
                   floor_step(oracle), floor_step(searching))
    )
    same = max(float((floor_step(layer)() - ours_step()).abs().max()) for layer in (oracle, searching))
    same = max(same, float((oracle(s) - fairness_layer(s, groups, 2, tolerance=eps)).abs().max()))
    print(f"skfairlayer.torch (CPU, eager, verified; forward + backward; wall clock, as for the "
          f"generic layers, which may use threads): {ours * 1e3:.3f} ms")
    print(f"floors, the same step through an identity autograd.Function: {identity * 1e3:.3f} ms; "
          f"through clamp(0, 1): {clamp * 1e3:.3f} ms; through an oracle handed the solution "
          f"(one output pass, its group sums, the projector; outputs and gradients within "
          f"{same:.0e} of ours): {handed * 1e3:.3f} ms ({handed / identity:.2f}x the identity step); "
          f"the oracle with the passes the leanest exact solve makes before its output (the "
          f"group sums, one evaluation at other shifts): {fewest * 1e3:.3f} ms "
          f"({fewest / identity:.2f}x)")
    import cvxpy as cp

    prob, sp, p = _dp_problem(n, groups.numpy(), eps)
    ref = fairness_layer(s, groups, 2, tolerance=eps).numpy()
    sp.value = s.numpy()
    t0 = time.perf_counter()
    prob.solve(solver=cp.CLARABEL)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    prob.solve(solver=cp.CLARABEL)
    re = time.perf_counter() - t0
    print(f"cvxpy Parameter problem + Clarabel (forward only): first solve {first * 1e3:.1f} ms "
          f"({first / ours:.0f}x ours), re-solve {re * 1e3:.1f} ms ({re / ours:.0f}x ours); "
          f"max |p_cvxpy - p_ours| = {np.abs(p.value - ref).max():.1e}")
    try:
        from cvxpylayers.torch import CvxpyLayer
    except ImportError:
        print("cvxpylayers: not importable here, skipped (pip install cvxpylayers; the cvxpy "
              "re-solve above is a lower bound of its forward pass alone).")
        return
    t0 = time.perf_counter()
    layer = CvxpyLayer(prob, parameters=[sp], variables=[p])
    build = time.perf_counter() - t0
    x = s.detach().requires_grad_(True)

    def run():
        x.grad = None
        out = layer(x)[0]
        (out * w).sum().backward()
        return out

    out = run()
    err = np.abs(out.detach().numpy() - ref).max()
    gerr = np.abs(x.grad.numpy() - ours_step().numpy()).max()
    ts = []
    for _ in range(2 if quick else 10):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    tl, med = float(np.min(ts)), float(np.median(ts))
    print(f"cvxpylayers (default solver, SCS via diffcp) forward + backward: min {tl * 1e3:.1f} ms, "
          f"median {med * 1e3:.1f} ms (layer built once in {build:.1f} s): {tl / ours:.0f}x ours "
          f"(min / min); max |p_layers - p_ours| = {err:.1e}, max |grad_layers - grad_ours| = "
          f"{gerr:.1e}")
    print(f"cvxpylayers against the floors: {tl / identity:.0f}x the identity Function's step, "
          f"{tl / clamp:.0f}x the clamp step; 1000x needs a step of at most {tl * 1e3:.0f} us, "
          f"{tl / 1000 / identity:.2f}x the identity step (ours: {ours / identity:.2f}x; the oracle "
          f"handed the solution: {handed / identity:.2f}x, {tl / handed:.0f}x faster than cvxpylayers; "
          f"with the fewest passes: {fewest / identity:.2f}x, {tl / fewest:.0f}x)")


def part_memory(device, quick):
    print("\n## memory: bytes saved for backward, per row")
    sizes = (1000, 10000) if quick else (1000, 10000, 100000)
    for n in sizes:
        s, groups = _scores(n, device)
        x = s.detach().requires_grad_(True)
        total = []

        def pack(t, total=total):
            total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            p = fairness_layer(x, groups, K, tolerance=0.01)
        p.sum().backward()
        print(f"n = {n:>6}: {sum(total):>9} bytes saved, {sum(total) / n:.1f} per row "
              f"(a dense Jacobian: {8 * n * n / n:.0f} per row)")


def part_vmap(device, quick):
    print("\n## vmap: 64 problems of 256 rows")
    g = torch.Generator().manual_seed(0)
    S = torch.sigmoid(torch.randn(64, 256, generator=g, dtype=torch.float64)).to(device)
    groups = torch.randint(0, K, (256,), generator=g).to(device)

    def f(x):
        return fairness_layer(x, groups, K, tolerance=0.01)

    t_vmap = _time(lambda: torch.func.vmap(f)(S), device, repeats=50)
    t_loop = _time(lambda: [f(x) for x in S], device, repeats=20)
    print(f"vmap {t_vmap * 1e3:.2f} ms, loop {t_loop * 1e3:.2f} ms: {t_loop / t_vmap:.1f}x")


def _structured_case(kind, n, device):
    """Scores, groups, layer keywords and the numpy core's call for one structured problem."""
    g = torch.Generator().manual_seed(n)
    if kind == "simplex":
        groups = torch.randint(0, K, (n,), generator=g)
        z = torch.randn(n, 4, generator=g, dtype=torch.float64)
        z[:, 0] += 0.5 * groups
        kw = {"n_groups": K, "simplex": True}
        return z.to(device), groups.to(device), kw, lambda x: torch.softmax(x, -1)
    groups = torch.stack([torch.randint(0, 2, (n,), generator=g),
                          torch.randint(0, 3, (n,), generator=g)], 1)
    z = torch.randn(n, generator=g, dtype=torch.float64) + 0.4 * groups[:, 0] - 0.3 * groups[:, 1]
    kw = {"n_groups": (2, 3), "groups_mode": "marginal"}
    return z.to(device), groups.to(device), kw, torch.sigmoid


def part_structured(device, quick):
    print("\n## structured: multiclass (simplex) and marginal layers, forward + backward (ms)")
    print("| layer | n | floor | step | ratio | numpy core forward | core / step |")
    print("|---|---|---|---|---|---|---|")
    from skfairlayer import project

    for kind in ("simplex", "marginal"):
        for n in (256, 2000):
            z, groups, kw, link = _structured_case(kind, n, device)
            x = z.detach().requires_grad_(True)
            w = torch.randn(z.shape, dtype=torch.float64, device=device)

            def floor(x=x, w=w, link=link):
                x.grad = None
                (link(x) * w).sum().backward()

            def step(x=x, w=w, link=link, kw=kw, groups=groups):
                x.grad = None
                n_groups = kw["n_groups"]
                rest = {k: v for k, v in kw.items() if k != "n_groups"}
                p = fairness_layer(link(x), groups, n_groups, tolerance=0.02, **rest)
                (p * w).sum().backward()

            s_np, g_np = link(z).cpu().numpy(), groups.cpu().numpy()
            mode = "marginal" if kind == "marginal" else "intersectional"
            repeats = 3 if quick else 10
            t_floor = _time(floor, device, repeats)
            t_step = _time(step, device, repeats)
            t_core = _time(lambda s=s_np, g=g_np, m=mode: project(s, g, tolerance=0.02, groups=m),
                           device, repeats)
            print(f"| {kind} | {n} | {t_floor * 1e3:.3f} | {t_step * 1e3:.2f} | "
                  f"{t_step / t_floor:.0f}x | {t_core * 1e3:.2f} | {t_core / t_step:.1f}x |")


def part_regression(device, quick):
    print("\n## regression: F-Layer vs post-hoc projection (synthetic, MLP)")
    from torch import nn

    eps, n, d = 0.05, 2000 if quick else 4000, 10
    rows = []
    for seed in range(2 if quick else 5):
        rng = np.random.default_rng(seed)
        a = rng.integers(0, 2, 2 * n)
        X = rng.normal(size=(2 * n, d))
        X[:, 0] += 0.8 * a
        y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.3 * X[:, 2] + 0.5 * a
        y += 0.3 * rng.normal(size=2 * n)
        Xt, yt, at = (torch.tensor(v) for v in (X, y, a))
        tr, te = slice(0, n), slice(n, 2 * n)
        out = {}
        for mode in ("post-hoc", "F-Layer"):
            torch.manual_seed(seed)
            net = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 1)).double()
            opt = torch.optim.Adam(net.parameters(), lr=3e-3)
            for _ in range(30 if quick else 60):
                perm = torch.randperm(n)
                for b in perm.split(256):
                    pred = net(Xt[tr][b]).squeeze(-1)
                    if mode == "F-Layer":
                        pred = fairness_layer(pred, at[tr][b], 2, tolerance=eps,
                                              bounds=(None, None))
                    loss = ((pred - yt[tr][b]) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                pred = fairness_layer(net(Xt[te]).squeeze(-1), at[te], 2, tolerance=eps,
                                      bounds=(None, None)).numpy()
            mse = float(np.mean((pred - y[te]) ** 2))
            gap = abs(pred[a[te] == 1].mean() - pred[a[te] == 0].mean())
            out[mode] = (mse, gap)
        rows.append(out)
    for mode in ("post-hoc", "F-Layer"):
        mse = np.array([r[mode][0] for r in rows])
        gap = np.array([r[mode][1] for r in rows])
        print(f"{mode:>9}: test MSE {mse.mean():.4f} ± {mse.std():.4f}, test gap "
              f"{gap.max():.2e} (max over seeds; tolerance {eps})")
    diff = np.array([r["F-Layer"][0] - r["post-hoc"][0] for r in rows])
    print(f"paired MSE difference (F-Layer - post-hoc): {diff.mean():+.4f} ± {diff.std():.4f}")


PARTS = {"speed": part_speed, "compile": part_compile, "generic": part_generic, "memory": part_memory,
         "vmap": part_vmap, "structured": part_structured, "regression": part_regression}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of torch (default 1: stable on a shared machine)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*should not be instantiated", category=DeprecationWarning)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    for name in args.part or list(PARTS):
        PARTS[name](device, args.quick)


if __name__ == "__main__":
    main()
