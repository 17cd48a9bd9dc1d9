"""Shared pytest configuration: opt-in slow property sweeps (deselected by default), headless
plotting."""

import os
import threading

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

pytest_plugins = ("pytester",)  # tests/test_conftest.py runs pytest on a scratch project


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow", action="store_true", default=False,
        help="also run the long property sweeps marked 'slow'",
    )


def pytest_collection_modifyitems(config, items):
    """Deselect (not skip) the tests marked ``slow`` unless ``--run-slow`` is given."""
    if config.getoption("--run-slow"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


def _serve_rows_in_threads(serve, chunks):
    """Call ``serve(i)`` for every row index of every chunk, one thread per chunk, all at
    once; return the ``(i, serve(i))`` pairs."""
    results = {}

    def worker(w):
        results[w] = [(i, serve(i)) for i in chunks[w]]

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(len(chunks))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return [pair for w in sorted(results) for pair in results[w]]


@pytest.fixture
def serve_rows_in_threads():
    """The concurrency harness of the streaming tests (see ``_serve_rows_in_threads``)."""
    return _serve_rows_in_threads


def _well_separated_classes(seed, n=600):
    """Three classes of a feature whose group means lie ``sep`` apart (0.5, 3 or 10, drawn):
    ``(rng, X, g, y)``, every group present (``rng`` continues the draws). A weakly
    regularised logistic regression on it gives near-vertex probabilities: the degenerate
    instances of the general solver."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 5))
    g = rng.integers(0, k, n)
    g[:k] = np.arange(k)
    sep = float(rng.choice([0.5, 3.0, 10.0]))
    X = rng.normal(size=(n, 2)) + sep * rng.normal(size=k)[g][:, None]
    z = X[:, 0] + rng.normal(0, 0.3, n)
    y = np.digitize(z, np.quantile(z, [1 / 3, 2 / 3]))
    return rng, X, g, y


@pytest.fixture
def well_separated_classes():
    """The data of the degenerate mean-residual tests (see ``_well_separated_classes``)."""
    return _well_separated_classes
