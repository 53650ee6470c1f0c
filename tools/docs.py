"""Build README.md from nbs/index.ipynb, and an offline HTML docs site from nbs/*.ipynb.

Quarto (which `nbdev_readme`/`nbdev_docs` need) is not installable from the package registries, so these
two jobs are done with nbconvert. nbdev's directives are honoured: cells whose first lines carry
`#| hide` are dropped, other `#|` directive lines are stripped, `#| export` cells are shown as code.

    python tools/docs.py readme            # rewrite README.md
    python tools/docs.py readme --check    # exit 1 if README.md is stale
    python tools/docs.py site _docs        # HTML pages + index.html
"""
import argparse, html, re, sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter, MarkdownExporter
from nbconvert.preprocessors import Preprocessor

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w-]+)")


def _directives(source: str):
    return [m.group(1) for m in map(_DIRECTIVE.match, source.splitlines()) if m]


class NbdevDirectives(Preprocessor):
    "Drop hidden cells and strip `#|` lines, as nbdev's renderers do."

    def preprocess(self, nb, resources):
        cells = []
        for cell in nb.cells:
            if cell.cell_type == "code":
                d = _directives(cell.source)
                if {"hide", "exporti", "default_exp"} & set(d) or not cell.source.strip():
                    continue
                cell.source = "\n".join(l for l in cell.source.splitlines() if not _DIRECTIVE.match(l)).strip()
                if "hide_output" in d:
                    cell.outputs = []
            cells.append(cell)
        nb.cells = cells
        return nb, resources


def _read(path):
    return nbformat.read(str(path), as_version=4)


def readme_text() -> str:
    exporter = MarkdownExporter()
    exporter.register_preprocessor(NbdevDirectives(), enabled=True)
    body, _ = exporter.from_notebook_node(_read(NBS / "index.ipynb"))
    note = "<!-- generated from nbs/index.ipynb by `make readme`; edit the notebook, not this file -->\n\n"
    return note + re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"


def build_site(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    exporter.register_preprocessor(NbdevDirectives(), enabled=True)
    links = []
    for nb_path in sorted(NBS.glob("*.ipynb")):
        body, _ = exporter.from_notebook_node(_read(nb_path))
        (out / f"{nb_path.stem}.html").write_text(body, encoding="utf-8")
        links.append(nb_path.stem)
    items = "\n".join(f'<li><a href="{s}.html">{html.escape(s)}</a></li>' for s in links)
    (out / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>opensora_nb</title></head>"
        f"<body><h1>opensora_nb</h1><p>Notebooks, rendered offline.</p><ul>{items}</ul></body></html>",
        encoding="utf-8")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("readme"); r.add_argument("--check", action="store_true")
    s = sub.add_parser("site"); s.add_argument("out", nargs="?", default="_docs")
    a = p.parse_args(argv)
    if a.cmd == "readme":
        text, path = readme_text(), ROOT / "README.md"
        if a.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print("README.md is stale: run `make readme` (it is generated from nbs/index.ipynb)")
                return 1
            return 0
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    else:
        print(f"wrote {build_site(Path(a.out))}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
