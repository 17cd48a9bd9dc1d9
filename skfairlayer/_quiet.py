"""A guard that silences stdout around chatty C solvers.

OSQP's polishing prints through Python's ``sys.stdout`` (``PySys_WriteStdout``)
and HiGHS's MIP solver through C's ``stdout`` (descriptor 1), even when asked
to be quiet; a library never prints to stdout, so their solves run inside
:func:`quiet_stdout`. It redirects process-wide state (``sys.stdout`` and the
descriptor), so it is used only around those calls.
"""

import contextlib
import ctypes
import io
import os
import sys

__all__ = ["quiet_stdout"]


@contextlib.contextmanager
def quiet_stdout(active=True):
    """Silence ``sys.stdout`` and the stdout file descriptor while active."""
    if not active:
        yield
        return
    if sys.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
    with contextlib.redirect_stdout(io.StringIO()), _null_descriptor(1):
        yield


@contextlib.contextmanager
def _null_descriptor(fd):
    """Point ``fd`` at the null device while active (nothing if it cannot be duplicated)."""
    try:
        saved = os.dup(fd)
    except OSError:  # no usable descriptor: nothing to silence
        yield
        return
    try:
        _flush_c_stdio()  # text buffered before the guard still goes where it was going
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        _flush_c_stdio()  # text a C library buffered goes to the null device, not later
        os.dup2(saved, fd)
        os.close(saved)


def _flush_c_stdio():
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no C runtime (Windows)
        ctypes.CDLL(None).fflush(None)
