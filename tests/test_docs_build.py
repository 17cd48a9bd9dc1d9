"""The Sphinx documentation builds offline with warnings as errors (gallery execution skipped).

The examples themselves run in tests/test_examples.py; this checks the pages, the
API reference generated from the docstrings and the gallery's generated pages.
Skipped when the docs extra (Sphinx, numpydoc, sphinx-gallery) is not installed.
"""

import html as html_lib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_without_warnings(tmp_path):
    """Check that sphinx-build -W succeeds on a copy of docs/ and examples/."""
    for module in ("sphinx", "numpydoc", "sphinx_gallery", "sphinx-mathjax-offline"):
        pytest.importorskip(module)
    # Build a copy, so that generated sources never land in the working tree.
    ignore = shutil.ignore_patterns("_build", "generated", "auto_examples", "gen_modules")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=ignore)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
        "-D", "plot_gallery=0", str(tmp_path / "docs"), str(tmp_path / "html"),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    html = tmp_path / "html"
    for page in (
        "index.html",
        "user_guide/decisions.html",
        "api.html",
        "generated/skfairlayer.FairnessLayerClassifier.html",
        "generated/skfairlayer.plotting.ParityTradeoffDisplay.html",
        "auto_examples/index.html",
        "auto_examples/plot_quickstart_adult.html",
    ):
        assert (html / page).is_file(), page
    _check_no_remote_scripts(html)
    _check_anchors(html)


def _check_no_remote_scripts(html):
    """No page loads a script or stylesheet from the network (MathJax ships with the site)."""
    remote = re.compile(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//[^"]+"')
    offenders = [
        f"{page.relative_to(html)}: {m.group(0)[:120]}"
        for page in html.rglob("*.html")
        for m in remote.finditer(page.read_text(errors="ignore"))
    ]
    assert not offenders, "\n".join(offenders[:20])
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert '_static/mathjax/tex-chtml.js' in (html / "user_guide" / "layer.html").read_text()


def _check_anchors(html):
    """Every in-site link with a #fragment (viewcode [docs] links included) finds its id."""
    ids, broken = {}, []
    for page in html.rglob("*.html"):
        for target, anchor in re.findall(r'href="([^"#:]*\.html)#([^"]+)"', page.read_text()):
            path = (page.parent / target).resolve()
            if path not in ids:
                text = path.read_text(errors="ignore") if path.is_file() else ""
                ids[path] = set(re.findall(r'id="([^"]+)"', text))
            if html_lib.unescape(anchor) not in ids[path]:
                broken.append(f"{page.relative_to(html)} -> {target}#{anchor}")
    assert not broken, f"{len(broken)} broken anchors:\n" + "\n".join(broken[:20])
