"""STDiT benchmark (Open-Sora v1.0), CPU, fp32. Prints one JSON line.

- `params_xl2`: parameter count of STDiT-XL/2 without the three buffers (the released model: 759,620,768).
- `slice_d2`: a depth-2 slice of XL/2 (hidden 1152, 16 heads) on a 256x256x16 video latent (4x16x32x32, 4096
  tokens), batch 1, 120 caption tokens of which 30 are real: forward, forward+backward, and forward+backward with
  both blocks recomputed (`enable_grad_checkpoint`); wall time (median of BENCH_REPEATS=1 after one warm-up) and the
  process's peak RSS (ru_maxrss) -- each configuration in its own process so its peak is its own.
- `full_xl2_forward`: the full 28-block model, one forward (skipped with BENCH_FULL=0).
- `sampling_tiny`: one full 100-step IDDPM sampling with classifier-free guidance (cfg 7.0, batch 2 = 1 prompt and
  its null caption) at a tiny STDiT (hidden 64, depth 2, latent 4x4x8x8).
The machine is shared: timings are noisy; `load_avg` is recorded next to them.
"""
import json, os, resource, statistics, subprocess, sys, time

REPEATS = int(os.environ.get("BENCH_REPEATS", "1"))
LATENT = (16, 32, 32)


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _inputs(ms, np, B=1, L=120, valid=30, caption_channels=4096):
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((B, 4) + LATENT).astype(np.float32))
    y = ms.Tensor(rng.standard_normal((B, 1, L, caption_channels)).astype(np.float32))
    m = np.zeros((B, L), np.int32); m[:, :valid] = 1
    return x, ms.Tensor(np.full((B,), 500, np.int32)), y, ms.Tensor(m)


def _timed(run, repeats, warmup=True):
    if warmup:
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def _worker(kind):
    import numpy as np
    import mindspore as ms
    from opensora_nb.models.stdit import STDiT, STDiT_XL_2, count_params
    res = {}
    if kind == "count":
        with ms.nn.utils.no_init_parameters():
            res["params"] = count_params(STDiT_XL_2(input_size=LATENT))
    elif kind in ("fwd", "fwd_bwd", "fwd_bwd_recompute", "full_fwd"):
        t0 = time.perf_counter()
        depth = 28 if kind == "full_fwd" else 2
        model = STDiT(input_size=LATENT, depth=depth, hidden_size=1152, num_heads=16, patch_size=(1, 2, 2))
        res["build_s"] = round(time.perf_counter() - t0, 2)
        res["rss_after_build_mb"] = round(_peak_mb(), 0)
        x, t, y, mask = _inputs(ms, np)
        if kind in ("fwd", "full_fwd"):
            run = lambda: model(x, t, y, mask).asnumpy()
        else:
            if kind == "fwd_bwd_recompute":
                model.enable_grad_checkpoint()
            model.set_train(True)  # class dropout 0.1 draws captions from y_embedding at random: same cost
            grad = ms.value_and_grad(lambda x: (model(x, t, y, mask) ** 2).mean(), None, model.trainable_params())
            run = lambda: [g.asnumpy() for g in grad(x)[1][:1]]
        # one untimed warm-up run except for the full model (its first-call overhead is a small share)
        res["time_s"] = _timed(run, 1 if kind == "full_fwd" else REPEATS, warmup=kind != "full_fwd")
        res["peak_rss_mb"] = round(_peak_mb(), 0)
    elif kind == "sample_tiny":
        from opensora_nb.diffusion.iddpm import IDDPM, CaptionEmbeddings
        from opensora_nb.runtime import set_seed
        set_seed(0)
        model = STDiT(input_size=(4, 8, 8), hidden_size=64, depth=2, num_heads=4, caption_channels=32,
                      model_max_length=8)
        rng = np.random.default_rng(0)
        y = rng.standard_normal((1, 1, 8, 32)).astype(np.float32)
        enc = CaptionEmbeddings(y, np.array([[1] * 5 + [0] * 3], np.int32), y_null=model.y_embedder.y_embedding)
        sched = IDDPM(num_sampling_steps=100, cfg_scale=7.0)
        t0 = time.perf_counter()
        z = sched.sample(model, enc, z_size=(4, 4, 8, 8), prompts=["a red circle moves left"], progress=False)
        res["time_s"] = round(time.perf_counter() - t0, 2)
        res["steps"], res["finite"] = 100, bool(np.isfinite(z.asnumpy()).all())
        res["peak_rss_mb"] = round(_peak_mb(), 0)
    print(json.dumps(res))


def _measure(kind):
    out = subprocess.run([sys.executable, __file__, "--worker", kind], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    res = {"bench": "stdit", "dtype": "fp32", "device": "CPU", "repeats": REPEATS,
           "load_avg_start": round(os.getloadavg()[0], 1)}
    res["params_xl2"] = _measure("count").get("params")
    res["slice_d2"] = {"latent": [4, *LATENT], "tokens": 16 * 16 * 16, "batch": 1, "caption_tokens": "30 of 120",
                       **{k: _measure(k) for k in ("fwd", "fwd_bwd", "fwd_bwd_recompute")}}
    if os.environ.get("BENCH_FULL", "1") != "0":  # about 14x the depth-2 forward
        res["full_xl2_forward"] = _measure("full_fwd")
    try:
        import opensora_nb.diffusion.iddpm  # noqa: F401
        res["sampling_tiny"] = _measure("sample_tiny")
    except ImportError as e:
        res["sampling_tiny"] = {"error": f"opensora_nb.diffusion.iddpm not available: {e}"}
    res["load_avg_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        main()
