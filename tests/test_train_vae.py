"CausalVAE training: the loss falls on a tiny overfit, exact resume, opensora-train-vae end to end, a typo'd key refused."
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from opensora_nb.data.video import write_video
from opensora_nb.runtime import set_kernels, set_seed
from opensora_nb.train_vae import CausalVAETrainer, tiny_train_vae_config, vae_train_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    "Three real mp4 clips of moving colour stripes (12 frames, 24x24)."
    d = tmp_path_factory.mktemp("clips")
    t, y, x = np.meshgrid(np.arange(12), np.arange(24), np.arange(24), indexing="ij")
    for i in range(3):
        frames = (127 + 120 * np.sin((x + 2 * t * (i + 1)) / 4.0 + i))[..., None] * np.array([1.0, 0.6, 0.3])
        write_video(d / "sub" / f"clip{i}.mp4", frames.astype(np.uint8), fps=8)
    return d


@pytest.fixture(scope="module")
def lpips_random():
    "LPIPS(VGG16) with random weights: the perceptual term without the user's files."
    from opensora_nb.metrics import LPIPS
    set_seed(0)
    return LPIPS("vgg")


def trainer(clips, out, perceptual_loss=None, **kw):
    set_kernels("native"); set_seed(0)
    cfg = vae_train_config(dict(video_path=str(clips), output_dir=str(out), num_frames=9, resolution=16,
                                model_config=tiny_train_vae_config(), perceptual_weight=1.0 if perceptual_loss else 0.0,
                                disc_start=0, disc_num_layers=2, disc_ndf=8, lr=1e-3, time_lr=1e-3, mode="pynative",
                                save_steps=1), **kw)
    return CausalVAETrainer(cfg, perceptual_loss=perceptual_loss)


def test_loss_falls_and_resume_is_exact(clips, tmp_path, lpips_random):
    full = trainer(clips, tmp_path / "full", lpips_random).fit(progress_bar=False, max_steps=3)
    nll = full["nll"]
    assert nll[-1] < 0.9 * nll[0], f"the reconstruction NLL did not fall on a tiny overfit: {nll}"
    assert all(np.isfinite(r["disc_loss"]) and r["d_weight"] > 0 for r in full["records"]), full["records"]
    log = [json.loads(l) for l in (tmp_path / "full" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and (tmp_path / "full" / "loss.png").stat().st_size > 0
    # stopped at step 1 (its checkpoint), resumed to 3: the same numbers as the uninterrupted run
    trainer(clips, tmp_path / "cut", lpips_random).fit(progress_bar=False, max_steps=1)
    trainer(clips, tmp_path / "cut", lpips_random, resume_from_checkpoint="latest").fit(progress_bar=False, max_steps=3)
    cut = [json.loads(l) for l in (tmp_path / "cut" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in cut] == [1, 2, 3]
    for key in ("loss", "nll_loss", "disc_loss", "g_loss"):
        diff = max(abs(a[key] - b[key]) for a, b in zip(cut, log))
        assert diff <= 1e-5 * max(1.0, abs(log[0][key])), f"resumed {key} differs from the uninterrupted run by {diff}"
    from safetensors.numpy import load_file
    a, b = (load_file(str(p / "ckpt" / "step_000003.safetensors")) for p in (tmp_path / "full", tmp_path / "cut"))
    assert set(a) == set(b) and any(k.startswith("loss.discriminator.main.3.running_mean") for k in a)
    assert any(k.startswith("opt_d.exp_avg.") for k in a) and not any("perceptual" in k for k in a)
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= 1e-5, f"resumed checkpoint differs by {worst}"


def test_command_end_to_end_and_typo(clips, tmp_path):
    (tmp_path / "vae.json").write_text(json.dumps(tiny_train_vae_config()))
    (tmp_path / "cfg.yaml").write_text(f"video_path: {clips}\nmodel_config: {tmp_path / 'vae.json'}\nnum_frames: 9\n"
                                       "resolution: 16\nperceptual_weight: 0\ndisc_num_layers: 2\ndisc_ndf: 8\n"
                                       "disc_start: 1\nmode: pynative\n")
    env = dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0")
    exe = str(Path(sys.executable).parent / "opensora-train-vae")
    r = subprocess.run([exe, "--config", str(tmp_path / "cfg.yaml"), "--output_dir", str(tmp_path / "run"),
                        "--max_steps", "1", "--save_steps", "1", "--kl_weight", "1e-6"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["steps"] == 1 and Path(line["checkpoint"]).is_file(), line
    assert (tmp_path / "run" / "hf" / "diffusion_pytorch_model.safetensors").is_file()
    from opensora_nb.models.causalvae import CausalVAEModel
    CausalVAEModel.from_pretrained(tmp_path / "run" / "hf")          # the trained VAE loads as a released one
    # a typo'd key is refused with its near match and the valid keys
    (tmp_path / "bad.yaml").write_text(f"video_path: {clips}\ndisc_strat: 3\n")
    r = subprocess.run([exe, "--config", str(tmp_path / "bad.yaml")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "disc_strat" in r.stderr and "did you mean disc_start" in r.stderr and "valid keys" in r.stderr, r.stderr
    # perceptual term without weights: the message names the files and the way out
    r = subprocess.run([exe, "--config", str(tmp_path / "cfg.yaml"), "--perceptual_weight", "1", "--max_steps", "1",
                        "--output_dir", str(tmp_path / "run2")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "vgg16-397923af.pth" in r.stderr and "--perceptual_weight 0" in r.stderr, r.stderr[-2000:]
