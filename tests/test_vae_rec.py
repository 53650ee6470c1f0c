"""opensora-vae-rec end to end: synthetic clip -> (stand-in or tiny random) CausalVAE -> mp4 + PSNR/SSIM; errors.

Besides the tiny random CausalVAEModel, the model is one of `opensora_nb.vae_rec`'s stand-ins with the CausalVAE
interface (`encode -> posterior.sample()/mode()`, `decode`, `enable_tiling`, `tile_overlap_factor`): `IdentityVAE`
(reconstruction must be exact: PSNR inf, SSIM 1) and the 4x8x8 `PoolVAE` (known, finite scores).
"""
import re

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from opensora_nb import commands, vae_rec  # noqa: E402
from opensora_nb.data.video import read_video_frames, write_video  # noqa: E402
from opensora_nb.metrics import psnr, ssim  # noqa: E402
from opensora_nb.vae_rec import IdentityVAE, PoolVAE  # noqa: E402


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    yy, xx = np.mgrid[0:72, 0:96]
    frames = np.stack([np.stack([(xx + 4 * t) % 96 * 2, yy * 3, (xx + yy + 8 * t) % 256], -1) for t in range(20)])
    return write_video(d / "in.mp4", frames.astype(np.uint8), fps=10)


def model_folder(tmp_path):
    (tmp_path / "model" / "vae").mkdir(parents=True)
    (tmp_path / "model" / "vae" / "config.json").write_text("{}")
    return tmp_path / "model"


def run_cli(monkeypatch, vae, args):
    monkeypatch.setattr(vae_rec, "load_causalvae", lambda path: (vae_rec.resolve_vae_folder(path), vae)[1])
    return commands.vae_rec_main([str(a) for a in args])


def test_identity_vae_reconstructs_exactly(tmp_path, clip_path, monkeypatch, capsys):
    vae = IdentityVAE()
    out = tmp_path / "rec.mp4"
    s = run_cli(monkeypatch, vae, ["--model_path", model_folder(tmp_path), "--video_path", clip_path, "--rec_path", out,
                                   "--num_frames", 9, "--resolution", 48, "--crop_size", 48, "--sample_rate", 2,
                                   "--enable_tiling"])
    assert s["psnr"] == float("inf") and s["ssim"] == pytest.approx(1.0)
    assert vae.use_tiling and vae.tile_overlap_factor == 0.25
    assert vae.seen.shape == (1, 3, 9, 48, 48) and -1 <= vae.seen.min() and vae.seen.max() <= 1
    frames, fps = read_video_frames(out)
    assert frames.shape == (9, 48, 48, 3) and fps == pytest.approx(5.0)        # input fps / sample_rate
    printed = capsys.readouterr().out
    assert re.search(r"PSNR: inf dB\s+SSIM: 1\.0000", printed)


def test_pooling_vae_scores_match_the_metrics(tmp_path, clip_path, monkeypatch, capsys):
    vae = PoolVAE()
    out = tmp_path / "rec.mp4"
    s = run_cli(monkeypatch, vae, ["--model_path", model_folder(tmp_path) / "vae", "--video_path", clip_path,
                                   "--rec_path", out, "--num_frames", 17, "--resolution", 48, "--crop_size", 0])
    x = vae.seen[0]                                                         # C T H W, short side 64, no crop
    assert x.shape == (3, 17, 48, 64)
    rec = np.clip(vae.decode(vae.encode(ms.Tensor(x[None])).sample()).asnumpy()[0], -1, 1)
    assert s["psnr"] == pytest.approx(psnr(x, rec, "CTHW")) and s["ssim"] == pytest.approx(ssim(x, rec, "CTHW"))
    assert 5 < s["psnr"] < 40 and 0 < s["ssim"] < 0.95
    assert f"PSNR: {s['psnr']:.2f} dB" in capsys.readouterr().out
    assert read_video_frames(out)[0].shape == (17, 48, 64, 3)


def test_single_frame_is_saved_as_jpg(tmp_path, clip_path):
    s = vae_rec.reconstruct_video(IdentityVAE(), clip_path, tmp_path / "one.mp4", num_frames=1, resolution=32,
                                  crop_size=32, verbose=False)
    assert s["rec_path"].endswith("one.jpg") and (tmp_path / "one.jpg").is_file()


def test_bad_frame_count_names_nearest_valid_counts(tmp_path, clip_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(monkeypatch, IdentityVAE(), ["--model_path", tmp_path, "--video_path", clip_path,
                                             "--rec_path", tmp_path / "r.mp4", "--num_frames", 15])
    assert e.value.code == 2 and "13 or 17" in capsys.readouterr().err
    with pytest.raises(ValueError, match="largest valid count that fits is 17"):
        vae_rec.reconstruct_video(IdentityVAE(), clip_path, tmp_path / "r.mp4", num_frames=21, resolution=32, crop_size=32)


def test_missing_model_and_video_are_clear_errors(tmp_path, clip_path, capsys):
    with pytest.raises(SystemExit):
        commands.vae_rec_main(["--model_path", str(tmp_path / "nowhere"), "--video_path", str(clip_path),
                              "--rec_path", str(tmp_path / "r.mp4"), "--num_frames", "5"])
    err = capsys.readouterr().err
    assert "nowhere" in err and "Open-Sora-Plan-v1.0.0" in err
    with pytest.raises(SystemExit):
        commands.vae_rec_main(["--model_path", str(model_folder(tmp_path)), "--video_path", str(tmp_path / "no.mp4"),
                              "--rec_path", str(tmp_path / "r.mp4"), "--num_frames", "5"])
    assert "no.mp4" in capsys.readouterr().err      # reported before any model is loaded


def test_tiny_random_causalvae_folder_end_to_end(tmp_path, clip_path, capsys):
    "The real CausalVAEModel (tiny random weights, released folder layout) through the command."
    from opensora_nb.models import causalvae as cv
    ms.set_seed(0)
    cv.CausalVAEModel.from_config(cv.tiny_causalvae_config()).save_pretrained(tmp_path / "model" / "vae")
    out = tmp_path / "rec.mp4"
    s = commands.vae_rec_main([str(a) for a in ["--model_path", tmp_path / "model", "--video_path", clip_path,
                                               "--rec_path", out, "--num_frames", 5, "--resolution", 16,
                                               "--crop_size", 16, "--enable_tiling", "--mode"]])
    assert np.isfinite(s["psnr"]) and -1 <= s["ssim"] <= 1
    assert read_video_frames(out)[0].shape == (5, 16, 16, 3)
    assert "PSNR:" in capsys.readouterr().out
