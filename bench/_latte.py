"""LatteT2V benchmark (Open-Sora-Plan v1.0.0): parameter count of LatteT2V-XL/122 and one denoising step.

- `params`: the released LatteT2V-XL/122 config (28 layers, 16 heads x 72, patch 2, 4 -> 8 channels, T5 4096
  captions) counted from parameter shapes without building the 1e9-parameter model: the layers are identical,
  so count(28) = count(1) + 27 * (count(2) - count(1)) exactly, with the depth-1 and depth-2 models built at full
  width. `params` are torch's `model.parameters()`; `state_dict_numel` adds `caption_projection.y_embedding`,
  a persistent buffer (in the released safetensors, unused by the model).
- `step_*`: one forward step at 17x256x256 (latent (B, 4, 5, 32, 32), 5 x 256 patch tokens per sample) of a
  depth-2 slice of XL/122 (2 spatial + 2 temporal blocks), random weights, fp32, batch 2 (the classifier-free
  guidance pair) with 300 caption tokens (the pipeline's T5 length; a single prompt is trimmed to fewer).
  Each depth runs in its own process: `peak_rss_mb` is that process's peak RSS, `peak_delta_mb` the peak minus
  the RSS with the model built and warmed up. The depth-1 step is measured too, so that a 28-layer step can be
  estimated as t1 + 27 (t2 - t1) (`step_xl_estimate_s`, an extrapolation, not a measurement). `step_cpu_s` is
  the process CPU time of the step (all threads): less sensitive to other people's load than the wall time.
Timings on a shared CPU are noisy. `latte_figures()` returns the dict (bench/plan_models.py merges it under
"latte"); `python bench/_latte.py` prints it as one JSON line. Environment: LATTE_BENCH_REPEATS (default 2).
"""
import json
import os
import resource
import subprocess
import sys
import time

REPEATS = int(os.environ.get("LATTE_BENCH_REPEATS", "2"))
VERSION, BATCH, TEXT_LEN = "17x256x256", 2, 300


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _counts(num_layers: int):
    from opensora_nb.models.latte import LatteT2V_XL_122, latte_version_kwargs
    m = LatteT2V_XL_122(num_layers=num_layers, **latte_version_kwargs(VERSION))
    n_all = sum(int(p.size) for _, p in m.parameters_and_names())
    n_buf = int(m.caption_projection.y_embedding.size)
    return n_all - n_buf, n_all


def _worker(num_layers: int, repeats: int):
    import numpy as np
    import mindspore as ms
    from opensora_nb.models.latte import LatteT2V_XL_122, latte_version_kwargs

    ms.set_seed(0)
    kw = latte_version_kwargs(VERSION)
    model = LatteT2V_XL_122(num_layers=num_layers, **kw)
    model.set_train(False)
    frames, size = kw["video_length"], kw["sample_size"][0]
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((BATCH, 4, frames, size, size)).astype(np.float32))
    cap = ms.Tensor(rng.standard_normal((BATCH, TEXT_LEN, 4096)).astype(np.float32))
    t = ms.Tensor(np.array([999, 999], np.int64))
    model(x[:1, :, :1], t[:1], cap[:1, :8]).asnumpy()   # warm-up: kernel selection, first-call costs
    base = _rss_mb()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(x, t, cap).asnumpy()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert out.shape == (BATCH, 8, frames, size, size) and np.isfinite(out).all()
    print(json.dumps({"num_layers": num_layers, "step_s": min(times), "step_s_all": [round(s, 3) for s in times],
                      "step_cpu_s": min(cpu),
                      "rss_model_mb": round(base), "peak_rss_mb": round(_peak_mb()),
                      "peak_delta_mb": round(_peak_mb() - base)}))


def _run_worker(num_layers: int, repeats: int) -> dict:
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(num_layers), str(repeats)],
                       capture_output=True, text=True, env=dict(os.environ, GLOG_v="3"))
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        raise RuntimeError(f"latte bench worker (num_layers={num_layers}) failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


def latte_figures(repeats: int = REPEATS) -> dict:
    "Parameter count of LatteT2V-XL/122 and one 17x256x256 step of its depth-1 and depth-2 slices."
    (p1, s1), (p2, s2) = _counts(1), _counts(2)
    params, numel = p1 + 27 * (p2 - p1), s1 + 27 * (s2 - s1)
    d1, d2 = _run_worker(1, repeats), _run_worker(2, repeats)
    return {
        "model": "LatteT2V-XL/122", "params": params, "params_per_layer_pair": p2 - p1,
        "state_dict_numel": numel, "fp32_gb": round(numel * 4 / 1e9, 2),
        "step_version": VERSION, "step_latent": [BATCH, 4, 5, 32, 32], "step_text_tokens": TEXT_LEN,
        "step_depth": 2, "step_s": round(d2["step_s"], 3), "step_s_all": d2["step_s_all"],
        "step_cpu_s": round(d2["step_cpu_s"], 2), "step_depth1_cpu_s": round(d1["step_cpu_s"], 2),
        "step_peak_rss_mb": d2["peak_rss_mb"], "step_peak_delta_mb": d2["peak_delta_mb"],
        "step_rss_model_mb": d2["rss_model_mb"],
        "step_depth1_s": round(d1["step_s"], 3), "step_depth1_peak_rss_mb": d1["peak_rss_mb"],
        "step_xl_estimate_s": round(d1["step_s"] + 27 * (d2["step_s"] - d1["step_s"]), 1),
        "dtype": "fp32", "note": "shared 2-core CPU, noisy; step_xl_estimate_s extrapolated from depth 1 and 2",
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        print(json.dumps(latte_figures()))
