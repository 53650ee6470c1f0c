"""Peak memory of whole full-size sampling runs, staged (one model in memory at a time), through the two commands.

Random weights at full size are written once in the released on-disk layouts under BENCH_DIR (STDiT-XL/2 as a
safetensors checkpoint, the SD VAE and the CausalVAE as diffusers folders, LatteT2V-XL/122 17x256x256 as a version
folder, T5-XXL as `bench/make_t5_xxl.py` writes it, bf16), then `opensora-sample` (16x256x256, 2 IDDPM steps: a
1-step respacing is degenerate) and `opensora-plan-sample` (17x256x256, 1 DDIM step) run end to end in their own
processes. The step count does not change the peak; the commands print the peak RSS after each stage, and the
last one is the whole run's. Prints one JSON line. Takes about 40 minutes and 25 GB of disk.
"""
import json
import os
import subprocess
import sys
import time

DIR = os.environ.get("BENCH_DIR", "/tmp/opensora_nb_fullsize")
T5_DIR = os.environ.get("BENCH_T5_DIR", "/tmp/t5xxl_bench")


def _write_weights():
    import numpy as np
    from opensora_nb.runtime import set_seed
    from opensora_nb.weights import save_checkpoint_atomic
    set_seed(0)
    if not os.path.isfile(os.path.join(T5_DIR, "config.json")):
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "make_t5_xxl.py"), "--out", T5_DIR,
                        "--dtype", "bf16"], check=True, capture_output=True)
    stdit = os.path.join(DIR, "stdit_xl2.safetensors")
    if not os.path.isfile(stdit):
        from opensora_nb.models.stdit import STDiT_XL_2
        m = STDiT_XL_2(input_size=(16, 32, 32), space_scale=0.5)
        save_checkpoint_atomic({n: p for n, p in m.parameters_and_names()}, stdit)
        del m
    vae = os.path.join(DIR, "sd-vae-ft-ema")
    if not os.path.isdir(vae):
        from opensora_nb.models.sd_vae import AutoencoderKL, SD_VAE_CONFIG
        v = AutoencoderKL(**SD_VAE_CONFIG)
        os.makedirs(vae)
        with open(os.path.join(vae, "config.json"), "w") as f:
            json.dump({"_class_name": "AutoencoderKL", **SD_VAE_CONFIG}, f)
        save_checkpoint_atomic({n.replace(".gamma", ".weight").replace(".beta", ".bias"): p
                                for n, p in v.parameters_and_names()},
                               os.path.join(vae, "diffusion_pytorch_model.safetensors"))
    plan = os.path.join(DIR, "Open-Sora-Plan-v1.0.0")
    if not os.path.isdir(os.path.join(plan, "17x256x256")):
        from opensora_nb.models.latte import LatteT2V_XL_122, latte_version_kwargs
        from opensora_nb.models.causalvae import CausalVAEModel, CAUSALVAE_4x8x8
        CausalVAEModel(**CAUSALVAE_4x8x8).save_pretrained(os.path.join(plan, "vae"))
        LatteT2V_XL_122(**latte_version_kwargs("17x256x256")).save_pretrained(os.path.join(plan, "17x256x256"))
    return stdit, vae, plan


def _run(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0"))
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:300]}
    out = json.loads(lines[-1])
    stages = out.get("stages", {})
    return {"wall_s": round(time.perf_counter() - t0, 1), "stages": stages,
            "whole_run_peak_rss_gb": max((s["peak_rss_gb"] for s in stages.values()), default=None)}


def main():
    os.makedirs(DIR, exist_ok=True)
    t0 = time.perf_counter()
    stdit, vae, plan = _write_weights()
    res = {"bench": "pipeline_staged", "write_weights_s": round(time.perf_counter() - t0, 1),
           "load_avg_start": round(os.getloadavg()[0], 2)}
    bindir = os.path.dirname(sys.executable)
    res["opensora_16x256x256"] = _run([os.path.join(bindir, "opensora-sample"),
                                       "--config", os.path.join(os.path.dirname(__file__), "..", "configs", "opensora",
                                                                "inference", "16x256x256.yaml"),
                                       "--ckpt_path", stdit, "--vae_checkpoint", vae, "--t5_model_dir", T5_DIR,
                                       "--captions", "a red panda eating bamboo", "--sampling_steps", "2",
                                       "--dtype", "fp32", "--t5_dtype", "bf16", "--batch_size", "1", "--mode", "1",
                                       "--output_path", os.path.join(DIR, "out_opensora")])
    res["plan_17x256x256"] = _run([os.path.join(bindir, "opensora-plan-sample"), "--model_path", plan,
                                   "--version", "17x256x256", "--text_encoder_name", T5_DIR,
                                   "--text_prompt", "a red panda eating bamboo", "--sample_method", "DDIM",
                                   "--num_sampling_steps", "1", "--t5_dtype", "bf16", "--save_img_path", os.path.join(DIR, "out_plan")])
    res["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
