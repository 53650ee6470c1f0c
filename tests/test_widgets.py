"""The JupyterLab panel (`opensora_nb.widgets.GenerateApp`) driven from code on tiny random weights in the released
layouts: a click of Generate for each system (progress bar at its end, a GIF or mp4 of the pipeline's frames, the
shapes-world verdict), the kept pipeline reused when only the schedule changes, errors written to the output area
instead of raised, and the system switch showing each system's own controls."""
import imageio.v3 as iio
import numpy as np
import pytest

from opensora_nb.pipelines import save_tiny_opensora, save_tiny_opensora_plan
from opensora_nb.widgets import GenerateApp, SamplerSteps, shipped_weights_of

CAPTION = "a red circle moves left on a black background"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("widgets")
    os_paths = save_tiny_opensora(d / "os")
    plan_paths = save_tiny_opensora_plan(d / "plan", os_paths["t5_model_dir"])
    return {"opensora": dict(pretrained={**os_paths, "num_sampling_steps": 3, "cfg_scale": 7.0},
                             sample=dict(seed=42, num_sampling_steps=3, cfg_scale=7.0)),
            "plan": dict(pretrained={**plan_paths, "sample_method": "DDIM"},
                         sample=dict(num_inference_steps=2, guidance_scale=7.5))}


def errors(app):
    return "".join(o.get("text", "") for o in app.output.outputs)


def test_opensora_click_gif_progress_verdict_and_kept_pipeline(tiny):
    app = GenerateApp(weights=tiny)
    assert (app.steps.value, app.guidance.value, app.seed.value) == (3, 7.0, 42)    # the weights' defaults
    app.prompt.value, app.steps.value = CAPTION, 2
    ticks = []
    app.progress.observe(lambda change: ticks.append(change["new"]), "value")
    out = app.generate()
    assert errors(app) == "" and out is not None
    assert ticks == [1, 2]                                           # one tick per denoising step, as it happens
    assert (app.progress.value, app.progress.max, app.progress.bar_style) == (2, 2, "success")
    assert app.video.layout.display is None and app.video.format == "gif" and app.video.value[:6] == b"GIF89a"
    frames = iio.imread(app.video.value, index=None, extension=".gif")
    assert frames.shape == (4, 256, 256, 3)                          # 4 frames of 32x32, shown 8x larger
    diff = np.abs(frames[:, ::8, ::8].astype(int) - out.video[0])    # the pipeline's frames, up to GIF's palette
    assert diff.mean() < 12, diff.mean()
    assert "shapes-world check" in app.verdict.value and "asked red" in app.verdict.value
    first = app._pipe
    app.steps.value, app.guidance.value, app.ddim.value = 3, 4.0, True   # schedule only: the same loaded pipeline
    assert app.generate() is not None and app._pipe is first
    assert (app.progress.value, app.progress.max) == (3, 3) and first.scheduler.cfg_scale == 4.0
    app.prompt.value = "a cat playing the piano"                     # not a shapes caption: no verdict
    assert app.generate() is not None and app.verdict.value == ""
    app.release()
    assert app._pipe is None


def test_plan_click_mp4(tiny):
    app = GenerateApp(weights=tiny, system="plan", video_format="mp4")
    assert (app.sampler.value, app.steps.value, app.guidance.value) == ("DDIM", 2, 7.5)
    app.prompt.value = CAPTION
    out = app.generate()
    assert errors(app) == "" and out is not None
    assert (app.progress.value, app.progress.max) == (2, 2)
    assert app.video.format == "mp4" and app.video.value[4:8] == b"ftyp"
    frames = iio.imread(app.video.value, index=None, extension=".mp4")
    assert frames.shape == (9, 256, 256, 3) and out.video.shape == (1, 9, 32, 32, 3)
    assert out.latents.shape == (1, 4, 3, 4, 4) and "shapes-world check" in app.verdict.value


def test_errors_go_to_the_output_area(tiny, tmp_path):
    app = GenerateApp(weights=tiny)
    app.prompt.value = "   "
    assert app.generate() is None and "the prompt is empty" in errors(app)
    assert app.progress.bar_style == "danger" and not app.generate_button.disabled
    app.prompt.value = CAPTION
    app.opensora_ckpt.value = str(tmp_path / "OpenSora-v1-16x256x256.pth")      # one folder of three
    assert app.generate() is None and "SD VAE folder, T5 folder fields are empty" in errors(app)
    app.opensora_vae.value = str(tmp_path / "sd-vae-ft-ema")
    app.opensora_t5.value = tiny["opensora"]["pretrained"]["t5_model_dir"]
    assert (app.steps.value, app.guidance.value) == (100, 7.0)      # the release's defaults once folders are given
    assert app.generate() is None
    msg = errors(app)
    assert msg.startswith("FileNotFoundError: missing weights (2)") and "hpcai-tech/Open-Sora" in msg
    assert "Traceback" not in msg and isinstance(app.last_error, FileNotFoundError)
    assert app.video.layout.display == "none" and app.status.value.startswith("failed")
    app.system.value = "plan"
    app.plan_model.value, app.plan_t5.value = str(tmp_path / "Open-Sora-Plan-v1.0.0"), str(tmp_path / "t5")
    assert app.generate() is None and "LanguageBind/Open-Sora-Plan-v1.0.0" in errors(app)


def test_system_switch_shows_each_systems_controls(tiny):
    app = GenerateApp(weights=tiny)
    shown = lambda w: w.layout.display != "none"
    assert shown(app.ddim) and shown(app.opensora_folders) and not shown(app.sampler) and not shown(app.plan_folders)
    app.system.value = "plan"
    assert not shown(app.ddim) and not shown(app.opensora_folders) and shown(app.sampler) and shown(app.plan_folders)
    assert (app.steps.value, app.guidance.value, app.sampler.value) == (2, 7.5, "DDIM")
    app.system.value = "opensora"
    assert shown(app.ddim) and (app.steps.value, app.guidance.value) == (3, 7.0)


def test_built_in_weights_come_from_opensora_nb_world():
    from opensora_nb.world import shipped_systems
    if "plan" in shipped_systems():
        assert set(shipped_weights_of("plan")) >= {"pretrained", "sample"}
    else:                                            # not shipped: how to build them, never random weights
        with pytest.raises(FileNotFoundError, match="make world"):
            shipped_weights_of("plan")
        app = GenerateApp(system="plan")             # shown, with the reason in its output area
        assert "make world" in errors(app)
        assert app.generate() is None and "make world" in errors(app)


def test_sampler_steps_counts_every_timestep():
    from opensora_nb.diffusion.samplers import get_sampler, run_sampler
    seen = []
    pndm = SamplerSteps(get_sampler("PNDM"), lambda done, total: seen.append((done, total)))
    run_sampler(pndm, lambda x, t: 0.1 * x, (1, 2, 2), num_inference_steps=5, generator=0)
    total = len(pndm.timesteps)
    assert seen[0] == (0, total) and seen[-1] == (total, total) and len(seen) == total + 1
