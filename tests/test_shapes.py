"The shapes world end to end: mp4 files and annotations read back by the datasets, and the checker on every combination."
import json
from pathlib import Path

import numpy as np
import pytest

from opensora_nb.data.datasets import read_annotations
from opensora_nb.data.video import read_video_frames
from opensora_nb.shapes import (DEGRADATIONS, HELD_OUT, ShapeSpec, all_specs, check_clip, heldout_specs, render_clip,
                                score_clip, train_specs, write_shapes_dataset)

ATTRS = ("colour", "shape", "direction")


def one_per_combo():
    "Every colour x shape x direction once, backgrounds alternating (84 clips)."
    return [s for i, s in enumerate(all_specs()) if i % 2 == (i // 2) % 2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    specs = one_per_combo()
    return folder, specs, write_shapes_dataset(folder, specs)


def test_annotation_files_read_back(dataset):
    folder, specs, files = dataset
    assert (folder / "video_caption.csv").read_text().splitlines()[0] == "video,caption"
    assert not (folder / "opensora.csv").read_text().startswith("video,")
    assert json.loads(files["plan_json"].read_text())[0] == {"path": "videos/00000_red_circle_left_black.mp4",
                                                             "cap": ["a red circle moves left on a black background"]}
    for fmt, path in files.items():
        rows = read_annotations(path)
        assert [r["caption"] for r in rows] == [s.caption for s in specs], fmt
        assert [Path(r["path"]) for r in rows] == sorted((folder / "videos").glob("*.mp4"))


def test_checker_reads_every_combination_after_mp4_and_degradations(dataset):
    folder, specs, files = dataset
    misses = []
    for i, (row, spec) in enumerate(zip(read_annotations(files["mindone_csv"]), specs)):
        frames, _ = read_video_frames(row["path"])
        assert frames.shape == (16, 64, 64, 3)
        for name, fn in [("mp4", lambda f, s: f), *DEGRADATIONS.items()]:
            r = check_clip(fn(frames, i))
            if not (r["ok"] and all(r[k] == getattr(spec, k) for k in ATTRS) and r["background"] == spec.background):
                misses.append((name, spec.caption, {k: r[k] for k in (*ATTRS, "background", "reason")}))
            if name == "mp4": assert score_clip(frames, spec.caption)["all_ok"]
    assert not misses, misses


@pytest.mark.parametrize("kind", ["uniform", "gray_noise", "black", "gray", "still"])
def test_unreadable_clips_are_refused(kind):
    rng = np.random.default_rng(0)
    frames = {"uniform": lambda: rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8),
              "gray_noise": lambda: np.clip(128 + rng.normal(0, 20, (16, 64, 64, 3)), 0, 255).astype(np.uint8),
              "black": lambda: np.zeros((16, 64, 64, 3), np.uint8),
              "gray": lambda: np.full((16, 64, 64, 3), 128, np.uint8),
              "still": lambda: np.repeat(render_clip(ShapeSpec("red", "circle", "up", seed=3))[:1], 16, axis=0)}[kind]()
    r = check_clip(frames)
    assert not r["ok"] and r["confidence"] == 0.0 and r["reason"]
    assert not score_clip(frames, "a red circle moves up on a black background")["all_ok"]


def test_score_clip_catches_each_wrong_word():
    spec = ShapeSpec("magenta", "triangle", "right", "gray", seed=11)
    frames = render_clip(spec)
    assert score_clip(frames, spec.caption)["all_ok"]
    for wrong, key in [("a cyan triangle moves right on a gray background", "colour_ok"),
                       ("a magenta square moves right on a gray background", "shape_ok"),
                       ("a magenta triangle moves left on a gray background", "direction_ok"),
                       ("a magenta triangle moves right on a black background", "background_ok")]:
        s = score_clip(frames, wrong)
        assert not s[key], wrong
        assert s["all_ok"] == (key == "background_ok")


def test_seventeen_frames_and_the_split():
    spec = ShapeSpec("white", "square", "down", "black", seed=2)
    frames = render_clip(spec, num_frames=17)
    assert frames.shape == (17, 64, 64, 3) and check_clip(frames)["direction"] == "down"
    seen, held = train_specs(), heldout_specs()
    assert len(seen) == len(held) == 84 and not set(seen) & set(held)
    pairs = {(s.colour, s.direction) for s in seen} | {(s.colour, s.shape) for s in seen}
    assert not pairs & (set(HELD_OUT["colour_direction"]) | set(HELD_OUT["colour_shape"]))
