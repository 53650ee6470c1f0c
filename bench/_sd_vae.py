"""SD VAE benchmark: Open-Sora v1.0's frame-wise `VideoAutoencoderKL` on a 16x256x256 clip.

The real sd-vae-ft-ema architecture (block_out_channels 128/256/512/512, 2 layers per block, 4 latent
channels, 83.7M parameters) with random weights; encode (clip -> latents (1, 4, 16, 32, 32)) and decode
(latents -> clip) timed with micro-batches of 4 and of 16 frames. Each measurement runs in its own process,
so its peak memory is its own: `peak_rss_mb` is the process's peak RSS, `peak_delta_mb` that peak minus the RSS
with the model built and warmed up (one frame) -- the activation memory the micro-batch size controls.
Timings on a shared CPU are noisy. `sd_vae_figures()` returns the dict (bench/encoders.py merges it);
`python bench/_sd_vae.py` prints it as one JSON line. Environment: SD_VAE_BENCH_FRAMES, SD_VAE_BENCH_SIZE.
Cost: the four runs at 16x64x64 took 2.6 CPU-minutes here (9 min wall at a load of ~24 on 2 cores); at 16x256x256
(2026-11-30, run one worker at a time, load 12-24 on 2 shared cores) they took 43 min wall: encode mb4 318 s / peak
RSS 2.6 GB, mb16 305 s / 7.5 GB; decode mb4 622 s / 3.6 GB, mb16 1226 s / 12.1 GB. `SD_VAE_BENCH_SIZE=64` is quick.
"""
import json
import os
import resource
import subprocess
import sys
import time

FRAMES = int(os.environ.get("SD_VAE_BENCH_FRAMES", "16"))
SIZE = int(os.environ.get("SD_VAE_BENCH_SIZE", "256"))
MICRO_BATCHES = (4, 16)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _worker(op: str, micro_batch_size: int, frames: int, size: int):
    import numpy as np
    import mindspore as ms
    from opensora_nb.models.sd_vae import SD_VAE_CONFIG, AutoencoderKL, VideoAutoencoderKL

    ms.set_seed(0)
    vae = VideoAutoencoderKL(AutoencoderKL(**SD_VAE_CONFIG), micro_batch_size=micro_batch_size)
    vae.set_train(False)
    rng = np.random.default_rng(0)
    if op == "encode":
        x = ms.Tensor(rng.uniform(-1, 1, (1, 3, frames, size, size)).astype(np.float32))
        run = lambda t: vae.encode(t, generator=rng)
    else:
        x = ms.Tensor(rng.standard_normal((1, 4, frames, size // 8, size // 8)).astype(np.float32))
        run = vae.decode
    run(x[:, :, :1]).asnumpy()  # warm-up on one frame (kernel selection, first-call costs)
    base = _rss_mb()
    t0 = time.perf_counter()
    out = run(x).asnumpy()
    seconds = time.perf_counter() - t0
    peak = _peak_mb()
    print(json.dumps({"time_s": round(seconds, 2), "peak_rss_mb": round(peak, 1),
                      "peak_delta_mb": round(max(peak - base, 0.0), 1), "out_shape": list(out.shape)}))


def _measure(op: str, micro_batch_size: int, frames: int, size: int) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", op, str(micro_batch_size),
                           str(frames), str(size)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"SD VAE bench worker ({op}, micro_batch_size={micro_batch_size}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sd_vae_figures(frames: int = FRAMES, size: int = SIZE) -> dict:
    "Encode/decode time and peak memory of the SD VAE video wrapper, micro-batch 4 vs 16 (random real-size weights)."
    res = {"sd_vae_clip": f"{frames}x{size}x{size}", "sd_vae_config": "sd-vae-ft-ema (random weights), fp32, CPU",
           "sd_vae_note": "wall-clock on a shared CPU: noisy; each figure from its own process"}
    for op in ("encode", "decode"):
        for mb in MICRO_BATCHES:
            r = _measure(op, mb, frames, size)
            res[f"sd_vae_{op}_mb{mb}_s"] = r["time_s"]
            res[f"sd_vae_{op}_mb{mb}_peak_rss_mb"] = r["peak_rss_mb"]
            res[f"sd_vae_{op}_mb{mb}_peak_delta_mb"] = r["peak_delta_mb"]
    return res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        print(json.dumps(sd_vae_figures()))
