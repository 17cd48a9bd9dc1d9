"""``show_versions``: the system, the dependencies and the solver's compiled passes."""

import platform
import sys
from importlib import metadata

from . import _compiled

__all__ = ["show_versions"]

_DEPENDENCIES = ("numpy", "scipy", "scikit-learn", "osqp", "joblib", "pandas", "matplotlib")


def _versions():
    """Sections of ``show_versions``: name -> {item: value}."""
    system = {
        "python": sys.version.replace("\n", " "),
        "executable": sys.executable,
        "machine": platform.platform(),
    }
    deps = {}
    for name in _DEPENDENCIES:
        try:
            deps[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            deps[name] = None
    kernels = _compiled.kernels
    if kernels is None:
        passes = "numpy (compiled passes not built, or SKFAIRLAYER_PURE_NUMPY is set)"
    else:
        passes = "compiled, AVX-512 loops" if kernels.simd() else "compiled, portable loops"
    return {"System": system, "Dependencies": deps, "Exact solver": {"passes": passes}}


def show_versions():
    """Print the system, the dependency versions and which passes the exact solver runs.

    Useful in bug reports. "compiled" means the C extension
    ``skfairlayer._kernels`` was built at install time (it needs a C compiler)
    and is in use; "numpy" means the solver runs its numpy passes (same
    answers, slower on large batches).

    Examples
    --------
    >>> from skfairlayer import show_versions
    >>> show_versions()  # doctest: +ELLIPSIS
    <BLANKLINE>
    skfairlayer: ...
    Exact solver:
        passes: ...
    """
    from . import __version__

    print(f"\nskfairlayer: {__version__}")
    for section, items in _versions().items():
        print(f"\n{section}:")
        width = max(len(k) for k in items)
        for key, value in items.items():
            print(f"{key:>{width + 4}}: {value}")
