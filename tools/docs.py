"""Build README.md from nbs/index.ipynb, and an offline HTML docs site from nbs/*.ipynb and docs/.

Quarto (which `nbdev_readme`/`nbdev_docs` need) is not installable from the package registries. The README is
written with nbconvert; the site with Sphinx + myst-nb + sphinx-book-theme (all from PyPI), MathJax 3 copied into
the site from the `sphinx-mathjax-offline` wheel, so the pages work from a folder with no network. nbdev's
directives are honoured: cells whose first lines carry `#| hide` are dropped, other `#|` directive lines are
stripped, `#| export` cells are shown as code, `show_doc` cells show their rendered output only.

    python tools/docs.py readme            # rewrite README.md
    python tools/docs.py readme --check    # exit 1 if README.md is stale
    python tools/docs.py site _docs        # stage build/docs/src/, sphinx-build, copy the site to _docs/
"""
import argparse, functools, os, re, shutil, sys
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


DOCS = ROOT / "docs"
STAGE = ROOT / "build" / "docs" / "src"          # staged sources; sphinx writes build/docs/html, copied to _docs/
SYSTEMS = ("open_sora_v1", "open_sora_plan_v1")    # docs/*.md, listed first in this order
CONTACT_SHEET = "images/contact_sheet.png"          # nbs/images/contact_sheet.png, made by the demo when present
_MATHJAX_PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui")
_SOURCE_LINK = re.compile(r"\[source\]\(https?://[^)]*?/blob/[^/]+/(opensora_nb/[\w/]+)\.py(?:#L\d+)?\)(\{[^}]*\})?")


def notebook_pages():
    "The notebooks of nbs/ in file order (nbdev's convention: notebook order is dependency order), index first."
    nbs = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))
    return sorted(nbs, key=lambda p: p.stem != "index")


def exported_modules():
    "`{notebook stem: module}` from each notebook's `#| default_exp`."
    mods = {}
    for p in notebook_pages():
        for cell in _read(p).cells:
            m = re.search(r"^\s*#\s*\|\s*default_exp\s+([\w.]+)", cell.source, re.M)
            if cell.cell_type == "code" and m:
                mods[p.stem] = "opensora_nb." + m.group(1); break
    return mods


def _heading_after(text: str, end: int) -> str:
    m = re.compile(r"^#+\s+(\S+)", re.M).search(text, end)
    return m.group(1) if m else ""


@functools.lru_cache(maxsize=None)
def _viewcode_tags(module_path: str) -> tuple:
    "The names sphinx.ext.viewcode anchors in a module's source page: what autodoc documents, i.e. the names in"
    " `__all__` and the members defined in their class bodies."
    import ast
    from sphinx.pycode import ModuleAnalyzer
    path = ROOT / f"{module_path}.py"
    try: tags = ModuleAnalyzer.for_file(str(path), module_path.replace("/", ".")).find_tags()
    except Exception: return ()
    public = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            public = set(ast.literal_eval(node.value))
    return tuple(t for t in tags if t.split(".")[0] in public)


def _viewcode_anchor(module_path: str, name: str) -> str:
    "The anchor viewcode gives `name` ('' when it has none: a method set by `patch_method` has no tag of its own)."
    tags = _viewcode_tags(module_path)
    if name in tags: return name
    tails = [t for t in tags if t.split(".")[-1] == name.split(".")[-1]]
    return tails[0] if len(tails) == 1 else ""


def _local_source_links(md: str) -> str:
    "show_doc's `[source](github .../x.py#L12){...}` -> the site's own highlighted source (sphinx.ext.viewcode)."
    out, pos = [], 0
    for m in _SOURCE_LINK.finditer(md):
        anchor = _viewcode_anchor(m.group(1), _heading_after(md, m.end()))
        href = f"_modules/{m.group(1)}.html" + (f"#{anchor}" if anchor else "")
        out += [md[pos:m.start()], f'<a class="reference internal sd-source" href="{href}">source</a>']
        pos = m.end()
    return "".join(out) + md[pos:]


def page_notebook(path: Path):
    "A notebook as a docs page: nbdev directives applied, show_doc cells reduced to their output."
    nb = _read(path)
    cells = []
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type == "code":
            d = _directives(cell.source)
            if {"hide", "exporti", "default_exp"} & set(d) or not cell.source.strip():
                continue
            code = "\n".join(l for l in cell.source.splitlines() if not _DIRECTIVE.match(l)).strip()
            if not code: continue
            src, tags = cell.source, []
            cell.source = code
            if "hide_output" in d or re.search(r"^\s*#\s*\|\s*output:\s*false", src, re.M):
                cell.outputs = []
            if re.fullmatch(r"show_doc\(.*\)", code, re.S) or re.search(r"^\s*#\s*\|\s*echo:\s*false", src, re.M):
                tags.append("remove-input")
            for o in cell.get("outputs", []):
                data = o.get("data", {})
                if "text/markdown" in data:
                    md = data["text/markdown"]
                    md = "".join(md) if isinstance(md, list) else md
                    data["text/markdown"] = _local_source_links(re.sub(r"\A\s*---\s*\n", "", md))
                data.pop("application/vnd.jupyter.widget-view+json", None)
            if tags: cell.metadata["tags"] = tags
        cells.append(cell)
    nb.cells = cells
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    return nb


def _toctree(caption: str, entries, hidden=True) -> str:
    lines = ["```{toctree}", f":caption: {caption}", ":maxdepth: 1"] + ([":hidden:"] if hidden else [])
    return "\n".join(lines + [""] + list(entries) + ["```"])


def _write(path: Path, text: str):
    "Write only when changed, so that sphinx-build rebuilds only the pages whose source changed."
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _copy_mathjax(static: Path):
    import importlib.util
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None:
        raise SystemExit("MathJax is missing: `pip install sphinx-mathjax-offline` (make docs installs the docs extra)")
    src = Path(spec.origin).parent / "static" / "mathjax"
    for part in _MATHJAX_PARTS:
        a, b = src / part, static / "mathjax" / part
        if a.is_dir(): shutil.copytree(a, b, dirs_exist_ok=True)
        else: b.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(a, b)


def module_data(mod: str) -> list:
    "The constants a module exports (names in `__all__` bound by assignment; autodoc's `:members:` skips them)."
    import ast
    tree = ast.parse((ROOT / (mod.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    public, assigned = [], []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if getattr(t, "id", None) == "__all__": public = list(ast.literal_eval(node.value))
            elif isinstance(t, ast.Name): assigned.append(t.id)
    return [n for n in public if n in assigned]


def _unlink_missing(md: str, present: set) -> str:
    "Links to notebooks left out of a partial build become plain text (no dead links)."
    return re.sub(r"\[([^\]]+)\]\((\w+)\.ipynb\)", lambda m: m.group(0) if m.group(2) in present else m.group(1), md)


def api_pages(stage: Path, modules: dict) -> list:
    "One page per exported module (`automodule`, every name in `__all__`); returns their docnames."
    names = []
    for stem, mod in modules.items():
        name = f"api/{mod.removeprefix('opensora_nb.')}"
        consts = module_data(mod)
        data = "".join(f"\n.. autodata:: {mod}.{n}\n   :no-value:\n" for n in consts)
        exclude = f"   :exclude-members: {', '.join(consts)}\n" if consts else ""
        _write(stage / f"{name}.md", f"# `{mod}`\n\nFrom the notebook [{stem}](../{stem}.ipynb).\n\n"
               f"```{{eval-rst}}\n.. automodule:: {mod}\n   :members:\n{exclude}{data}```\n")
        names.append(name)
    _write(stage / "api" / "index.md", "# API reference\n\nEvery exported name, module by module, from the "
           "docstrings and signatures (the notebooks' `show_doc` cells show the same with their context).\n\n"
           + _toctree("Modules", [n.removeprefix("api/") for n in names], hidden=False) + "\n")
    return names


def stage_site(stage: Path = STAGE, only=None) -> Path:
    "Lay out build/docs/src/: conf.py, docs/*.md, the notebooks as pages, API pages, MathJax (`only`: these notebooks)."
    stage.mkdir(parents=True, exist_ok=True)
    static = stage / "_static"
    static.mkdir(exist_ok=True)
    for f in (DOCS / "_static").glob("*"): shutil.copy2(f, static / f.name)
    _copy_mathjax(static)
    if (NBS / "images").is_dir(): shutil.copytree(NBS / "images", stage / "images", dirs_exist_ok=True)
    pages = [p for p in notebook_pages() if only is None or p.stem in only or p.stem == "index"]
    modules = {k: v for k, v in exported_modules().items() if only is None or k in only}
    for p in pages:
        nb = page_notebook(p)
        if p.stem == "index":
            if (NBS / CONTACT_SHEET).is_file():
                nb.cells.insert(1, nbformat.v4.new_markdown_cell(
                    f"![What `opensora-demo` makes: one frame per clip and caption]({CONTACT_SHEET})"))
            systems = [f.stem for f in sorted(DOCS.glob("*.md"), key=lambda f: (SYSTEMS + (f.stem,)).index(f.stem))]
            nb.cells.append(nbformat.v4.new_markdown_cell("\n\n".join([
                _toctree("The two systems", systems),
                _toctree("Notebooks", [q.stem for q in pages if q.stem != "index"]),
                _toctree("Reference", ["api/index"])])))
        _write(stage / p.name, nbformat.writes(nb))
    present = {p.stem for p in pages}
    for f in DOCS.glob("*"):
        if f.suffix == ".py": _write(stage / f.name, f.read_text(encoding="utf-8"))
        if f.suffix == ".md": _write(stage / f.name, _unlink_missing(f.read_text(encoding="utf-8"), present))
    api_pages(stage, modules)
    return stage


def build_site(out: Path, stage: Path = STAGE, quiet: bool = True, only=None) -> Path:
    "Stage the sources and run sphinx-build (HTML) into `out`; warnings are printed, not fatal."
    import subprocess, time
    t0 = time.time()
    stage_site(stage, only)
    html = stage.parent / "html"         # myst-nb keeps its image files beside it, in build/docs/jupyter_execute
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-d", str(stage.parent / "doctrees"),
           str(stage), str(html)] + (["-q"] if quiet else [])
    env = {**os.environ, "OPENSORA_NB_ROOT": str(ROOT), "GLOG_v": os.environ.get("GLOG_v", "3"),
           "OPENSORA_NB_PROGRESS": "0"}
    r = subprocess.run(cmd, env=env)
    if r.returncode: raise SystemExit(f"sphinx-build failed ({r.returncode}): {' '.join(cmd)}")
    if Path(out).resolve() != html.resolve():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(html, out)
    print(f"built {out}/index.html in {time.time() - t0:.1f} s")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("readme"); r.add_argument("--check", action="store_true")
    s = sub.add_parser("site"); s.add_argument("out", nargs="?", default="_docs")
    s.add_argument("--only", nargs="+", default=None, help="build with these notebooks only (stems), e.g. 03_stdit")
    s.add_argument("--stage", default=str(STAGE), help="where to stage the sources (sphinx writes beside it)")
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
        build_site(Path(a.out), Path(a.stage), only=a.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
