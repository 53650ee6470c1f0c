"""Run notebooks top to bottom (as `nbdev_test` does: slow/notest cells skipped) and keep their small outputs.

The notebooks are the docs: a plot, a load report or a printed table should be visible on the page without
running anything. Outputs are kept when they are small (text up to TEXT_CHARS characters, an image up to
IMAGE_BYTES of PNG); larger ones (long array reprs, progress bars) are dropped, and cells marked `#| hide` keep
nothing. Execution counts are cleared afterwards by `nbdev_clean`, which keeps outputs.

    python tools/nb_outputs.py nbs/03_stdit.ipynb [more notebooks]     # rewrites them in place
"""
import base64, json, os, re, sys
from pathlib import Path

TEXT_CHARS = 3000
IMAGE_BYTES = 200_000
SKIP_FLAGS = {"slow", "notest"}
_DIRECTIVE = re.compile(r"^\s*#\s*\|\s*([\w:-]+)(.*)$")


def _directives(source: str) -> dict:
    out = {}
    for line in source.splitlines():
        m = _DIRECTIVE.match(line)
        if m: out[m.group(1)] = m.group(2).strip()
    return out


def _small(output: dict) -> bool:
    if output.get("output_type") == "error":
        return False
    if output.get("output_type") == "stream":
        text = "".join(output.get("text", ""))
        return len(text) <= TEXT_CHARS and "\r" not in text and "it/s]" not in text   # no progress bars
    data = output.get("data", {})
    if "image/png" in data:
        return len(base64.b64decode("".join(data["image/png"]))) <= IMAGE_BYTES
    text = "".join(data.get("text/plain", ""))
    return bool(text) and len(text) <= TEXT_CHARS and not data.get("text/html", "").count("<video")


def run(path: Path):
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb = read_nb(path)

    def skip(cell):
        if cell.cell_type != "code": return True
        d = _directives(cell.source)
        if "nbdev_export(" in cell.source or d.get("eval:", "").lower() == "false": return True
        return bool(SKIP_FLAGS & set(d))

    shell = CaptureShell(path)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        shell.run_all(nb, exc_stop=True, preproc=skip)
    finally:
        os.chdir(cwd)
    kept = dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code": continue
        d = _directives(cell.source)
        outs = [] if ("hide" in d or "export" in d) else [o for o in cell.get("outputs", []) if _small(o)]
        dropped += len(cell.get("outputs", [])) - len(outs)
        kept += len(outs)
        cell["outputs"] = outs
        cell["execution_count"] = None
    write_nb(nb, path)
    print(f"{path.name}: kept {kept} outputs, dropped {dropped}")


if __name__ == "__main__":
    os.environ.setdefault("OPENSORA_NB_PROGRESS", "0")
    os.environ.setdefault("GLOG_v", "3")
    for p in sys.argv[1:]:
        run(Path(p).resolve())
