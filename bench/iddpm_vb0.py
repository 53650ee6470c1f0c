"""IDDPM's variational-bound term at t = 0 (the discretised decoder likelihood) against references. One JSON line.

A batch of 4 latent clips (4x2x8x8) in [-1, 1] with rows at exactly -1 and +1 (the outer bins), fixed noise and a
fixed model output (eps and the variance channel), t = 0 for every sample. `training_losses(...)["vb"]` is compared
with the same formula evaluated
- in float64 numpy (`vs_float64`: the exact value of the formula), and
- in torch float32, step for step as the original `gaussian_diffusion.py` writes it (`vs_torch_f32`: what the
  original computes; skipped when torch is not installed).
Run on an older checkout (PYTHONPATH=<old checkout>) to see the effect of MindSpore's CPU float32 `tanh` (off by up
to 1e-4), which the current code replaces by `kernels.tanh`.
"""
import json

import numpy as np


def vb_float64(diff, x0, noise, out, t=0):
    ab, ab_prev, beta = diff.alphas_cumprod[t], diff.alphas_cumprod_prev[t], diff.betas[t]
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    C = x0.shape[0]
    eps, v = out[:C], out[C:]
    c1, c2 = beta * np.sqrt(ab_prev) / (1 - ab), (1 - ab_prev) * np.sqrt(1 - beta) / (1 - ab)
    mu = c1 * (np.sqrt(1 / ab) * xt - np.sqrt(1 / ab - 1) * eps) + c2 * xt
    logvar = (v + 1) / 2 * np.log(beta) + (1 - v) / 2 * diff.posterior_log_variance_clipped[t]
    cdf = lambda u: 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
    s = np.exp(-0.5 * logvar)
    lo, hi = cdf(s * (x0 - mu - 1 / 255)), cdf(s * (x0 - mu + 1 / 255))
    p = np.where(x0 < -0.999, hi, np.where(x0 > 0.999, 1 - lo, hi - lo))
    return -np.mean(np.log(np.maximum(p, 1e-12))) / np.log(2)


def vb_torch_f32(diff, x0, noise, out, t=0):
    import torch
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)
    x0, noise, out = f(x0), f(noise), f(out)
    xt = f(diff.sqrt_alphas_cumprod[t]) * x0 + f(diff.sqrt_one_minus_alphas_cumprod[t]) * noise
    C = x0.shape[0]
    eps, v = out[:C], out[C:]
    x0_hat = f(diff.sqrt_recip_alphas_cumprod[t]) * xt - f(diff.sqrt_recipm1_alphas_cumprod[t]) * eps
    mu = f(diff.posterior_mean_coef1[t]) * x0_hat + f(diff.posterior_mean_coef2[t]) * xt
    frac = (v + 1) / 2
    logvar = frac * f(np.log(diff.betas[t])) + (1 - frac) * f(diff.posterior_log_variance_clipped[t])
    cdf = lambda u: 0.5 * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (u + 0.044715 * torch.pow(u, 3))))
    inv = torch.exp(-0.5 * logvar)
    cp, cm = cdf(inv * (x0 - mu + 1.0 / 255)), cdf(inv * (x0 - mu - 1.0 / 255))
    ll = torch.where(x0 < -0.999, torch.log(cp.clamp(min=1e-12)),
                     torch.where(x0 > 0.999, torch.log((1.0 - cm).clamp(min=1e-12)),
                                 torch.log((cp - cm).clamp(min=1e-12))))
    return float(-ll.mean() / np.log(2.0))


def main():
    import mindspore as ms
    from opensora_nb.diffusion.iddpm import IDDPM
    gd = IDDPM(timestep_respacing="")
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (4, 4, 2, 8, 8)).astype(np.float32)
    x0[:, :, :, :2], x0[:, :, :, -2:] = -1.0, 1.0
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    out = (rng.uniform(-1, 1, (4, 8, 2, 8, 8)) * 0.3).astype(np.float32)
    vb = gd.training_losses(lambda x, t: ms.Tensor(out), ms.Tensor(x0), ms.Tensor(np.zeros(4, np.int32)),
                            noise=ms.Tensor(noise))["vb"].asnumpy().astype(np.float64)
    ref = np.array([vb_float64(gd, *(a[i].astype(np.float64) for a in (x0, noise, out))) for i in range(4)])
    res = {"bench": "iddpm_vb0", "vb": vb.round(7).tolist(), "float64": ref.round(7).tolist(),
           "vs_float64_max_abs": float(np.abs(vb - ref).max()), "vs_float64_max_rel": float((np.abs(vb - ref) / ref).max())}
    try:
        tref = np.array([vb_torch_f32(gd, x0[i], noise[i], out[i]) for i in range(4)])
        res.update(torch_f32_vs_float64_max_rel=float((np.abs(tref - ref) / ref).max()),
                   vs_torch_f32_max_abs=float(np.abs(vb - tref).max()),
                   vs_torch_f32_max_rel=float((np.abs(vb - tref) / tref).max()))
    except ImportError:
        res["vs_torch_f32"] = "torch not installed"
    print(json.dumps(res))


if __name__ == "__main__":
    main()
