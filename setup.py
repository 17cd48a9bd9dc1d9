"""Build hook: the optional compiled passes (``skfairlayer._kernels``).

Everything else is declared in ``pyproject.toml``. The extension
(``skfairlayer/_kernels.c``) is optional: without a C compiler the package
installs and runs on its numpy passes.
"""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "skfairlayer._kernels",
            ["skfairlayer/_kernels.c"],
            extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
            optional=True,
        )
    ]
)
