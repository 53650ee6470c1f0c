"""Both text-to-video pipelines end to end on tiny random weights saved in the released on-disk layouts, and the
two sampling commands: every sampler, guidance on and off, cached embeddings, the same seed giving the same video,
an injected NaN caught, a split run (--save_latents, then --decode_latents) equal to a whole one, missing files,
and the compiled (graph-mode) denoiser giving the eager latents."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from opensora_nb.pipelines import (OpenSoraPipeline, OpenSoraPlanPipeline, NonFiniteError, save_tiny_opensora,
                                   save_tiny_opensora_plan)
from opensora_nb.diffusion.samplers import SAMPLERS, get_sampler
from opensora_nb.commands import sample_main, plan_sample_main

PROMPTS = ["a red circle moves left", "a blue square moves up"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    os_paths = save_tiny_opensora(d / "os")
    return dict(os=os_paths, plan=save_tiny_opensora_plan(d / "plan", os_paths["t5_model_dir"]), dir=d)


def test_opensora_same_seed_same_video_and_ddim(tiny):
    pipe = OpenSoraPipeline.from_pretrained(**tiny["os"], num_sampling_steps=3)
    a, b = pipe(PROMPTS, seed=5, progress=False), pipe(PROMPTS, seed=5, progress=False)
    np.testing.assert_array_equal(a.video, b.video)
    ddim = pipe(PROMPTS, seed=5, use_ddim=True, output="latents", progress=False)
    assert ddim.latents.shape == a.latents.shape and not np.array_equal(ddim.latents, a.latents)


def test_opensora_compiled_denoiser_gives_the_eager_latents(tiny):
    pipe = OpenSoraPipeline.from_pretrained(**tiny["os"], num_sampling_steps=3)
    eager = pipe(PROMPTS, seed=2, output="latents", progress=False).latents
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph = pipe(PROMPTS, seed=2, output="latents", progress=False).latents
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert np.abs(graph - eager).max() <= 1e-6 * np.abs(eager).max()


def test_plan_every_sampler_and_guidance(tiny):
    "Every sampler through the pipeline, its transformer compiled (GRAPH_MODE: one compile, then fast steps)."
    pipe = OpenSoraPlanPipeline.from_pretrained(**tiny["plan"])
    embeds = pipe.encode_prompts(PROMPTS[:1])
    pe, ne = embeds[0]
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        for name in SAMPLERS:
            pipe.sampler = get_sampler(name)
            lat = pipe.denoise(pe, ne, num_inference_steps=4, seed=0, progress=False)
            assert lat.shape == (1, 4, 3, 4, 4) and np.isfinite(lat.asnumpy()).all(), name
        pipe.sampler = get_sampler("DDIM")
        compiled = pipe.denoise(pe, ne, num_inference_steps=3, seed=0, progress=False).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    pipe.sampler = get_sampler("DDIM")
    guided = pipe.denoise(pe, ne, num_inference_steps=3, seed=0, progress=False).asnumpy()
    plain = pipe.denoise(pe, ne, num_inference_steps=3, guidance_scale=1.0, seed=0, progress=False).asnumpy()
    assert not np.array_equal(guided, plain)
    again = pipe(PROMPTS[:1], num_inference_steps=3, seed=0, progress=False)
    np.testing.assert_array_equal(again.latents, guided)                       # the same seed, the same latents
    assert np.abs(compiled - guided).max() <= 1e-6 * np.abs(guided).max()      # compiled = eager


def test_plan_nan_is_caught_with_its_block(tiny):
    pipe = OpenSoraPlanPipeline.from_pretrained(**tiny["plan"], sample_method="DDIM")
    w = pipe.transformer.temporal_transformer_blocks[0].ff.net[2].weight
    w.set_data(Tensor(np.full(w.shape, np.nan, np.float32)))
    with pytest.raises(NonFiniteError, match="step 0, first in LatteT2V.temporal_transformer_blocks.0"):
        pipe(PROMPTS[:1], num_inference_steps=3, progress=False)


def _yaml(tiny, steps=3):
    t = tiny["os"]
    path = tiny["dir"] / "tiny.yaml"
    path.write_text(f"""num_frames: 4
image_size: [32, 32]
model: {{type: STDiT, from_pretrained: {t['ckpt_path']}, hidden_size: 64, depth: 2, num_heads: 4}}
vae: {{type: VideoAutoencoderKL, from_pretrained: {t['vae_path']}}}
text_encoder: {{type: t5, from_pretrained: {t['t5_model_dir']}, model_max_length: 12}}
scheduler: {{type: iddpm, num_sampling_steps: {steps}, cfg_scale: 7.0}}
""")
    return path


def test_sample_command_split_run_equals_whole_and_cached_embeddings(tiny, tmp_path, capsys):
    cfg = _yaml(tiny)
    whole = ["--config", str(cfg), "--captions", *PROMPTS, "--mode", "1", "--batch_size", "2"]
    assert sample_main(whole + ["--output_path", str(tmp_path / "whole")]) == 0
    assert sample_main(whole + ["--output_path", str(tmp_path / "split"), "--save_latents"]) == 0
    assert sample_main(["--config", str(cfg), "--mode", "1", "--output_path", str(tmp_path / "split"),
                        "--decode_latents", str(tmp_path / "split" / "latents.npz")]) == 0
    import decord
    for a in sorted((tmp_path / "whole").glob("*.mp4")):
        b = tmp_path / "split" / a.name
        fa, fb = (decord.VideoReader(str(p)).get_batch(list(range(4))).asnumpy() for p in (a, b))
        np.testing.assert_array_equal(fa, fb)
        assert json.loads(a.with_suffix(".json").read_text())["prompt"] in PROMPTS
    # cached embeddings (as opensora-infer-t5 writes them) give the same latents as T5 in the run
    from opensora_nb.data.cache import save_text_cache
    pipe = OpenSoraPipeline.from_pretrained(**tiny["os"], num_sampling_steps=3)
    text = pipe.encode_prompts(PROMPTS)
    for i in range(2):
        save_text_cache(tmp_path / "cache" / f"{i}.npz", np.zeros(12), text["mask"].asnumpy()[i], text["y"].asnumpy()[i, 0])
    assert sample_main(["--config", str(cfg), "--embed_path", str(tmp_path / "cache"), "--mode", "1", "--batch_size", "2",
                        "--output_path", str(tmp_path / "cached"), "--save_latents"]) == 0
    with np.load(tmp_path / "cached" / "latents.npz") as z, np.load(tmp_path / "split" / "latents.npz") as w:
        np.testing.assert_array_equal(z["latents"], w["latents"])


def test_sample_command_errors(tiny, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("num_frame: 4\n")
    assert sample_main(["--config", str(tmp_path / "bad.yaml"), "--captions", "x"]) == 1
    assert "unknown config key(s) num_frame; valid keys:" in capsys.readouterr().err
    assert sample_main(["--ckpt_path", str(tmp_path / "OpenSora-v1-16x256x256.pth"), "--vae_checkpoint",
                        str(tmp_path / "sd-vae-ft-ema"), "--t5_model_dir", str(tmp_path / "t5"), "--captions", "x"]) == 1
    err = capsys.readouterr().err
    assert "missing weights (3)" in err and "hpcai-tech/Open-Sora" in err and "DeepFloyd/t5-v1_1-xxl" in err
    (tmp_path / "empty.txt").write_text("\n \n")
    assert sample_main(["--config", str(_yaml(tiny)), "--prompt_path", str(tmp_path / "empty.txt"), "--mode", "1"]) == 1
    assert "no prompt" in capsys.readouterr().err
    assert plan_sample_main(["--model_path", str(tmp_path), "--text_prompt", "x"]) == 1
    assert "LanguageBind/Open-Sora-Plan-v1.0.0" in capsys.readouterr().err


def test_plan_sample_command_in_a_subprocess(tiny, tmp_path):
    "The installed command, with a prompt file holding an empty line and non-ASCII text."
    exe = Path(sys.executable).with_name("opensora-plan-sample")
    (tmp_path / "p.txt").write_text("a red circle moves left\n\nun cercle rouge — 赤い円\n", encoding="utf-8")
    p = tiny["plan"]
    run = subprocess.run([str(exe), "--model_path", p["model_path"], "--version", p["version"], "--text_encoder_name",
                          p["text_encoder_name"], "--text_prompt", str(tmp_path / "p.txt"), "--sample_method", "DDIM",
                          "--num_sampling_steps", "3", "--save_img_path", str(tmp_path / "out"), "--mode", "1"],
                         capture_output=True, text=True, timeout=600, env={"OPENSORA_NB_PROGRESS": "0", "GLOG_v": "3",
                                                                          "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(summary["outputs"]) == 2 and all(Path(o).is_file() for o in summary["outputs"])
