"""Every gallery example (examples/plot_*.py) runs to completion, headless, warnings as errors.

Examples are what the documentation build executes; running them here keeps them
from rotting even where Sphinx is not installed. The whole file is budgeted at
about a minute: each example must stay within a few seconds of work.
"""

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import skfairlayer
from skfairlayer import FairnessLayerClassifier

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 120  # per example, generous for a loaded CI machine


def _has_streaming():
    return hasattr(FairnessLayerClassifier, "partial_predict_proba")


def _has_fine_tuning():
    return "fine_tune" in FairnessLayerClassifier().get_params()


# Examples of features that are landing: the example must exist once the feature has landed.
PLANNED = {
    "plot_streaming.py": (_has_streaming, "streaming (partial_predict_proba) has not landed yet"),
    "plot_fine_tuning.py": (_has_fine_tuning, "fine-tuning (fine_tune=True) has not landed yet"),
}


# Examples of optional front ends: the module each needs; skipped where it is not installed.
OPTIONAL = {
    "plot_torch_adult.py": "torch",
}


def _missing_optional(name):
    module = OPTIONAL.get(name)
    return module is not None and importlib.util.find_spec(module) is None


def _examples():
    return sorted(p.name for p in EXAMPLES.glob("plot_*.py"))


def test_gallery_has_the_planned_examples():
    """Check that each planned example exists once its feature has landed."""
    present = set(_examples())
    for core in (
        "plot_quickstart_adult.py",
        "plot_grid_search.py",
        "plot_compare_fairlearn.py",
        "plot_multiclass.py",
    ):
        assert core in present
    missing = []
    for name, (landed, _) in PLANNED.items():
        if name not in present and landed():
            missing.append(name)
    assert not missing, f"features landed but their examples are missing: {missing}"


def _run(path, extra_env=None):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # examples run in parallel: one BLAS thread each
    env.update(extra_env or {})
    root = str(Path(skfairlayer.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning:joblib", str(path),
    ]
    return subprocess.run(
        cmd, cwd=path.parent, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


def _runnable(name):
    if _missing_optional(name):
        return False
    return name not in PLANNED or PLANNED[name][0]()


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """Start every runnable example at once, as many in parallel as there are cores.

    The key ``"without fairlearn"`` runs the fairlearn comparison with fairlearn
    made unimportable (a sitecustomize that blocks it).
    """
    hide = tmp_path_factory.mktemp("hide_fairlearn")
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['fairlearn'] = None\n")
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # the longest first, so that the parallel runs end together
        futures = {
            "without fairlearn": pool.submit(
                _run, EXAMPLES / "plot_compare_fairlearn.py",
                {"PYTHONPATH": str(hide) + os.pathsep + os.environ.get("PYTHONPATH", "")},
            )
        }
        for name in _examples():
            if _runnable(name):
                futures[name] = pool.submit(_run, EXAMPLES / name)
        yield futures


@pytest.mark.parametrize("name", _examples())
def test_example_runs(name, example_runs):
    """Check that an example runs without error or warning."""
    if _missing_optional(name):
        pytest.skip(f"{name} needs {OPTIONAL[name]}, which is not installed")
    if not _runnable(name):
        pytest.skip(PLANNED[name][1])
    result = example_runs[name].result()
    assert result.returncode == 0, (
        f"{name} failed:\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"
    )


def test_fairlearn_comparison_fails_loudly_without_fairlearn(example_runs):
    """Check the fairlearn comparison stops with an ImportError naming the extra, not silently."""
    result = example_runs["without fairlearn"].result()
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert 'pip install "skfairlayer[demo]"' in result.stderr


# Matplotlib calls whose return value sphinx-gallery would print (``Text(...)``,
# ``<matplotlib.legend.Legend ...>``) when one ends a cell.
_ARTIST_CALLS = ("legend", "plot", "text", "annotate", "axhline", "axvline", "fill_between",
                 "scatter", "hist", "bar", "imshow", "suptitle")


def _cells(source):
    """The statements of each ``# %%`` cell of an example, as ASTs."""
    import ast

    tree = ast.parse(source)
    starts = [i + 1 for i, line in enumerate(source.splitlines()) if line.startswith("# %%")]
    cells = [[] for _ in range(len(starts) + 1)]
    for stmt in tree.body:
        cells[sum(stmt.lineno > s for s in starts)].append(stmt)
    return [c for c in cells if c]


@pytest.mark.parametrize("name", _examples())
def test_no_cell_ends_with_a_printed_artist(name):
    """Check no cell ends on a bare matplotlib call (the gallery would print its repr)."""
    import ast

    for cell in _cells((EXAMPLES / name).read_text()):
        last = cell[-1]
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
            func = last.value.func
            attr = func.attr if isinstance(func, ast.Attribute) else ""
            assert not (attr.startswith("set_") or attr in _ARTIST_CALLS), (
                f"{name}, line {last.lineno}: a cell ends with .{attr}(...), whose return value "
                "the gallery prints; assign it (_ = ...)"
            )
