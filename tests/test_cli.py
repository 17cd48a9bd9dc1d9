"""Tests of the command-line demo (``python -m skfairlayer``)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skfairlayer.__main__ import main

_ROOT = str(Path(__file__).resolve().parents[1])


def _run(code):
    env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_is_plain_text(capsys):
    """Check --help prints plain text (no reST roles or literals) and the extra to install."""
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "FairnessLayerClassifier" in out
    assert 'pip install "skfairlayer[demo]"' in out
    for markup in (":class:", "``", ":func:", "~skfairlayer"):
        assert markup not in out


@pytest.mark.parametrize("package", ["pandas", "fairlearn"])
def test_missing_demo_package_exits_with_one_line(monkeypatch, package):
    """Check a missing pandas / fairlearn gives one line naming the extra and a non-zero exit."""
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError
    with pytest.raises(SystemExit) as info:
        main([])
    message = info.value.code
    assert isinstance(message, str)  # sys.exit(str): printed to stderr, exit status 1
    assert "\n" not in message
    assert package in message and 'pip install "skfairlayer[demo]"' in message


def test_missing_pandas_in_a_fresh_interpreter():
    """Check the demo without pandas exits 1 with a single stderr line and no traceback."""
    result = _run(
        "import sys; sys.modules['pandas'] = None\n"
        "import runpy; runpy.run_module('skfairlayer', run_name='__main__')"
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert 'pip install "skfairlayer[demo]"' in lines[0]
