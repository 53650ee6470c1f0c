"""Attention core benchmark: masked cross-attention (plain padded vs lean packed) and spatial self-attention.

Shapes from STDiT-XL/2 at 256x256x16: B=2, 16 heads of 72 channels, N=4096 video tokens (16x16x16),
text padded to 120 tokens with real lengths 8, 30 and 120. Only the attention core is timed (projected
q, k, v in; attention output out): the projections cost the same on every path.
Each configuration runs in its own process so that peak memory is its own. Prints one JSON line.
"""
import json, os, resource, statistics, subprocess, sys, time

B, H, D, N, L_PAD = 2, 16, 72, 4096, 120
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _sync(out):
    "Wait for the result without timing a host copy of it (one element is read back)."
    return out[:1, :1, :1, :1].asnumpy()


def _worker(kind, path, length):
    import numpy as np
    import mindspore as ms
    from opensora_nb.attention import attention
    rng = np.random.default_rng(0)
    t = lambda *s: ms.Tensor(rng.standard_normal(s).astype(np.float32))
    if kind == "cross":
        q, k, v = t(B, H, N, D), t(B, H, L_PAD, D), t(B, H, L_PAD, D)
        m = np.zeros((B, L_PAD), np.int32); m[:, :length] = 1
        mask = ms.Tensor(m)
        run = lambda: _sync(attention(q, k, v, key_mask=mask, path=path))
    else:  # spatial self-attention: B*T sequences of S=256 tokens
        S, T = 256, 16
        q, k, v = t(B * T, H, S, D), t(B * T, H, S, D), t(B * T, H, S, D)
        run = lambda: _sync(attention(q, k, v, path=path))
    base = _rss_mb()
    run()  # warm-up; also where the peak is reached
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    print(json.dumps({"time_s": round(statistics.median(times), 4), "peak_mb": round(max(peak, 0.0), 1)}))


def _measure(kind, path, length=0):
    out = subprocess.run([sys.executable, __file__, "--worker", kind, path, str(length)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    res = {"shape": {"B": B, "heads": H, "head_dim": D, "video_tokens": N, "text_padded": L_PAD},
           "cross_attn": {}, "self_attn": {}}
    for path in ("math", "lean"):
        name = "plain" if path == "math" else "lean"
        res["cross_attn"][name] = {f"len{n}": _measure("cross", path, n) for n in (8, 30, 120)}
        res["self_attn"][name] = {"S256": _measure("self", path)}
    p, l = res["cross_attn"]["plain"], res["cross_attn"]["lean"]
    res["speedup_lean_vs_plain"] = {k: round(p[k]["time_s"] / l[k]["time_s"], 2) for k in p}
    res["repeats"] = REPEATS
    print(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
