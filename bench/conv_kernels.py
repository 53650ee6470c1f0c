"""Convolution kernels at the VAEs' shapes: MindSpore's own path, the oneDNN blocked-layout operators of `00d_dnnl`,
and torch's `conv2d` / `conv3d` (oneDNN too, blocked layouts), fp32, the same threads on every side.

Cases (stride 1, "same" in space):
- 2-D, SD VAE at Open-Sora's micro-batch 4: `N x C x H x H` with `O x C x 3 x 3` (and one 1x1, which stays on
  MindSpore's path in the `cpu` kernels because oneDNN's reorders cost more than it wins there);
- 3-D causal, CausalVAE decoder: `1 x C x T x H x H`, `O x C x 3 x 3 x 3`, frame 0 repeated twice in front.
"current" is what the `cpu` kernels ran before `00d_dnnl`: MindSpore's `Conv2D` (2-D) and `kernels.conv3d_gemm`
(3-D). Every side runs in its own process (`--worker`), twice after a warm-up; the best time counts.
Also the forward + backward (input and weight gradients) of one 2-D case. Prints one JSON line.

Usage: `python bench/conv_kernels.py [--threads N]`
"""
import json
import os
import subprocess
import sys
import time

CASES = {"sd_vae_128ch_256px": (4, 128, 256, 128, 3), "sd_vae_256ch_128px": (4, 256, 128, 256, 3),
         "sd_vae_512ch_32px": (4, 512, 32, 512, 3), "sd_vae_1x1_512ch_64px": (4, 512, 64, 512, 1),
         "causalvae_128ch_9x128px": (128, 9, 128, 128, 3, 3), "causalvae_256ch_5x64px": (256, 5, 64, 256, 3, 3),
         "causalvae_512ch_3x32px": (512, 3, 32, 512, 3, 3)}
GRAD_CASE = "sd_vae_256ch_128px"
SIDES = ("current", "dnnl", "torch")


def _best(f, n=2):
    f()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    return best


def _flops(dims):
    if len(dims) == 5:
        n, c, h, o, k = dims
        return 2.0 * n * c * o * k * k * h * h
    c, t, h, o, kt, k = dims
    return 2.0 * c * o * kt * k * k * t * h * h


def _inputs(dims):
    import numpy as np
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)
    if len(dims) == 5:
        n, c, h, o, k = dims
        return r(n, c, h, h), r(o, c, k, k) / (c * k * k) ** 0.5, r(o)
    c, t, h, o, kt, k = dims
    return r(1, c, t, h, h), r(o, c, kt, k, k) / (c * kt * k * k) ** 0.5, r(o)


def worker(case, side, threads, grad):
    import numpy as np
    dims = CASES[case]
    x, w, b = _inputs(dims)
    k = dims[-1]
    if side == "torch":
        import torch
        torch.set_num_threads(threads)
        X, W, B = (torch.from_numpy(a) for a in (x, w, b))
        if len(dims) == 5:
            f = lambda X: torch.nn.functional.conv2d(X, W, B, padding=k // 2)
        else:
            f = lambda X: torch.nn.functional.conv3d(torch.cat([X[:, :, :1]] * (dims[4] - 1) + [X], 2), W, B,
                                                     padding=(0, k // 2, k // 2))
        if grad:
            X.requires_grad_(True); W.requires_grad_(True)
            run = lambda: (f(X) ** 2).sum().backward()
        else:
            run = lambda: f(X).numpy()
        return {"seconds": _best(run), "framework": f"torch {torch.__version__}"}
    import mindspore as ms
    from opensora_nb.runtime import set_runtime
    set_runtime("CPU")
    try:
        from mindspore.device_context.cpu.op_tuning import threads_num
        threads_num(threads)
    except ImportError:
        ms.set_context(runtime_num_threads=threads)
    from mindspore import ops
    from opensora_nb import dnnl, kernels
    X, W, B = (ms.Tensor(a) for a in (x, w, b))
    if side == "dnnl":
        if not dnnl.available(): return {"error": dnnl.unavailable_reason()}
        dnnl.set_threads(threads)
        f = ((lambda X, W, B: dnnl.conv(X, W, B)) if len(dims) == 5 else
             (lambda X, W, B: dnnl.conv(kernels.pad_first_frame(X, dims[4] - 1), W, B)))
    elif len(dims) == 5:
        conv = ops.Conv2D(dims[3], k, pad_mode="pad", pad=k // 2)
        f = lambda X, W, B: ops.bias_add(conv(X, W), B)
    else:
        f = lambda X, W, B: kernels.conv3d_gemm(X, W, B, padding=(0, 0, k // 2, k // 2, k // 2, k // 2),
                                                first_frame_pad=dims[4] - 1)
    if grad:
        def loss(X, W, B):
            return (f(X, W, B) ** 2).sum()
        g = ms.grad(loss, (0, 1))
        run = lambda: [t.asnumpy() for t in g(X, W, B)]
    else:
        run = lambda: f(X, W, B).asnumpy()
    res = {"seconds": _best(run), "framework": f"mindspore {ms.__version__}"}
    if side == "dnnl": res["impl"] = dnnl.forward_impl(x.shape if len(dims) == 5 else
                                                       (1, dims[0], dims[1] + dims[4] - 1, dims[2], dims[2]), w.shape)
    return res


def _run(case, side, threads, grad):
    env = dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0", OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", case, side, str(threads)] + (["--grad"] if grad else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        return {"error": (r.stderr or r.stdout)[-800:]}
    return json.loads(lines[-1])


def main(threads):
    out = {"bench": "conv_kernels", "threads": threads, "cpu_count": os.cpu_count(), "cases": {}}
    for case in list(CASES) + [f"{GRAD_CASE}+grad"]:
        grad = case.endswith("+grad")
        dims = CASES[case.split("+")[0]]
        row = {"shape": dims, "load_avg_1m": round(os.getloadavg()[0], 2)}
        for side in SIDES:
            res = _run(case.split("+")[0], side, threads, grad)
            row[side] = res
            if "seconds" in res and not grad:
                res["gflops"] = round(_flops(dims) / res["seconds"] / 1e9, 1)
            if "seconds" in res: res["seconds"] = round(res["seconds"], 4)
        s = {k: row[k].get("seconds") for k in SIDES}
        if s["current"] and s["dnnl"]: row["current_over_dnnl"] = round(s["current"] / s["dnnl"], 2)
        if s["torch"] and s["dnnl"]: row["dnnl_over_torch"] = round(s["dnnl"] / s["torch"], 2)
        out["cases"][case] = row
        print(f"[conv_kernels] {case}: {json.dumps(row)}", file=sys.stderr, flush=True)
    out["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--worker":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        print(json.dumps(worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), "--grad" in sys.argv)))
    else:
        n = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
        main(n)
