"""Open-Sora-Plan v1.0.0 model figures, printed as ONE JSON line.

causalvae:
- `params`: parameter count of the released CausalVAEModel_4x8x8 config (built at full size, random weights).
- `encode_17x256x256` / `decode_17x256x256`: untiled encode of a (1, 3, 17, 256, 256) clip and decode of its
  (1, 4, 5, 32, 32) latent, random weights, fp32, PyNative, after a small warm-up call.
- `encode_65x512x512_tiled` / `decode_65x512x512_tiled`: the real tiled call (`enable_tiling()`, default tiles:
  256 px / 32 latent px, overlap 0.25, time chunks of 17 frames / 5 latent frames) on a (1, 3, 65, 512, 512) clip /
  (1, 4, 17, 64, 64) latent. The whole decode costs about 470 TFLOP (40+ min here), so the real call is stopped
  after the first `CAUSALVAE_BENCH_TILES` (default 1) tiles: those are full-size tiles (17x256x256 / 5x32x32), the
  largest of the call, so the measured peak RSS is the call's peak (the blended output it assembles adds at most
  0.2 GB on top: the full 65x512x512x3 fp32 result). Time is extrapolated: mean full-tile seconds x (sum over all tiles
  of tile voxels) / (full-tile voxels) -- see each entry's `method`. With `CAUSALVAE_BENCH_TILES=all` the tiled
  calls run to the end instead: `seconds` is the whole call's wall time, `peak_rss_gb` its process's peak, and
  `tile_seconds` the time of every tile (the full-size ones first in each row).
- `decode_17x384x384_tiled`: a complete tiled decode of a (1, 4, 5, 48, 48) latent (2 x 2 overlapping tiles, blended),
  run to the end: the measured time and peak of a whole multi-tile call.
Every measurement runs in its own subprocess, so `peak_rss_gb` is that process's own peak (`ru_maxrss`),
`rss_model_gb` its RSS with the model built and warmed up. CPU timings on a shared machine are noisy.

latte: `bench/_latte.py`'s `latte_figures()` when that file exists (its own subprocesses), merged under "latte".
Environment: CAUSALVAE_BENCH_TILES (tiles timed per tiled call), CAUSALVAE_BENCH_TILE_CACHE (a folder: with
CAUSALVAE_BENCH_TILES=all each finished tile's output and time are kept there, and a rerun after an interruption reads
them back and computes only the rest; its JSON then reports `seconds_all_tiles` and this run's own wall time), CAUSALVAE_BENCH_SKIP (comma list of entries to skip),
PLAN_BENCH_CACHE (a folder: each finished entry is saved there as NAME.json and reused by a later run, so a long bench
can be resumed; entries taken from the cache say so under "cached").
"""
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_TILES = os.environ.get("CAUSALVAE_BENCH_TILES", "1")
TILES = 0 if _TILES == "all" else int(_TILES)  # 0: run the tiled 65x512x512 calls to the end
TILE_CACHE = os.environ.get("CAUSALVAE_BENCH_TILE_CACHE")  # a folder: each finished tile is kept, a rerun resumes
SKIP = set(filter(None, os.environ.get("CAUSALVAE_BENCH_SKIP", "").split(",")))
CACHE = os.environ.get("PLAN_BENCH_CACHE")


def _rss_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# complete calls: input shape, tiled
COMPLETE = {"encode_17x256x256": ((1, 3, 17, 256, 256), False), "decode_17x256x256": ((1, 4, 5, 32, 32), False),
            "decode_17x384x384_tiled": ((1, 4, 5, 48, 48), True)}


class _Stop(Exception):
    pass


def _model():
    import mindspore as ms
    from opensora_nb.models.causalvae import CAUSALVAE_4x8x8, CausalVAEModel
    ms.set_seed(0)
    m = CausalVAEModel(**CAUSALVAE_4x8x8)
    m.set_train(False)
    return m


def _tile_work(shape, tile, tile_t, overlap):
    "Voxels (frames x h x w) of every tile the tiled call processes, and of one full tile."
    from opensora_nb.models.causalvae import _time_chunks
    t, h, w = shape
    stride = int(tile * (1 - overlap))
    sizes = lambda n: [min(tile, n - s) for s in range(0, n, stride)]
    chunks = _time_chunks(t, tile_t)
    total = sum((e - s) * a * b for s, e in chunks for a in sizes(h) for b in sizes(w))
    return total, tile_t * tile * tile, len(chunks) * len(sizes(h)) * len(sizes(w))


def _worker(name):
    import numpy as np
    import mindspore as ms
    from opensora_nb.runtime import set_runtime
    set_runtime("CPU")  # blocking launches, as the pipelines and bench/compare.py run (asynchronous ones are ~1.8x slower here)
    rng = np.random.default_rng(0)
    if name == "params":
        m = _model()
        return {"params": sum(int(np.prod(p.shape)) for p in m.get_parameters())}
    m = _model()
    warm = ms.Tensor(rng.standard_normal((1, 3, 5, 16, 16)).astype(np.float32))
    m.decode(m.encode(warm).mode()).asnumpy()  # warm-up: kernel selection, first-call costs
    base = _rss_gb()
    if name in COMPLETE:  # one call run to the end
        shape, tiled = COMPLETE[name]
        x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
        if tiled: m.enable_tiling()
        run = (lambda: m.encode(x).mean) if name.startswith("encode") else (lambda: m.decode(x))
        t0 = time.perf_counter(); out = run().asnumpy(); dt = time.perf_counter() - t0
        assert np.isfinite(out).all()
        res = {"seconds": round(dt, 1), "out_shape": list(out.shape), "rss_model_gb": round(base, 2),
               "peak_rss_gb": round(_peak_gb(), 2), "method": "one full untiled call, fp32"}
        if tiled:
            work, full, n = _tile_work(shape[2:], m.tile_latent_min_size, m.tile_latent_min_size_t, m.tile_overlap_factor)
            res.update(tiles=n, full_tile_equivalents=round(work / full, 2),
                       method="one complete tiled call (2x2 spatial tiles with overlap blending), fp32")
        return res
    # tiled 65x512x512: the real call, stopped after TILES full tiles
    m.enable_tiling()
    encode = name.startswith("encode")
    attr = "_encode_tile" if encode else "_decode_tile"
    inner, times = getattr(m, attr), []

    cached = []

    def timed(tile):
        saved = os.path.join(TILE_CACHE, f"{name}-{len(times):02d}.npy") if TILE_CACHE else None
        if saved and os.path.exists(saved):  # finished by an earlier, interrupted run of the same call
            out = ms.Tensor(np.load(saved)); times.append(float(np.load(saved[:-4] + "-seconds.npy")))
            cached.append(len(times) - 1)
            return out
        t0 = time.perf_counter(); out = inner(tile); arr = out.asnumpy(); times.append(time.perf_counter() - t0)
        if saved:  # its time first, then the tile under its final name in one step
            np.save(saved[:-4] + "-seconds.npy", np.array(times[-1]))
            np.save(saved[:-4] + ".part.npy", arr); os.replace(saved[:-4] + ".part.npy", saved)
        if TILES and len(times) >= TILES: raise _Stop
        print(f"[plan_models] {name}: tile {len(times)} of {n}, {times[-1]:.1f} s", file=sys.stderr, flush=True)
        return out
    setattr(m, attr, timed)
    if encode:
        x = ms.Tensor(rng.standard_normal((1, 3, 65, 512, 512)).astype(np.float32))
        work, full, n = _tile_work((65, 512, 512), m.tile_sample_min_size, m.tile_sample_min_size_t, m.tile_overlap_factor)
        call = lambda: m.encode(x)
    else:
        x = ms.Tensor(rng.standard_normal((1, 4, 17, 64, 64)).astype(np.float32))
        work, full, n = _tile_work((17, 64, 64), m.tile_latent_min_size, m.tile_latent_min_size_t, m.tile_overlap_factor)
        call = lambda: m.decode(x)
    if not TILES:  # the whole call, to the end
        t0 = time.perf_counter(); out = call(); out = (out.mean if encode else out).asnumpy()
        dt = time.perf_counter() - t0
        assert np.isfinite(out).all() and len(times) == n, (len(times), n)
        if cached:  # the wall time covers this run only: the tiles of earlier runs were read back, not computed
            return {"seconds_this_run": round(dt, 1), "seconds_all_tiles": round(sum(times), 1),
                    "tiles_read_back": cached, "out_shape": list(out.shape), "tiles": n,
                    "tile_seconds": [round(t, 1) for t in times], "rss_model_gb": round(base, 2),
                    "peak_rss_gb_this_run": round(_peak_gb(), 2),
                    "method": "the real tiled call run to the end over several runs (CAUSALVAE_BENCH_TILE_CACHE), fp32"}
        return {"seconds": round(dt, 1), "out_shape": list(out.shape), "tiles": n,
                "full_tile_equivalents": round(work / full, 2), "tile_seconds": [round(t, 1) for t in times],
                "rss_model_gb": round(base, 2), "peak_rss_gb": round(_peak_gb(), 2),
                "method": "the real tiled call run to the end (CAUSALVAE_BENCH_TILES=all), fp32"}
    try:
        call()
        raise RuntimeError("the tiled call finished before the tile budget; nothing to extrapolate")
    except _Stop:
        pass
    per_tile = sum(times) / len(times)
    return {"seconds_estimate": round(per_tile * work / full, 1), "seconds_per_full_tile": round(per_tile, 1),
            "tiles_timed": len(times), "tiles_total": n, "rss_model_gb": round(base, 2),
            "peak_rss_gb": round(_peak_gb(), 2),
            "method": (f"real tiled call stopped after {len(times)} of {n} tiles (full-size tiles, the call's largest); "
                       f"time = mean full-tile s x total tile voxels / full-tile voxels ({work / full:.2f} full-tile "
                       "equivalents); peak RSS of that partial call (assembling the output adds <= 0.2 GB)")}


def _run(name):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name], capture_output=True, text=True,
                       env=dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0"))
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        return {"error": (r.stderr or r.stdout)[-1500:]}
    return json.loads(lines[-1])


def causalvae_figures() -> dict:
    out = {}
    for name in ("params", "encode_65x512x512_tiled", "decode_65x512x512_tiled", "encode_17x256x256", "decode_17x256x256",
                 "decode_17x384x384_tiled"):
        if name in SKIP: continue
        t0 = time.time()
        cached = os.path.join(CACHE, name + ".json") if CACHE else None
        if cached and os.path.exists(cached):
            with open(cached) as f: out[name] = {**json.load(f), "cached": True}
            continue
        out[name] = _run(name)
        if cached and "error" not in out[name]:
            os.makedirs(CACHE, exist_ok=True)
            with open(cached, "w") as f: json.dump(out[name], f)
        print(f"[plan_models] {name} ({time.time() - t0:.0f} s): {json.dumps(out[name])}", file=sys.stderr, flush=True)
    if "params" in out and "params" in out["params"]: out["params"] = out["params"]["params"]
    return out


def main():
    t0 = time.time()
    res = {"bench": "plan_models", "causalvae": causalvae_figures()}
    latte_cache = os.path.join(CACHE, "latte.json") if CACHE else None
    if latte_cache and os.path.exists(latte_cache):
        with open(latte_cache) as f: res["latte"] = {**json.load(f), "cached": True}
    elif os.path.exists(os.path.join(HERE, "_latte.py")) and "latte" not in SKIP:
        sys.path.insert(0, HERE)
        try:
            from _latte import latte_figures
            res["latte"] = latte_figures()
            if latte_cache:
                os.makedirs(CACHE, exist_ok=True)
                with open(latte_cache, "w") as f: json.dump(res["latte"], f)
        except Exception as e:  # report, do not hide
            res["latte"] = {"error": f"{type(e).__name__}: {e}"[-1500:]}
    res["cpu_count"] = os.cpu_count()
    res["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    res["wall_s"] = round(time.time() - t0)
    res["note"] = "random weights, fp32, MindSpore CPU PyNative; shared 2-core machine: timings are noisy"
    print(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.path.insert(0, os.path.dirname(HERE))
        print(json.dumps(_worker(sys.argv[2])))
    else:
        main()
