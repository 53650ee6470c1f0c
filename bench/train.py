"""Training step time and peak memory, and the data pipeline's clips/s. Prints one JSON line.

Each case runs in its own process (its peak RSS is the case's) through `opensora_nb.train` (`OpenSoraLoss` /
`PlanLoss` in a `TrainStep`: IDDPM hybrid loss, value_and_grad, clipping, AdamW, EMA), random weights, batch 1,
cached inputs (latents and T5 embeddings as arrays):
- `stdit`: a depth-2 slice of STDiT-XL/2 at 16x256x256 (latent 4x16x32x32, 30 of 120 caption tokens);
- `latte`: a depth-2 slice of LatteT2V-XL/122 at 17x256x256 + 4 images (latent 4x(5+4)x32x32, 30-token captions);
each in fp32 / fp16, recompute off / on, PyNative / graph. One warm-up step (the compile, in graph mode), then the
mean of `BENCH_STEPS` (default 2) steps. Then `bench/data.py` (decoding + transforming 16x256x256 clips from mp4,
1 and 2 workers). Select cases with BENCH_CASES="stdit-fp32-norecompute-graph,..." (default: all 16) and skip the
data part with BENCH_DATA=0. The machine's load average is recorded before and after.
"""
import itertools
import json
import os
import resource
import subprocess
import sys
import time

STEPS = int(os.environ.get("BENCH_STEPS", "2"))


def _case(name):
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor
    from opensora_nb.runtime import set_seed
    from opensora_nb.diffusion.iddpm import IDDPM
    from opensora_nb.train import TrainStep, OpenSoraLoss, PlanLoss, step_randomness
    model_name, dtype, recompute, mode = name.split("-")
    set_seed(0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if model_name == "stdit":
        from opensora_nb.models.stdit import STDiT
        model = STDiT(depth=2, hidden_size=1152, patch_size=(1, 2, 2), num_heads=16,      # STDiT-XL/2's widths
                      input_size=(16, 32, 32), space_scale=0.5, dtype=dtype)
        if recompute == "recompute": model.enable_grad_checkpoint()
        loss = OpenSoraLoss(model, IDDPM(timestep_respacing=""))
        latent = rng.standard_normal((1, 4, 16, 32, 32)).astype(np.float32)
        y = rng.standard_normal((1, 1, 120, 4096)).astype(np.float32)
        mask = (np.arange(120)[None] < 30).astype(np.int32)
    else:
        from opensora_nb.models.latte import LatteT2V_XL_122, latte_version_kwargs
        model = LatteT2V_XL_122(num_layers=2, **latte_version_kwargs("17x256x256"))
        if dtype != "fp32":
            from opensora_nb.runtime import compute_dtype
            for _, cell in model.cells_and_names():
                if isinstance(cell, (ms.nn.Dense, ms.nn.Conv2d, ms.nn.Conv3d)): cell.to_float(compute_dtype(dtype))
        if recompute == "recompute": model.enable_gradient_checkpointing()
        loss = PlanLoss(model, IDDPM(timestep_respacing=""), use_image_num=4)
        latent = rng.standard_normal((1, 4, 9, 32, 32)).astype(np.float32)
        y = rng.standard_normal((1, 5, 30, 4096)).astype(np.float32)
        mask = np.ones((1, 5, 30), np.int32)
    step = TrainStep(loss.set_train(True), max_grad_norm=1.0, ema_decay=0.9999,
                     loss_scale=65536.0 if dtype == "fp16" else 1.0, dynamic_loss_scale=dtype == "fp16")
    run = ms.jit(step) if mode == "graph" else step
    build = time.perf_counter() - t0
    times = []
    for s in range(STEPS + 1):
        r = step_randomness(0, s, 1, latent.shape[1:], 1000, loss.drop_prob)
        args = (Tensor(1e-5, ms.float32), Tensor(latent), Tensor(r["t"]), Tensor(r["noise"]), Tensor(y), Tensor(mask),
                Tensor(r["drop"]))
        t0 = time.perf_counter()
        out = run(*args)
        float(out[0].asnumpy())
        times.append(time.perf_counter() - t0)
    return {"step_s": round(sum(times[1:]) / STEPS, 2), "first_step_s": round(times[0], 1), "build_s": round(build, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}


def _run(name):
    env = dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0")
    r = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, env=env)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:300]}
    return json.loads(lines[-1])


def main():
    all_cases = ["-".join(c) for c in itertools.product(("stdit", "latte"), ("fp32", "fp16"),
                                                         ("norecompute", "recompute"), ("pynative", "graph"))]
    cases = [c for c in os.environ.get("BENCH_CASES", ",".join(all_cases)).split(",") if c]
    out = {"bench": "train", "batch": 1, "steps_timed": STEPS, "load_avg_start": round(os.getloadavg()[0], 2)}
    for c in cases:
        out[c] = _run(c)
    if os.environ.get("BENCH_DATA", "1") != "0":
        r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "data.py")], capture_output=True,
                           text=True, env=dict(os.environ, GLOG_v="3"))
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        out["data"] = json.loads(lines[-1]) if lines else {"error": r.stderr[-300:]}
    out["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(_case(sys.argv[2])))
    else:
        main()
