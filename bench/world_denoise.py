"""Where the built-in world's STDiT fails: its one-step denoising of real training latents, per timestep, with the
clip's caption and with the null caption. Prints one JSON line.

For `N` training clips (their cached SD-VAE latents and T5 embeddings, from `make world`'s build folder), at each
timestep t of the 1000-step linear schedule: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, the model's eps, the implied
x0_hat, and
- `x0_err` / `x0_err_null` / `x0_err_other`: mean |x0_hat - x0|^2 / mean |x0|^2 with the clip's caption, the null
  caption, another clip's caption (1.0 is what predicting zero scores; the gap to `x0_err_other` is how much the
  caption's *words* are used at that noise level, the gap to `x0_err_null` how much having any caption is);
- `decoded_ok`: how many of the N one-step x0_hat decode to a clip the pixel checker matches to its caption.
A model that samples well keeps `decoded_ok` high and `x0_err` well below `x0_err_null` up to t of about 800, where
the layout (position, colour, shape, direction) is decided.

    python bench/world_denoise.py                                   # the shipped STDiT
    python bench/world_denoise.py --stdit outputs/world/stdit/model.safetensors \\
        --config configs/world/experiments/stdit_h128_b16.yaml      # a trained candidate (its model_config)
"""
import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stdit", default=None, help="an STDiT safetensors file (default: the shipped one)")
    p.add_argument("--config", default=None, help="the training config whose model_config the --stdit file has")
    p.add_argument("--build", default=str(ROOT / "outputs/world"), help="make world's build folder")
    p.add_argument("--clips", type=int, default=8); p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timesteps", default="50,200,400,500,600,700,800,900")
    a = p.parse_args()
    import numpy as np
    import yaml
    from mindspore import Tensor
    from opensora_nb import world
    from opensora_nb.diffusion.iddpm import IDDPM
    from opensora_nb.runtime import set_runtime, set_kernels
    from opensora_nb.shapes import score_clip
    build = Path(a.build) / "opensora"
    if not (build / "latents").is_dir() or not (build / "text_emb").is_dir():
        raise SystemExit(f"{build}/latents and text_emb not found: build the world's caches first (README, 'The "
                         "built-in world': opensora-world data, opensora-infer-vae, opensora-infer-t5)")
    load0 = os.getloadavg()[0]
    set_runtime("CPU", "pynative"); set_kernels("native")
    tmp = tempfile.TemporaryDirectory()            # the pipeline reads its files lazily: kept to the end of the run
    wd = Path(tmp.name) / "world"
    shutil.copytree(world.WORLD_DIR, wd)
    if a.stdit:
        shutil.copy(a.stdit, wd / "opensora" / "stdit.safetensors")
        info = json.loads((wd / "world.json").read_text())
        if a.config:
            mc = yaml.safe_load(Path(a.config).read_text())["model_config"]
            info["opensora"]["model"] = {k: mc[k] for k in ("hidden_size", "depth", "num_heads", "patch_size")}
        (wd / "world.json").write_text(json.dumps(info))
    pipe, _ = world.world_pipeline("opensora", wd)
    rows = list(csv.DictReader(open(build / "video_caption.csv")))
    rng = np.random.default_rng(a.seed)
    pick = rng.choice(len(rows), a.clips, replace=False)
    stem = lambda r: r["video"].rsplit(".", 1)[0] + ".npz"
    x0 = np.stack([np.load(build / "latents" / stem(rows[i]))["latent_mean"].transpose(1, 0, 2, 3)
                   for i in pick]).astype(np.float32) * np.float32(0.18215)
    emb = [np.load(build / "text_emb" / stem(rows[i])) for i in pick]
    y = np.stack([e["text_emb"] for e in emb])[:, None].astype(np.float32)
    mask = np.stack([e["mask"] for e in emb]).astype(np.int32)
    other = np.roll(np.arange(len(pick)), 1)                    # each clip gets the previous clip's caption
    y_null = np.broadcast_to(pipe.model.y_embedder.y_embedding.asnumpy()[None, None], y.shape).astype(np.float32)
    caps = [rows[i]["caption"] for i in pick]
    ab = np.cumprod(1 - np.asarray(IDDPM(timestep_respacing="").betas, np.float64))
    n, out, t0 = len(pick), {}, time.perf_counter()
    for t in (int(s) for s in a.timesteps.split(",")):
        eps = rng.standard_normal(x0.shape).astype(np.float32)
        xt = (np.sqrt(ab[t]) * x0 + np.sqrt(1 - ab[t]) * eps).astype(np.float32)
        res = {}
        for name, yy, mm in (("x0_err", y, mask), ("x0_err_null", y_null, mask), ("x0_err_other", y[other], mask[other])):
            e = pipe.model(Tensor(xt), Tensor(np.full(n, t, np.int32)), Tensor(yy), Tensor(mm)).asnumpy()[:, :4]
            x0h = ((xt - np.sqrt(1 - ab[t]) * e) / np.sqrt(ab[t])).astype(np.float32)
            res[name] = round(float(((x0h - x0) ** 2).mean() / (x0 ** 2).mean()), 4)
            if name == "x0_err":
                v = pipe.decode(x0h)
                res["decoded_ok"] = int(sum(score_clip(v[j], caps[j])["all_ok"] for j in range(n)))
        out[str(t)] = res
    print(json.dumps(dict(bench="world_denoise", stdit=a.stdit or "shipped", clips=n, by_t=out,
                          wall_s=round(time.perf_counter() - t0, 1), load_before=load0, load_after=os.getloadavg()[0])))


if __name__ == "__main__":
    main()
