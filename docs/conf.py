# Sphinx configuration of the offline docs site. `make docs` (tools/docs.py site) stages the notebooks of nbs/,
# the pages of docs/ and generated API pages into build/docs_src/ and runs sphinx-build with this file.
# Nothing here reaches the network: MathJax is copied from a PyPI package into _static/, the theme ships its own
# assets, and the notebooks are rendered with the outputs they were saved with.
import os, sys
from pathlib import Path

ROOT = Path(os.environ.get("OPENSORA_NB_ROOT", Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(ROOT))

project = "opensora_nb"
author = "opensora_nb developers"
copyright = "2026 onwards, opensora_nb developers"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "conf.py"]
root_doc = "index"

# notebooks: rendered with their saved outputs (tools/nb_outputs.py keeps the small ones), never executed here
nb_execution_mode = "off"
nb_render_markdown_format = "myst"          # show_doc's markdown carries {target=...} link attributes
nb_merge_streams = True
nb_output_stderr = "remove-warn"
myst_enable_extensions = ["dollarmath", "amsmath", "attrs_inline", "colon_fence"]
myst_dmath_double_inline = True
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]

# math: MathJax 3 from the built site (tools/docs.py copies it into _static/mathjax)
mathjax_path = "mathjax/tex-chtml.js"

autodoc_default_options = {"members": True, "undoc-members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "sphinx_book_theme"
html_title = "opensora_nb"
html_static_path = ["_static"]
html_css_files = ["opensora_nb.css"]
html_show_sourcelink = False
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "search_bar_text": "Search the docs...",
}
html_last_updated_fmt = None


# The docstrings are markdown (nbdev's style: `code`, *emphasis*), autodoc reads reStructuredText: turn
# markdown code spans into literals and escape what reST would take for markup.
import re as _re

_CODE_SPAN = _re.compile(r"(`+)(.+?)\1")


def _markdown_docstring(app, what, name, obj, options, lines):
    if what in ("data", "attribute") and type(obj).__module__ == "builtins":
        lines[:] = []                     # a constant's "docstring" would be its type's (tuple, dict, ...)
        return
    for i, line in enumerate(lines):
        parts, pos = [], 0
        for m in _CODE_SPAN.finditer(line):
            parts.append(_re.sub(r"([*|_\\])", r"\\\1", line[pos:m.start()]))
            before = "\\ " if m.start() and line[m.start() - 1].isalnum() else ""
            after = "\\ " if m.end() < len(line) and line[m.end()].isalnum() else ""   # reST needs a break
            parts.append(before + "``" + m.group(2).replace("``", "` `") + "``" + after)
            pos = m.end()
        parts.append(_re.sub(r"([*|_\\])", r"\\\1", line[pos:]))
        lines[i] = "".join(parts)


def setup(app):
    app.connect("autodoc-process-docstring", _markdown_docstring)
