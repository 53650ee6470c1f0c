"""`make demo` runs `opensora-demo`: here it runs as a newcomer's shell would, in a subprocess, in its default (graph)
mode, in an empty working directory, and its outputs are checked: exit status 0, a JSON summary, readable mp4 files
of the announced shape, and nothing but the requested output folder written into the working directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_demo_command_runs_compiled(tmp_path):
    exe = Path(sys.executable).with_name("opensora-demo")
    assert exe.is_file(), f"the console command is not installed next to {sys.executable}"
    env = {k: v for k, v in os.environ.items() if k not in ("MS_OM_PATH",)}
    env["OPENSORA_NB_PROGRESS"] = "0"
    run = subprocess.run([str(exe), "--out_dir", "out", "--steps", "4"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "mode=graph" in run.stderr                       # the default: compiled
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["finite"] and summary["sampling_steps"] == 4
    assert summary["video_shape"] == [2, 3, 4, 64, 64]
    import decord
    for path in summary["outputs"]:
        reader = decord.VideoReader(str(tmp_path / path) if not os.path.isabs(path) else path)
        frames = reader.get_batch(list(range(len(reader)))).asnumpy()
        assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no rank_0/, kernel_meta/, ... left behind
