"""Tests of the shared pytest configuration (tests/conftest.py)."""

from pathlib import Path

_CONFTEST = Path(__file__).with_name("conftest.py")

_TESTS = '''
import pytest


def test_fast():
    pass


@pytest.mark.slow
def test_sweep():
    pass
'''


def _project(pytester):
    pytester.makeconftest(_CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    slow: long sweeps\n")
    pytester.makepyfile(test_scratch=_TESTS)


def test_slow_tests_are_deselected_not_skipped(pytester):
    """Check a default run deselects the slow tests (no 'skipped' entries clutter it)."""
    _project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=1, skipped=0)


def test_run_slow_includes_them(pytester):
    """Check --run-slow runs the slow tests too."""
    _project(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--run-slow")
    result.assert_outcomes(passed=2, deselected=0, skipped=0)
