"""Encoder benchmark: T5 load time / peak RSS / encode time (tiny, and T5-XXL-shaped if present) + SD VAE.

    python bench/encoders.py [--xxl_dir /tmp/t5xxl] [--xxl_dtype bf16] [--skip_sd_vae]

Prints ONE JSON line. Each T5 measurement runs in its own process, so `peak_rss_gb` is that process's own peak
(ru_maxrss: MindSpore + the model + transients); `base_rss_gb` is the RSS after imports, before loading.
`weights_gb` is the parameter bytes in the load dtype, `peak_over_weights` = peak RSS / weights_gb (goal for
XXL in bf16: < 1.3). The XXL folder comes from `bench/make_t5_xxl.py` (random weights, full shapes); its
path is `--xxl_dir` or $T5_XXL_DIR; without it only the tiny T5 is measured. The XXL run needs ~11 GB of RAM
and encodes 8 captions of 120 tokens (bf16 weights are computed in fp32 on CPU: several minutes on 2 cores);
`two_blocks_s` times the first two blocks on that batch and `encode8_estimate_s` scales it to all 24, so a
run cut by `--xxl_timeout` still reports load figures and an estimate (`timed_out_after_s` says so).
SD VAE figures come from bench/_sd_vae.py (`sd_vae_figures()`) when that file exists. Timings on a shared
CPU are noisy.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CAPTIONS = ["a red circle moves left on a black background", "A BLUE square spins slowly!",
            "a green star jumps over a white triangle on a sunny day", "",
            "timelapse of clouds over a city skyline at night, neon lights reflecting on wet streets",
            "a yellow ball rolls down a hill " * 12, "Ein Hund läuft über die Straße", "a cat"]


def _rss_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _worker(folder: str, dtype: str, encode: bool):
    "Load, print the load figures at once (flushed), then time 2 blocks on 8x120 tokens, then the full encode."
    import numpy as np
    import mindspore as ms
    from opensora_nb.models.t5 import T5Embedder, T5Encoder

    base = _rss_gb()
    t0 = time.perf_counter()
    model = T5Encoder.from_pretrained(folder, dtype=dtype)
    load_s = time.perf_counter() - t0
    weights_gb = sum(p.size * (2 if p.dtype in (ms.bfloat16, ms.float16) else 4) for p in model.get_parameters()) / 2**30
    out = {"params": int(sum(p.size for p in model.get_parameters())), "dtype": dtype, "load_s": round(load_s, 2),
           "base_rss_gb": round(base, 3), "load_peak_rss_gb": round(_peak_gb(), 3), "weights_gb": round(weights_gb, 4)}
    out["load_peak_over_weights"] = round(out["load_peak_rss_gb"] / weights_gb, 3)
    print(json.dumps(out), flush=True)
    if encode:
        emb = T5Embedder(folder, model_max_length=120, model=model)
        tok = emb.tokenize(CAPTIONS)
        ids, mask = ms.Tensor(tok["input_ids"]), ms.Tensor(tok["attention_mask"]).astype(ms.bool_)
        x = model.shared(ids).astype(ms.float32)
        t0 = time.perf_counter()
        pb = None
        for blk in model.encoder.block[:2]:
            x, pb = blk(x, mask, pb, model.compute_dtype)
        x.asnumpy()
        two = time.perf_counter() - t0
        out.update(two_blocks_s=round(two, 2),
                   encode8_estimate_s=round(two * model.config.num_layers / 2, 1))
        print(json.dumps(out), flush=True)
        t0 = time.perf_counter()
        y, _ = emb.get_text_embeddings(CAPTIONS)
        y = y.asnumpy()
        out.update(encode8_s=round(time.perf_counter() - t0, 2), emb_shape=list(y.shape),
                   emb_finite=bool(np.isfinite(y).all()))
    out["peak_rss_gb"] = round(_peak_gb(), 3)
    out["peak_over_weights"] = round(out["peak_rss_gb"] / weights_gb, 3)
    print(json.dumps(out), flush=True)


def _measure(folder, dtype, encode=True, timeout=1800):
    "Run a worker; on timeout keep the last figures it printed and say so."
    env = dict(os.environ, OPENSORA_NB_PROGRESS="0", GLOG_v="3")
    proc = subprocess.Popen([sys.executable, __file__, "--worker", str(folder), dtype, str(int(encode))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        timed_out = True
    lines = [l for l in stdout.strip().splitlines() if l.startswith("{")]
    if not lines:
        err = stderr.strip().splitlines()[-1] if stderr.strip() else f"rc {proc.returncode}"
        return {"error": f"timed out after {timeout} s" if timed_out else err}
    out = json.loads(lines[-1])
    if timed_out: out["timed_out_after_s"] = timeout
    elif proc.returncode != 0: out["error"] = stderr.strip().splitlines()[-1]
    return out


def _tiny_folder(root: Path) -> Path:
    "A tiny random T5-v1.1 folder (config.json, model.safetensors, spiece.model)."
    import mindspore as ms
    from safetensors.numpy import save_file
    sys.path.insert(0, str(HERE))
    from make_t5_xxl import write_spiece
    from opensora_nb.models.t5 import T5Config, T5Encoder
    cfg = T5Config(vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu")
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(dict(cfg.__dict__, model_type="t5")))
    ms.set_seed(0)
    save_file({p.name: p.asnumpy() for p in T5Encoder(cfg).get_parameters()}, str(root / "model.safetensors"))
    write_spiece(root)
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description="T5 / SD VAE encoder benchmark (one JSON line)")
    p.add_argument("--xxl_dir", default=os.environ.get("T5_XXL_DIR"))
    p.add_argument("--xxl_dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--xxl_timeout", type=int, default=1500, help="seconds for the XXL worker (load + encode)")
    p.add_argument("--skip_sd_vae", action="store_true")
    args = p.parse_args(argv)
    result = {"bench": "encoders", "cpu_count": os.cpu_count(), "note": "shared 2-core CPU: timings noisy"}
    with tempfile.TemporaryDirectory() as d:
        folder = _tiny_folder(Path(d) / "t5_tiny")
        result["t5_tiny"] = _measure(folder, "fp32")
    if args.xxl_dir and (Path(args.xxl_dir) / "config.json").is_file():
        result["t5_xxl"] = dict(_measure(args.xxl_dir, args.xxl_dtype, timeout=args.xxl_timeout), folder=args.xxl_dir)
    else:
        result["t5_xxl"] = "skipped: no synthetic checkpoint (python bench/make_t5_xxl.py --out DIR; --xxl_dir DIR)"
    if not args.skip_sd_vae and (HERE / "_sd_vae.py").is_file():
        sys.path.insert(0, str(HERE))
        from _sd_vae import sd_vae_figures
        result["sd_vae"] = sd_vae_figures()
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
    else:
        main()
