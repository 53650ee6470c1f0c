"""The project's Jupyter kernel, and notebooks run through it top to bottom as `nbdev_test` runs them.

`make lab` registers the kernel `opensora_nb` (this virtual environment's python) and opens JupyterLab on nbs/;
the same kernel runs the notebooks here, so what a reader steps through in JupyterLab is what the tests ran.
Cells flagged `#| slow` / `#| notest` (settings.ini's tst_flags) and `#| eval: false` are skipped, as nbdev_test
skips them.

    python tools/lab.py install-kernel [--prefix DIR]      # DIR/share/jupyter/kernels/opensora_nb (default sys.prefix)
    python tools/lab.py run nbs/00_runtime.ipynb [...]     # each notebook through the kernel; one JSON line each
"""
import argparse, json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "opensora_nb"
DISPLAY_NAME = "Python (opensora_nb)"
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w-]+):?\s*(.*)$")


def install_kernel(prefix=None) -> Path:
    "Register the kernel under `prefix` (default: this environment); returns the kernel's folder."
    prefix = Path(prefix or sys.prefix)
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL,
                    "--display-name", DISPLAY_NAME], check=True, stdout=subprocess.DEVNULL)
    folder = prefix / "share" / "jupyter" / "kernels" / KERNEL
    spec = json.loads((folder / "kernel.json").read_text())
    # the kernel quiets MindSpore's C++ log and the progress bars, as the tests do
    spec.setdefault("env", {}).update({"GLOG_v": "3", "OPENSORA_NB_PROGRESS": "0"})
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return folder


def test_flags() -> set:
    "settings.ini's `tst_flags` (cells flagged with them are skipped by nbdev_test)."
    from configparser import ConfigParser
    cfg = ConfigParser(); cfg.read(ROOT / "settings.ini")
    return set(cfg["DEFAULT"].get("tst_flags", "").split())


def skipped(cell, flags) -> bool:
    "Whether nbdev_test would skip this cell."
    if cell.cell_type != "code": return True
    for line in cell.source.splitlines():
        m = _DIRECTIVE.match(line)
        if not m: continue
        name, value = m.group(1), m.group(2).strip().lower()
        if name in flags or (name == "eval" and value == "false"): return True
    return "nbdev_export(" in cell.source


def run_notebook(path, kernel_name: str = KERNEL, timeout: int = 600, flags=None) -> dict:
    "Execute the notebook's cells (minus the skipped ones) in a fresh kernel, from the notebook's folder."
    import nbformat
    from nbclient import NotebookClient
    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    flags = test_flags() if flags is None else flags
    nb.cells = [c for c in nb.cells if not skipped(c, flags)]
    t0 = time.time()
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=timeout, resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    return {"notebook": path.name, "cells": len(nb.cells), "seconds": round(time.time() - t0, 1), "errors": len(errors)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install-kernel"); i.add_argument("--prefix", default=None)
    r = sub.add_parser("run"); r.add_argument("notebooks", nargs="+"); r.add_argument("--kernel", default=KERNEL)
    a = p.parse_args(argv)
    if a.cmd == "install-kernel":
        folder = install_kernel(a.prefix)
        print(f"kernel {KERNEL!r} -> {json.loads((folder / 'kernel.json').read_text())['argv'][0]} ({folder})")
        return 0
    os.environ.setdefault("GLOG_v", "3")
    bad = 0
    for nb in a.notebooks:
        try: r = run_notebook(nb, a.kernel)
        except Exception as e: r = {"notebook": Path(nb).name, "error": f"{type(e).__name__}: {str(e)[-500:]}"}; bad += 1
        print(json.dumps(r))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
