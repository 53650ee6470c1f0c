"""`make demo` runs `opensora-demo`: here it runs as a newcomer's shell would, in a subprocess, in an empty working
directory, and its outputs are checked: exit status 0, a JSON summary, readable mp4 files of the announced shape, and
nothing but the requested output folder written into the working directory. Without the built-in world's weights in
the package the demo says so and runs the random-weight smoke run (compiled); with them, it samples the world."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from opensora_nb.world import shipped_systems


def _run(tmp_path, *args):
    exe = Path(sys.executable).with_name("opensora-demo")
    assert exe.is_file(), f"the console command is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k not in ("MS_OM_PATH",)}
    env["OPENSORA_NB_PROGRESS"] = "0"
    run = subprocess.run([str(exe), "--out_dir", "out", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no rank_0/, kernel_meta/, ... left behind
    return run, json.loads(run.stdout.strip().splitlines()[-1])


def _frames(path):
    import decord
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def test_smoke_demo_runs_compiled(tmp_path):
    run, summary = _run(tmp_path, "--smoke", "--steps", "4")
    assert "mode=graph" in run.stderr                       # the smoke run is compiled
    assert summary["finite"] and summary["sampling_steps"] == 4
    assert summary["video_shape"] == [2, 3, 4, 64, 64]
    for path in summary["outputs"]:
        frames = _frames(tmp_path / path if not os.path.isabs(path) else path)
        assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8


def test_default_demo(tmp_path):
    if not shipped_systems():      # the package without the world: a clear line, then the smoke run
        run, summary = _run(tmp_path, "--steps", "2")
        assert "weights are not in this package" in run.stdout and summary["sampling_steps"] == 2
        return
    run, summary = _run(tmp_path, "--num_prompts", "2")
    assert "all three match" in run.stdout and Path(tmp_path / summary["contact_sheet"]).is_file()
    for system in shipped_systems():
        assert summary[system]["seen"]["n"] == 1 and summary[system]["held_out"]["n"] == 1
        clips = sorted((tmp_path / "out" / system).glob("*.mp4"))
        assert len(clips) == 2 and _frames(clips[0]).shape[1:] == (64, 64, 3)
