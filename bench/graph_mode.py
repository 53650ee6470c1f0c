"""Eager (PyNative) vs compiled (GRAPH_MODE): compile time and per-call time. Prints one JSON line.

Cases, each in its own process (random weights, fp32, CPU, batch 1 unless said):
- `stdit_d2`: a depth-2 slice of STDiT-XL/2 (hidden 1152, 16 heads) on a 16x32x32 latent (4096 video tokens),
  120 caption tokens of which 30 are real.
- `latte_d2`: a depth-2 slice of LatteT2V-XL/122 (2 spatial + 2 temporal blocks) on a 5x32x32 latent (1280 video
  tokens), 120 caption tokens of which 30 are real, with the caption mask.
- `tiny_demo`: the demo's tiny STDiT (`commands.TINY_STDIT`), batch 2 (a caption and its null caption), 16 tokens.

For each case:
- `eager_s`: one call eagerly (median of BENCH_REPEATS after a warm-up); the lean attention path drops the padded
  caption tokens on the host, so this costs the real length;
- `graph_s` / `graph_compile_s`: the same call in GRAPH_MODE on the captions cut to their real length by
  `attention.trim_caption` (what the pipelines do before entering a compiled model): the steady per-call time and
  the first call's extra time (compilation);
- `graph_untrimmed_s`: compiled on all 120 tokens (the mask folded into the product), to show what the cut saves.
`load_avg` is the 1-minute load average at the start and the end (timings count only below 1.5 on 2 cores).
"""
import json
import os
import statistics
import subprocess
import sys
import time

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def _inputs(kind, np, ms):
    rng = np.random.default_rng(0)
    if kind == "tiny_demo":
        x = rng.standard_normal((2, 4, 4, 8, 8)).astype(np.float32)
        y = rng.standard_normal((2, 1, 16, 64)).astype(np.float32)
        mask = (np.arange(16)[None] < np.array([[6], [6]])).astype(np.int32)
        t = np.array([500, 500], np.int32)
    elif kind == "stdit_d2":
        x = rng.standard_normal((1, 4, 16, 32, 32)).astype(np.float32)
        y = rng.standard_normal((1, 1, 120, 4096)).astype(np.float32)
        mask = (np.arange(120)[None] < 30).astype(np.int32)
        t = np.array([500], np.int32)
    else:
        x = rng.standard_normal((1, 4, 5, 32, 32)).astype(np.float32)
        y = rng.standard_normal((1, 120, 4096)).astype(np.float32)
        mask = (np.arange(120)[None] < 30).astype(np.int32)
        t = np.array([500], np.int32)
    return [ms.Tensor(a) for a in (x, t, y, mask)]


def _model(kind, ms):
    from opensora_nb.runtime import set_seed
    set_seed(0)
    if kind == "latte_d2":
        from opensora_nb.models.latte import LatteT2V_XL_122, latte_version_kwargs

        class WithMask(ms.nn.Cell):
            def __init__(self):
                super().__init__()
                self.m = LatteT2V_XL_122(num_layers=2, **latte_version_kwargs("17x256x256"))

            def construct(self, x, t, y, mask):
                return self.m(x, t, y, encoder_attention_mask=mask)
        return WithMask(), 1
    from opensora_nb.models.stdit import STDiT
    if kind == "tiny_demo":
        from opensora_nb.commands import TINY_STDIT
        return STDiT(**TINY_STDIT), 2
    return STDiT(input_size=(16, 32, 32), depth=2, hidden_size=1152, num_heads=16, patch_size=(1, 2, 2)), 2


def _worker(kind, mode):
    import numpy as np
    import mindspore as ms
    from opensora_nb.attention import trim_caption
    model, token_axis = _model(kind, ms)
    model.set_train(False)
    x, t, y, mask = _inputs(kind, np, ms)
    if mode == "graph":
        y, mask = trim_caption(y, mask, axis=token_axis)
    if mode in ("graph", "graph_untrimmed"):
        ms.set_context(mode=ms.GRAPH_MODE)
    run = lambda: model(x, t, y, mask).asnumpy()
    t0 = time.perf_counter(); run(); first = time.perf_counter() - t0
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    steady = statistics.median(times)
    print(json.dumps({"first_s": round(first, 3), "call_s": round(steady, 4), "calls": [round(s, 4) for s in times],
                      "caption_tokens": int(y.shape[token_axis])}))


def _measure(kind, mode):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, mode], capture_output=True,
                         text=True, env=dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0"))
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode or not lines:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1][:300]}
    return json.loads(lines[-1])


def main():
    res = {"bench": "graph_mode", "dtype": "fp32", "device": "CPU", "repeats": REPEATS,
           "load_avg_start": round(os.getloadavg()[0], 2)}
    kinds = os.environ.get("BENCH_CASES", "tiny_demo,stdit_d2,latte_d2").split(",")
    for kind in kinds:
        eager, graph, untrimmed = (_measure(kind, m) for m in ("eager", "graph", "graph_untrimmed"))
        case = {"eager_s": eager.get("call_s"), "graph_s": graph.get("call_s"),
                "graph_compile_s": round(graph["first_s"] - graph["call_s"], 2) if "first_s" in graph else None,
                "graph_untrimmed_s": untrimmed.get("call_s"),
                "graph_untrimmed_compile_s": (round(untrimmed["first_s"] - untrimmed["call_s"], 2)
                                              if "first_s" in untrimmed else None),
                "caption_tokens_graph": graph.get("caption_tokens"), "raw": {"eager": eager, "graph": graph,
                                                                             "graph_untrimmed": untrimmed}}
        if case["eager_s"] and case["graph_s"]:
            case["speedup"] = round(case["eager_s"] / case["graph_s"], 2)
        res[kind] = case
    res["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        main()
