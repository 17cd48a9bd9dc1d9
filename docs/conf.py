"""Sphinx configuration of the skfairlayer documentation.

Builds offline, and the pages work offline: no intersphinx inventory is
downloaded unless the environment variable ``SKFAIRLAYER_DOCS_INTERSPHINX=1`` is
set, and MathJax is served from the site itself (``sphinx-mathjax-offline``
copies it into ``_static/mathjax``) rather than from a CDN. The gallery
(``examples/plot_*.py``) is executed at build time by sphinx-gallery; pass
``-D plot_gallery=0`` to skip running it.
"""

import os
import re
import sys
from importlib.util import find_spec

sys.path.insert(0, os.path.abspath(".."))  # a checkout builds without installing

import skfairlayer  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")

# -- Project -----------------------------------------------------------------
project = "skfairlayer"
author = "skfairlayer developers"
copyright = "skfairlayer developers, BSD-3-Clause"  # noqa: A001
release = skfairlayer.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions ----------------------------------------------------------------
#: Bundles MathJax into the site (``mathjax_path`` = ``_static/mathjax/tex-chtml.js``).
MATHJAX_OFFLINE = "sphinx-mathjax-offline"
if find_spec(MATHJAX_OFFLINE) is None:
    raise RuntimeError(
        "The documentation renders its math with a local copy of MathJax, from the "
        "sphinx-mathjax-offline package, which is not installed. Install the docs extra: "
        'pip install "skfairlayer[docs]".'
    )
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    MATHJAX_OFFLINE,
    "sphinx.ext.viewcode",
    "numpydoc",
]
HAVE_GALLERY = find_spec("sphinx_gallery") is not None
if HAVE_GALLERY:
    extensions.append("sphinx_gallery.gen_gallery")

if os.environ.get("SKFAIRLAYER_DOCS_INTERSPHINX") == "1":  # opt-in: needs the network
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "matplotlib": ("https://matplotlib.org/stable", None),
        "fairlearn": ("https://fairlearn.org/main", None),
    }

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.codeobj.json"]
root_doc = "index"
default_role = "literal"

autosummary_generate = True
autosummary_context = {"have_gallery": HAVE_GALLERY}
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"

numpydoc_show_class_members = False  # the class template lists the members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- HTML ----------------------------------------------------------------------
if find_spec("pydata_sphinx_theme") is not None:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_prev_next": False,
        "header_links_before_dropdown": 5,
        "secondary_sidebar_items": ["page-toc"],
    }
else:  # fall back to Sphinx's default theme
    html_theme = "alabaster"
html_title = f"skfairlayer {release}"
html_static_path = ["_static"]
html_show_sourcelink = False

# -- Gallery -------------------------------------------------------------------
if HAVE_GALLERY:
    sphinx_gallery_conf = {
        "examples_dirs": "../examples",
        "gallery_dirs": "auto_examples",
        "filename_pattern": r"/plot_",
        "ignore_pattern": r"__init__\.py",
        "doc_module": ("skfairlayer",),
        "backreferences_dir": os.path.join("gen_modules", "backreferences"),
        "reference_url": {"skfairlayer": None},  # local links only: no download
        "download_all_examples": False,
        "remove_config_comments": True,
        "abort_on_example_error": True,
        "within_subsection_order": "FileNameSortKey",
        "image_scrapers": ("matplotlib",),
        "min_reported_time": 1,
        # its execution-time pages load jQuery and DataTables from CDNs: the site must
        # work offline
        "write_computation_times": False,
    }


# -- viewcode back-links -------------------------------------------------------
# sphinx.ext.viewcode keeps one "documented as" module per source module, so the
# [docs] links of skfairlayer._criteria point to "skfairlayer.<name>" for every
# class of it once one (Criterion) is documented under the package. Record where
# each object is really documented and fix the links on the source pages.
_BACKLINK = re.compile(
    r'(<div class="viewcode-block" id="([^"]+)">\s*<a class="viewcode-back" href="[^"#]*#)[^"]+"'
)


def _record_documented_modules(app, doctree):
    from sphinx import addnodes

    where = app.env.__dict__.setdefault("skfairlayer_documented_in", {})
    for desc in doctree.findall(addnodes.desc):
        if desc.get("domain") != "py":
            continue
        for sig in desc:
            if isinstance(sig, addnodes.desc_signature) and sig.get("module"):
                where.setdefault(sig.get("fullname"), set()).add(sig.get("module"))


def _fix_backlinks(app, pagename, templatename, context, doctree):
    if not pagename.startswith("_modules/") or "body" not in context:
        return
    where = getattr(app.env, "skfairlayer_documented_in", {})

    def fix(match):
        modules = where.get(match.group(2), ())
        if len(modules) != 1:
            return match.group(0)
        (module,) = modules
        return f'{match.group(1)}{module}.{match.group(2)}"'


    context["body"] = _BACKLINK.sub(fix, context["body"])


def setup(app):
    app.connect("doctree-read", _record_documented_modules)
    app.connect("html-page-context", _fix_backlinks)
