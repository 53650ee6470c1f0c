"""Full-size pipeline stages on this CPU: time and peak memory per stage, and the predicted wall time of one video.

Random weights, the real architectures, fp32, each stage in its own process (its peak RSS is its own), through the
pipelines' own stage methods:
- `t5_encode`: T5-v1.1-XXL on 2 prompts (a synthetic full-size folder, as `bench/make_t5_xxl.py` writes it, at
  BENCH_T5_DIR; bf16 weights computed in fp32 on CPU; 120 tokens for Open-Sora, the same encoder serves both);
- `opensora_step`: one guided IDDPM step of STDiT-XL/2 at 16x256x256 (latent 4x16x32x32, the guidance batch of 2;
  two steps timed, since a 1-step respacing is degenerate, and the mean reported);
- `opensora_decode`: the SD VAE (sd-vae-ft-ema architecture) decoding the 16 frames, micro-batches of 4;
- `plan_step`: one guided step of LatteT2V-XL/122 at 17x256x256 (latent 4x5x32x32, batch 2, a 30-token caption);
- `plan_decode`: the CausalVAE 4x8x8 decoding 17x256x256 (one tile).
`predicted_video_s` = encode + steps x step + decode, with the released step counts (100 IDDPM steps; 250 PNDM steps
in Open-Sora-Plan's sample script). Set BENCH_STAGES to run a subset. Prints one JSON line; takes about half an hour.
"""
import json
import os
import resource
import subprocess
import sys
import time

T5_DIR = os.environ.get("BENCH_T5_DIR", "/tmp/t5xxl_bench")
STAGES = ("t5_encode", "opensora_step", "opensora_decode", "plan_step", "plan_decode")


def _peak_gb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _worker(stage):
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor
    from opensora_nb.runtime import set_seed
    set_seed(0)
    rng = np.random.default_rng(0)
    t0, steps = time.perf_counter(), 1
    if stage == "t5_encode":
        from opensora_nb.models.t5 import T5TextEncoder
        enc = T5TextEncoder(T5_DIR, model_max_length=120, dtype="bf16")
        build = time.perf_counter() - t0; t0 = time.perf_counter()
        out = enc.encode(["a red circle moves left on a black background", "a cat walks on the grass"])
        assert np.isfinite(out["y"].asnumpy()).all()
    elif stage == "opensora_step":
        from opensora_nb.models.stdit import STDiT_XL_2
        from opensora_nb.diffusion.iddpm import IDDPM
        from opensora_nb.pipelines import OpenSoraPipeline
        pipe = OpenSoraPipeline(model=STDiT_XL_2(input_size=(16, 32, 32), space_scale=0.5),
                                scheduler=IDDPM(num_sampling_steps=2, cfg_scale=7.0))   # 1 step is degenerate
        build = time.perf_counter() - t0; t0 = time.perf_counter()
        mask = (np.arange(120)[None] < 30).astype(np.int32)
        lat = pipe.denoise(dict(y=Tensor(rng.standard_normal((1, 1, 120, 4096)).astype(np.float32)), mask=Tensor(mask)),
                           progress=False)
        assert np.isfinite(lat.asnumpy()).all()
        steps = 2
    elif stage == "opensora_decode":
        from opensora_nb.models.sd_vae import AutoencoderKL, VideoAutoencoderKL, SD_VAE_CONFIG
        from opensora_nb.pipelines import OpenSoraPipeline
        pipe = OpenSoraPipeline(vae=VideoAutoencoderKL(AutoencoderKL(**SD_VAE_CONFIG), micro_batch_size=4))
        build = time.perf_counter() - t0; t0 = time.perf_counter()
        video = pipe.decode(rng.standard_normal((1, 4, 16, 32, 32)).astype(np.float32))
        assert video.shape == (1, 16, 256, 256, 3)
    elif stage == "plan_step":
        from opensora_nb.models.latte import LatteT2V_XL_122, latte_version_kwargs
        from opensora_nb.diffusion.samplers import get_sampler
        from opensora_nb.pipelines import OpenSoraPlanPipeline
        pipe = OpenSoraPlanPipeline(transformer=LatteT2V_XL_122(**latte_version_kwargs("17x256x256")),
                                    sampler=get_sampler("DDIM"))
        build = time.perf_counter() - t0; t0 = time.perf_counter()
        emb = Tensor(rng.standard_normal((1, 30, 4096)).astype(np.float32))
        lat = pipe.denoise(emb, emb * 0, num_inference_steps=1, progress=False)
        assert np.isfinite(lat.asnumpy()).all()
    elif stage == "plan_decode":
        from opensora_nb.models.causalvae import CausalVAEModel, CAUSALVAE_4x8x8
        from opensora_nb.pipelines import OpenSoraPlanPipeline
        pipe = OpenSoraPlanPipeline(vae=CausalVAEModel(**CAUSALVAE_4x8x8).set_train(False))
        build = time.perf_counter() - t0; t0 = time.perf_counter()
        video = pipe.decode(rng.standard_normal((1, 4, 5, 32, 32)).astype(np.float32))
        assert video.shape == (1, 17, 256, 256, 3)
    print(json.dumps({"s": round((time.perf_counter() - t0) / steps, 1), "build_s": round(build, 1),
                      "peak_rss_gb": _peak_gb(), **({"steps_timed": steps} if steps > 1 else {})}))


def _run(stage):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", stage], capture_output=True, text=True,
                       env=dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0"))
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:300]}
    return json.loads(lines[-1])


def main():
    wanted = os.environ.get("BENCH_STAGES", ",".join(STAGES)).split(",")
    if "t5_encode" in wanted and not os.path.isfile(os.path.join(T5_DIR, "config.json")):
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "make_t5_xxl.py"), "--out", T5_DIR,
                        "--dtype", "bf16"], check=True, capture_output=True)
    res = {"bench": "pipeline", "dtype": "fp32 (T5 weights bf16)", "device": "CPU",
           "load_avg_start": round(os.getloadavg()[0], 2)}
    for s in STAGES:
        if s in wanted: res[s] = _run(s)
    get = lambda k: res.get(k, {}).get("s")
    if all(get(k) is not None for k in ("t5_encode", "opensora_step", "opensora_decode")):
        res["opensora_16x256x256_predicted_video_s"] = round(get("t5_encode") / 2 + 100 * get("opensora_step")
                                                             + get("opensora_decode"))
    if all(get(k) is not None for k in ("t5_encode", "plan_step", "plan_decode")):
        res["plan_17x256x256_predicted_video_s"] = round(get("t5_encode") / 2 + 250 * get("plan_step") + get("plan_decode"))
    res["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        main()
