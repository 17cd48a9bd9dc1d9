"""``show_versions``: the system and the dependencies."""

import platform
import sys
from importlib import metadata

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
    return {"System": system, "Dependencies": deps}


def show_versions():
    """Print the system and the dependency versions.

    Useful in bug reports.

    Examples
    --------
    >>> from skfairlayer import show_versions
    >>> show_versions()  # doctest: +ELLIPSIS
    <BLANKLINE>
    skfairlayer: ...
    Dependencies:
    ...
    """
    from . import __version__

    print(f"\nskfairlayer: {__version__}")
    for section, items in _versions().items():
        print(f"\n{section}:")
        width = max(len(k) for k in items)
        for key, value in items.items():
            print(f"{key:>{width + 4}}: {value}")
