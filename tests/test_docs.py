"The docs site: built offline from a few notebooks and checked in headless Chromium (make docs-check does all pages)."
import importlib.util, json, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import docs, docs_check  # noqa: E402


def _need_docs_tools():
    for mod in ("sphinx", "myst_nb", "sphinx_book_theme", "websocket"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed: `pip install -e '.[docs]'` (make docs installs the docs extra)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _need_docs_tools()
    tmp = tmp_path_factory.mktemp("docs")
    return docs.build_site(tmp / "site", tmp / "stage" / "src", only=["03_stdit", "19_metrics"])


def test_pages_carry_the_notebooks_outputs_api_and_local_math(site):
    stdit = (site / "03_stdit.html").read_text()
    assert "STDiT" in stdit and 'src="_images/' in stdit                      # a saved plot is on the page
    assert "_static/mathjax/tex-chtml.js" in stdit and (site / "_static/mathjax/tex-chtml.js").is_file()
    assert "cdn" not in stdit.lower().split("mathjax")[0][-200:]
    api = (site / "api" / "models.stdit.html").read_text()
    import opensora_nb.models.stdit as m
    missing = [n for n in m.__all__ if f'id="opensora_nb.models.stdit.{n}"' not in api]
    assert not missing, f"API page lacks {missing}"
    home = (site / "index.html").read_text()
    assert "Open-Sora v1.0" in home and 'href="open_sora_plan_v1.html"' in home and 'href="03_stdit.html"' in home
    plan = (site / "open_sora_plan_v1.html").read_text()
    assert "27.171" in plan and "LanguageBind/Open-Sora-Plan-v1.0.0" in plan


def test_staging_applies_nbdev_directives(tmp_path):
    nb = docs.page_notebook(ROOT / "nbs" / "03_stdit.ipynb")
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    assert not any(s.lstrip().startswith("#|") for s in sources)
    assert not any("from nbdev.showdoc import" in s for s in sources)           # the #| hide cell is gone
    shows = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("show_doc(")]
    assert shows and all("remove-input" in c.metadata.get("tags", []) for c in shows)
    md = [o["data"]["text/markdown"] for c in shows for o in c.outputs if "text/markdown" in o.get("data", {})]
    assert md and all("github.com" not in t and "_modules/opensora_nb/models/stdit.html" in t for t in md)


def test_site_in_headless_chromium(site, tmp_path):
    if docs_check.find_chromium() is None:
        pytest.skip("no Chromium on this machine: `apt-get install chromium` (make docs-check installs it)")
    r = docs_check.check(site, screenshots=tmp_path)
    counts = {k: r[k] for k in docs_check.COUNTED}
    assert not any(counts.values()), json.dumps(counts, indent=1)
    assert r["formulas"] > 10 and r["search_hits_stdit"] > 0
    for shot in ("home", "stdit"):
        png = (tmp_path / f"{shot}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
