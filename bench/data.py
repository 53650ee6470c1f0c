"""Data pipeline throughput: clips/s decoding + transforming 16x256x256 clips from 320x240 mp4s, 1 and 2 workers.

Writes its clips under /tmp, reads them through VideoTextDataset + build_dataloader (Open-Sora's transform, frame
stride 3), and prints one JSON line with the load average before and after (the machine is shared)."""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENSORA_NB_PROGRESS", "0")
from opensora_nb.data.datasets import VideoTextDataset, build_dataloader  # noqa: E402
from opensora_nb.data.video import write_video  # noqa: E402


def make_clips(folder: Path, n: int = 8, frames: int = 64):
    rng = np.random.default_rng(0)
    lines = []
    for k in range(n):
        f = np.zeros((frames, 240, 320, 3), np.uint8) + rng.integers(0, 128, 3, dtype=np.uint8)
        for t in range(frames): f[t, 80:160, 2 * t:2 * t + 80] = rng.integers(128, 255, 3, dtype=np.uint8)
        write_video(folder / f"clip{k:02d}.mp4", f, fps=24)
        lines.append(f"clip{k:02d}.mp4,a square moves right\n")
    (folder / "train.csv").write_text("".join(lines))


def clips_per_s(ds, workers: int, batch_size: int = 2, epochs: int = 2) -> float:
    loader = build_dataloader(ds, batch_size, seed=0, num_workers=workers, num_epochs=epochs)
    next(iter(build_dataloader(ds, batch_size, num_workers=workers, num_epochs=1)))   # warm the file cache
    t, n = time.perf_counter(), 0
    for _, _, b in loader:
        assert b["video"].shape[1:] == (3, 16, 256, 256)
        n += len(b["video"])
    return n / (time.perf_counter() - t)


def main():
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        d = Path(d); make_clips(d)
        ds = VideoTextDataset(d / "train.csv", num_frames=16, frame_stride=3, image_size=256, transform="opensora")
        res = {f"clips_per_s_{w}_worker{'s' if w > 1 else ''}": round(clips_per_s(ds, w), 2) for w in (1, 2)}
    print(json.dumps(dict(bench="data", clip="16x256x256 from 320x240 mp4, frame_stride 3, opensora transform",
                          **res, cpu_count=os.cpu_count(), loadavg_before=[round(x, 2) for x in load_before],
                          loadavg_after=[round(x, 2) for x in os.getloadavg()])))


if __name__ == "__main__":
    sys.exit(main())
