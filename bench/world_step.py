"""The built-in world's STDiT training step and the tanh GELU, per kernel choice. Prints one JSON line.

Each case runs in its own process with `OPENSORA_NB_KERNELS` set to `native` (MindSpore's fused CPU ops) or `cpu`
(the package's CPU formulations, here `kernels.gelu_tanh` = `x * sigmoid(2z)`):
- `gelu_fwd_ms` / `gelu_grad_ms`: `kernels.gelu_tanh` compiled (`ms.jit`) on a (2048, 384) float32 block (the MLP
  hidden layer of the world STDiT at batch 8), mean of 50 calls; `gelu_err` its max abs error against float64;
- `step_s`: one compiled `TrainStep` (IDDPM hybrid loss, value_and_grad, clipping to 1.0, AdamW, EMA) of the STDiT
  of `configs/world/stdit.yaml` (its model_config; 16x8x8 latents, 16 caption tokens of width 64) at its batch
  size, random weights and inputs; the first call (the compile) is `compile_s`, then the mean of
  `BENCH_STEPS` (default 10) steps.
The machine's load average is recorded before and after (timings count only below 1.5).
Run: `python bench/world_step.py`.
"""
import json
import os
import subprocess
import sys
import time

STEPS = int(os.environ.get("BENCH_STEPS", "10"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(f, args, n):
    out = f(*args)
    (out[0] if isinstance(out, tuple) else out).asnumpy()
    t0 = time.perf_counter()
    for _ in range(n):
        out = f(*args)
    (out[0] if isinstance(out, tuple) else out).asnumpy()
    return (time.perf_counter() - t0) / n


def _ops(rng):
    "Compiled per-call time (ms) of the operations of one block of the first world STDiT (batch 8, 2048 tokens of 96)."
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor, nn, ops
    T = lambda *s: Tensor(rng.standard_normal(s).astype(np.float32))
    x, h, q, s, x5 = T(2048, 96), T(2048, 384), T(512, 16, 24), T(512, 16, 16), T(8, 256, 3, 4, 24)
    qkv, fc1, fc2 = nn.Dense(96, 288), nn.Dense(96, 384), nn.Dense(384, 96)
    ln, ones, zeros = ops.LayerNorm(-1, -1, 1e-6), Tensor(np.ones(96, np.float32)), Tensor(np.zeros(96, np.float32))
    bmm_nt, bmm = ops.BatchMatMul(transpose_b=True), ops.BatchMatMul()
    def softmax(a): return ops.softmax(a, axis=-1)
    def layernorm(a): return ln(a, ones, zeros)[0]
    def gelu_fused(a): return ops.gelu(a, approximate="tanh")
    def split_heads(a): return a.transpose(2, 0, 3, 1, 4) * 1.0
    def mul_add(a): return a * 2.0 + a
    cases = {"dense 96->288 (qkv)": (qkv, (x,)), "dense 96->384 (fc1)": (fc1, (x,)), "dense 384->96 (fc2)": (fc2, (h,)),
             "q k^T 512x(16x24)": (bmm_nt, (q, q)), "p v 512x(16x16 @ 16x24)": (bmm, (s, q)),
             "softmax 512x16x16": (softmax, (s,)), "layernorm 2048x96": (layernorm, (x,)),
             "gelu tanh fused 2048x384": (gelu_fused, (h,)), "5-d transpose (qkv split)": (split_heads, (x5,)),
             "x * 2 + x, 2048x96": (mul_add, (x,))}
    return {name: round(1e3 * _timed(f if isinstance(f, (nn.Cell, ops.Primitive)) else ms.jit(f), a, 100), 3)
            for name, (f, a) in cases.items()}


def _case():
    import numpy as np
    import yaml
    import mindspore as ms
    from mindspore import Tensor
    from opensora_nb.kernels import gelu_tanh
    from opensora_nb.diffusion.iddpm import IDDPM
    from opensora_nb.train import train_config, build_model, OpenSoraLoss, TrainStep
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    xg = (rng.standard_normal((2048, 384)) * 3).astype(np.float32)
    g = ms.jit(gelu_tanh)
    x64 = xg.astype(np.float64)
    want = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
    res = dict(gelu_fwd_ms=1e3 * _timed(g, (Tensor(xg),), 50),
               gelu_grad_ms=1e3 * _timed(ms.jit(ms.grad(gelu_tanh)), (Tensor(xg),), 50),
               gelu_err=float(np.abs(g(Tensor(xg)).asnumpy() - want).max()))
    if os.environ.get("OPENSORA_NB_KERNELS") == "native":
        res["ops_ms"] = _ops(rng)
    cfg = yaml.safe_load(open(os.path.join(ROOT, "configs/world/stdit.yaml")))
    cfg = train_config(cfg)
    B, L = cfg.batch_size, cfg.model_max_length
    model = build_model(cfg).set_train(True)
    step = TrainStep(OpenSoraLoss(model, IDDPM(timestep_respacing="")), max_grad_norm=cfg.max_grad_norm,
                     ema_decay=cfg.ema_decay)
    shape = (B, 4, cfg.num_frames, cfg.image_size // 8, cfg.image_size // 8)
    args = (Tensor(1e-4, ms.float32), Tensor(rng.standard_normal(shape, dtype=np.float32)),
            Tensor(rng.integers(0, 1000, B).astype(np.int32)), Tensor(rng.standard_normal(shape, dtype=np.float32)),
            Tensor(rng.standard_normal((B, 1, L, model.caption_channels), dtype=np.float32)),
            Tensor(np.ones((B, L), np.int32)), Tensor(np.zeros(B, bool)))
    t0 = time.perf_counter()
    step(*args)[0].asnumpy()
    res["compile_s"] = time.perf_counter() - t0
    res["step_s"] = _timed(step, args, STEPS)
    return {k: round(v, 4) if isinstance(v, float) and k != "gelu_err" else v for k, v in res.items()}


def main():
    out = dict(bench="world_step", steps=STEPS, load_before=os.getloadavg()[0])
    for kernels in ("native", "cpu"):
        env = dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0", OPENSORA_NB_KERNELS=kernels)
        p = subprocess.run([sys.executable, __file__, "--case"], capture_output=True, text=True, env=env, cwd=ROOT)
        line = [l for l in p.stdout.splitlines() if l.startswith("{")]
        out[kernels] = json.loads(line[-1]) if p.returncode == 0 and line else dict(error=p.stderr[-500:])
    if "step_s" in out["native"] and "step_s" in out["cpu"]:
        out["step_speedup"] = round(out["native"]["step_s"] / out["cpu"]["step_s"], 2)
        out["gelu_speedup"] = round(out["native"]["gelu_fwd_ms"] / out["cpu"]["gelu_fwd_ms"], 2)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1:] == ["--case"]:
        print(json.dumps(_case()))
    else:
        main()
