"JupyterLab's kernel: registered as `opensora_nb` on this environment's python, and the notebooks run through it."
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import lab  # noqa: E402

# The cheap set: the notebooks that run in seconds. `OPENSORA_NB_LAB_NOTEBOOKS=all` runs every notebook (minutes;
# `make test` already runs them all in-process with nbdev_test).
FAST = ["00_runtime.ipynb"]
_ALL = os.environ.get("OPENSORA_NB_LAB_NOTEBOOKS", "") == "all"
NOTEBOOKS = sorted(p.name for p in (ROOT / "nbs").glob("[0-9]*.ipynb")) if _ALL else FAST


@pytest.fixture(scope="module")
def kernel_prefix(tmp_path_factory):
    pytest.importorskip("ipykernel"); pytest.importorskip("nbclient")
    prefix = tmp_path_factory.mktemp("jupyter")
    lab.install_kernel(prefix)                         # the same registration `make lab` does, in a scratch prefix
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter") + (os.pathsep + old if old else "")
    yield prefix
    if old is None: os.environ.pop("JUPYTER_PATH", None)
    else: os.environ["JUPYTER_PATH"] = old


def test_kernel_spec_points_at_this_python(kernel_prefix):
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec(lab.KERNEL)
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    assert spec.display_name == lab.DISPLAY_NAME and spec.env["GLOG_v"] == "3"
    out = subprocess.run([spec.argv[0], "-c", "import opensora_nb, mindspore; print(opensora_nb.__file__)"],
                         capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).resolve().parent == (ROOT / "opensora_nb").resolve()


def test_skips_what_nbdev_test_skips():
    import nbformat
    flags = lab.test_flags()
    assert {"slow", "notest"} <= flags
    cell = lambda s: nbformat.v4.new_code_cell(s)
    assert lab.skipped(cell("#| slow\nx = 1"), flags) and lab.skipped(cell("#| eval: false\nx = 1"), flags)
    assert not lab.skipped(cell("#| export\nx = 1"), flags) and not lab.skipped(cell("x = 1"), flags)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_through_the_kernel(kernel_prefix, name):
    r = lab.run_notebook(ROOT / "nbs" / name, lab.KERNEL)
    assert r["errors"] == 0 and r["cells"] > 3, r
