"""Training end to end: the commands on a tiny world of mp4 files, two msrun workers against one process, a kill
while a checkpoint is written, resume across processes. The notebook `14_train` pins the parts (AdamW against numpy, the
loss scale against DynamicLossScaler, PyNative = compiled, PyNative resume, fp16 overflow, Latte joint images)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

BIN = Path(sys.executable).parent
# msrun starts `python` from PATH: the venv's first, as an activated environment would have it
ENV = dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "Six 8-frame mp4 clips (one of them not a video) in a header-less Open-Sora CSV, and tiny weights."
    from opensora_nb.data.video import write_video
    from opensora_nb.pipelines import save_tiny_opensora
    root = tmp_path_factory.mktemp("train_world")
    weights = save_tiny_opensora(root / "weights")
    rows = []
    for i in range(6):
        frames = np.zeros((8, 32, 32, 3), np.uint8)
        for f in range(8):
            frames[f, 8:20, 2 + 2 * f:14 + 2 * f] = (255, 40 * i, 0)
        write_video(root / f"clip{i}.mp4", frames, fps=8)
        rows.append(f"clip{i}.mp4,a block moves right {i}")
    (root / "clip5.mp4").write_bytes(b"not a video")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root, weights


def tiny_config(root, weights, out, **over) -> Path:
    cfg = dict(csv_path=str(root / "train.csv"), video_folder=str(root), model_type="STDiT",
               model_config=dict(input_size=[4, 4, 4], hidden_size=64, depth=2, num_heads=4, caption_channels=32),
               pretrained_model_path=weights["ckpt_path"], vae_checkpoint=weights["vae_path"],
               t5_model_dir=weights["t5_model_dir"], model_max_length=12, image_size=32, num_frames=4, frame_stride=2,
               batch_size=2, train_steps=2, ckpt_save_steps=1, output_path=str(out), start_learning_rate=1e-3,
               seed=5, mode="pynative", use_ema=False)   # compiled = PyNative is pinned in 14_train
    cfg.update(over)
    path = Path(out).with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(cmd, timeout=600):
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert r.returncode == 0, f"{cmd[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])


def weights_of(out):
    from safetensors.numpy import load_file
    return load_file(str(Path(out) / "model.safetensors"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(world, tmp_path_factory):
    "opensora-train, one process, global batch 2, 2 steps: the reference of the next two tests."
    root, weights = world
    out = tmp_path_factory.mktemp("one") / "run"
    summary = run([str(BIN / "opensora-train"), "--config", str(tiny_config(root, weights, out))])
    assert summary["steps"] == 2 and summary["skip_counts"] == {"not_a_video": 1}
    return out, summary


def test_two_msrun_workers_equal_one_process(world, one_process, tmp_path):
    "Two msrun workers with batch 1 each end with the weights of one process with batch 2."
    root, weights = world
    t0 = time.time()
    cfg = tiny_config(root, weights, tmp_path / "two", batch_size=1, use_parallel=True)
    r = subprocess.run([str(BIN / "msrun"), "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
                        f"--master_port={free_port()}", f"--log_dir={tmp_path / 'msrun_logs'}", "--join=True",
                        str(BIN / "opensora-train"), "--config", str(cfg)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    wall = time.time() - t0
    logs = "".join(p.read_text() for p in sorted((tmp_path / "msrun_logs").glob("*.log")))
    assert r.returncode == 0, f"msrun failed:\n{r.stderr[-2000:]}\n{logs[-4000:]}"
    a, b = weights_of(one_process[0]), weights_of(tmp_path / "two")
    start = load_start(weights)
    moved = max(np.abs(a[k] - start[k]).max() for k in a if k in start)
    diff = max(np.abs(a[k] - b[k]).max() for k in a)
    print(f"msrun 2 workers: wall {wall:.1f} s; max weight difference vs 1 process {diff:.2e} "
          f"(the 2 steps moved the weights by up to {moved:.2e})")
    assert moved > 1e-4
    assert diff <= 1e-4 * moved


def load_start(weights):
    from safetensors.numpy import load_file
    return load_file(weights["ckpt_path"])


def test_resume_is_exact(world, one_process, tmp_path):
    """Stopped after step 1, resumed to 2 in a new process = the 2 steps in one go (losses and weights, bit for bit).
    The stop: the one-process run's output folder as it stood after step 1 (its step-1 checkpoint and log line)."""
    root, weights = world
    cut = tmp_path / "cut"
    (cut / "ckpt").mkdir(parents=True)
    shutil.copy(one_process[0] / "ckpt" / "step_000001.safetensors", cut / "ckpt")
    (cut / "loss.jsonl").write_text((one_process[0] / "loss.jsonl").read_text())   # step 2's line is cut on resume
    run([str(BIN / "opensora-train"), "--config", str(tiny_config(root, weights, cut)), "--resume", "latest"])
    log = lambda out: [json.loads(l) for l in (out / "loss.jsonl").read_text().splitlines()]
    la, lb = log(one_process[0]), log(tmp_path / "cut")
    assert [r["step"] for r in lb] == [1, 2]
    diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(la, lb))
    print(f"resume: max loss difference {diff:.2e}")
    assert diff == 0.0
    a, b = weights_of(one_process[0]), weights_of(tmp_path / "cut")
    assert max(np.abs(a[k] - b[k]).max() for k in a) == 0.0


KILLED_WRITER = r'''
import os, sys, time
import numpy as np, mindspore as ms
from mindspore import Parameter, Tensor, nn
from opensora_nb.train import save_train_checkpoint
class Big(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.ones((1024, 1024), np.float32)), name="w")
cell = Big()
save_train_checkpoint(sys.argv[1], cell, {"step": 1})
real_fsync = os.fsync
def slow_fsync(fd):
    print("WRITING", flush=True); time.sleep(60); real_fsync(fd)
os.fsync = slow_fsync
cell.w.set_data(Tensor(np.full((1024, 1024), 2.0, np.float32)))
save_train_checkpoint(sys.argv[1], cell, {"step": 2})
'''


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    "SIGKILL while step 2's checkpoint is being written: step 1's stays readable and is the latest."
    from opensora_nb.train import latest_checkpoint, read_train_state
    from safetensors.numpy import load_file
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        for line in p.stdout:
            if "WRITING" in line:
                break
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert "step_000002.safetensors" not in names and any(n.endswith(f".tmp{p.pid}") for n in names), names
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_000001.safetensors" and read_train_state(latest)["step"] == 1
    assert (load_file(str(latest))["w"] == 1.0).all()


def test_plan_train_config_typo_is_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("data_path: x.json\nlearning_rte: 1.0e-4\n")
    r = subprocess.run([str(BIN / "opensora-plan-train"), "--config", str(tmp_path / "bad.yaml")],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and "learning_rte" in r.stderr and "learning_rate" in r.stderr, r.stderr
