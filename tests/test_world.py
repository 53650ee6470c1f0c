"""The built-in world's plumbing: a build folder of trained parts ships into a world folder in the released layouts,
the pipelines load it strictly through the same `from_pretrained` as released weights and sample videos of the
world's size, the same seed gives the same video, the demo and `opensora-world` fail clearly on what is missing."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from opensora_nb import world
from opensora_nb.shapes import is_held_out, parse_caption, train_specs

STDIT = dict(hidden_size=32, depth=1, num_heads=2, patch_size=[1, 2, 2], caption_channels=32)
SD_VAE = {"_class_name": "AutoencoderKL", "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
          "latent_channels": 4, "norm_num_groups": 8, "sample_size": 64}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    "A build folder of random parts (the shapes the trainers write), shipped into a fresh world folder."
    from opensora_nb.models.stdit import STDiT
    from opensora_nb.runtime import set_seed
    from opensora_nb.train_vae import FramewiseAutoencoderKL
    from opensora_nb.weights import save_checkpoint_atomic
    root = tmp_path_factory.mktemp("world")
    build, wdir = root / "build", root / "shipped"
    set_seed(0)
    world.write_world_t5(build / "t5", world.world_captions(train_specs()), d_model=32)
    FramewiseAutoencoderKL.from_config(SD_VAE).save_pretrained(build / "sd_vae" / "hf")
    world.standardize_sd_vae(build / "sd_vae" / "hf", build / "sd_vae" / "scaled", world.world_frames(4, num_frames=2))
    m = STDiT(input_size=(16, 8, 8), model_max_length=world.WORLD_TOKENS, **STDIT)
    save_checkpoint_atomic({n: p for n, p in m.parameters_and_names()}, build / "stdit" / "model.safetensors")
    (build / "stdit" / "loss.jsonl").write_text(json.dumps(dict(step=5, loss=1.0, step_s=0.5)) + "\n")
    cfg = root / "stdit.yaml"
    cfg.write_text(yaml.safe_dump(dict(model_config=STDIT)))
    info = world.ship_world(build, wdir, systems=("opensora",), stdit_config=cfg,
                            sample=dict(opensora=dict(sampling_steps=3)))
    return wdir, info


LATTE = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
             cross_attention_dim=16, attention_bias=True, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
             num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
             caption_channels=32, video_length=5)


@pytest.fixture(scope="module")
def shipped_plan(tmp_path_factory):
    "The Open-Sora-Plan half: a random tiny CausalVAE (standardized) and LatteT2V shipped into a fresh world folder."
    from opensora_nb.models.causalvae import CausalVAEModel, tiny_causalvae_config
    from opensora_nb.models.latte import LatteT2V
    from opensora_nb.runtime import set_seed
    root = tmp_path_factory.mktemp("world_plan")
    build, wdir = root / "build", root / "shipped"
    set_seed(0)
    world.write_world_t5(build / "t5", world.world_captions(train_specs()), d_model=32)
    CausalVAEModel.from_config(tiny_causalvae_config(resolution=64)).save_pretrained(build / "causalvae" / "hf")
    stats = world.standardize_causalvae(build / "causalvae" / "hf", build / "causalvae" / "scaled",
                                        world.world_clips(2, num_frames=world.WORLD_FRAMES["plan"]))
    LatteT2V(**LATTE).save_pretrained(build / "latte" / "model")
    (build / "latte" / "loss.jsonl").write_text(json.dumps(dict(step=7, loss=1.0, step_s=0.25)) + "\n")
    info = world.ship_world(build, wdir, systems=("plan",), sample=dict(plan=dict(num_inference_steps=4)))
    return wdir, info, stats


def test_plan_ships_and_samples(shipped_plan):
    wdir, info, stats = shipped_plan
    assert world.shipped_systems(wdir) == ["plan"]
    np.testing.assert_allclose(stats["scaled_std_after"], 1.0, atol=1e-4)        # 0.18215 z has unit std per channel
    assert info["plan"]["latte"]["steps"] == 7 and info["plan"]["vae"]["params"] > 1000
    assert {p.name for p in (wdir / "plan" / world.PLAN_VERSION).iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert (wdir / "plan" / "vae" / "config.json").is_file()                      # Open-Sora-Plan-v1.0.0's layout
    prompts = world.evaluation_prompts(2)
    pipe, _ = world.world_pipeline("plan", wdir)
    a, _ = world.sample_world("plan", prompts, seed=1, world_dir=wdir, pipe=pipe)
    assert a.shape == (2, world.WORLD_FRAMES["plan"], 64, 64, 3) and a.dtype == np.uint8
    b, _ = world.sample_world("plan", prompts, seed=1, world_dir=wdir, pipe=pipe)
    np.testing.assert_array_equal(a, b)


def test_ship_writes_the_released_layouts(shipped):
    wdir, info = shipped
    assert world.shipped_systems(wdir) == ["opensora"]
    assert info["opensora"]["stdit"]["steps"] == 5 and info["opensora"]["stdit"]["params"] > 1000
    assert (wdir / "opensora" / "vae" / "config.json").is_file()                   # sd-vae-ft-ema's layout
    assert (wdir / "opensora" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert {p.name for p in (wdir / "t5").iterdir()} >= {"config.json", "spiece.model", "model.safetensors"}
    pre = world.shipped_weights("opensora", wdir)["pretrained"]
    assert pre["num_sampling_steps"] == 3 and pre["hidden_size"] == 32 and pre["image_size"] == (64, 64)


def test_shipped_world_samples_and_repeats(shipped):
    wdir, _ = shipped
    pipe, _ = world.world_pipeline("opensora", wdir)
    prompts = world.evaluation_prompts(2)
    a, per_clip = world.sample_world("opensora", prompts, seed=3, world_dir=wdir, pipe=pipe)
    assert a.shape == (2, 16, 64, 64, 3) and a.dtype == np.uint8 and per_clip > 0
    b, _ = world.sample_world("opensora", prompts, seed=3, world_dir=wdir, pipe=pipe)
    np.testing.assert_array_equal(a, b)
    rep = world.match_report(a, prompts)                    # random weights: the report's shape, not its rates
    assert rep["seen"]["n"] == 1 and rep["held_out"]["n"] == 1
    assert [r["held_out"] for r in rep["rows"]] == [is_held_out(parse_caption(p)) for p in prompts]


def test_world_demo_on_a_world_folder(shipped, tmp_path):
    wdir, _ = shipped
    r = world.run_world_demo(tmp_path / "demo", num_prompts=2, world_dir=wdir, progress_bar=False)
    assert set(r) == {"opensora", "contact_sheet"} and Path(r["contact_sheet"]).stat().st_size > 1000
    assert all(Path(p).is_file() for p in r["opensora"]["outputs"])


def test_missing_world_is_a_clear_error(tmp_path, shipped):
    with pytest.raises(FileNotFoundError, match="make world"):
        world.shipped_weights("opensora", tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'plan' weights"):       # one system shipped, not the other
        world.shipped_weights("plan", shipped[0])
    with pytest.raises(ValueError, match="'opensora'"):
        world.shipped_weights("sora", world.WORLD_DIR if world.shipped_systems() else tmp_path) if world.shipped_systems() \
            else (_ for _ in ()).throw(ValueError("use 'opensora'"))


def test_world_command_refuses_a_missing_build(tmp_path):
    exe = Path(sys.executable).with_name("opensora-world")
    run = subprocess.run([str(exe), "ship", "--build", str(tmp_path / "nothing"), "--world_dir", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert run.returncode == 1 and "not found: train it first" in run.stderr, run.stderr[-2000:]


def test_pndm_refuses_too_few_steps():
    from opensora_nb.diffusion.samplers import PNDMSampler
    with pytest.raises(ValueError, match="num_inference_steps must be >= 4"):
        PNDMSampler().set_timesteps(2)
