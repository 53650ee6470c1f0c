"""IDDPM (Open-Sora v1.0 diffusion): training on one clip with the hybrid loss drives the loss down.

The closed forms, respacing, samplers, the loss against a float64 hand computation, classifier-free guidance, the
sample() plumbing and the bad-input errors are pinned in nbs/04_iddpm.ipynb. Slow tests (more than a minute on
2 shared cores) run only with OPENSORA_NB_SLOW=1."""
import math
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from opensora_nb.diffusion.iddpm import IDDPM

slow = pytest.mark.skipif(os.environ.get("OPENSORA_NB_SLOW", "0") != "1", reason="slow: set OPENSORA_NB_SLOW=1")


def _f32(a):
    return Tensor(np.asarray(a, np.float32))


# ----------------------------------------------------------------------------------------------------- overfitting
class TinyDenoiser(nn.Cell):
    "eps = a(t, y) * x + b(t, y) elementwise and the variance channels v(t, y), from an MLP on the t/caption embedding."
    def __init__(self, shape=(4, 2, 4, 4), caption_channels=16, hidden=128, freq=32):
        super().__init__()
        self.shape, self.n = shape, int(np.prod(shape))
        half = freq // 2
        self.freqs = Tensor(np.exp(-math.log(10000) * np.arange(half) / half).astype(np.float32)[None])
        self.y_proj = nn.Dense(caption_channels, freq)
        self.net = nn.SequentialCell(nn.Dense(freq, hidden), nn.SiLU(), nn.Dense(hidden, hidden), nn.SiLU(),
                                     nn.Dense(hidden, 3 * self.n, weight_init="zeros", bias_init="zeros"))

    def construct(self, x, timestep, y, mask=None):
        B = x.shape[0]
        args = timestep.astype(ms.float32).reshape(B, 1) * self.freqs
        temb = ops.cat([ops.cos(args), ops.sin(args)], axis=1) + self.y_proj(y.mean(axis=(1, 2)))
        a, b, v = ops.split(self.net(temb), self.n, axis=1)
        return ops.cat([a * x.reshape(B, self.n) + b, v], axis=1).reshape(B, 2 * self.shape[0], *self.shape[1:])


def _overfit(model, clip_shape, caption, steps, lr, batch=16, seed=0):
    """Train on one clip with the IDDPM hybrid loss; return the per-step batch-mean losses. They are noisy (a fresh t
    per sample; small t are hard), so the tests compare the first steps' mean with the median of the last 50."""
    rng = np.random.default_rng(seed)
    x0 = _f32(np.tile(rng.standard_normal((1, *clip_shape)), (batch, 1, 1, 1, 1)))
    y = _f32(np.tile(caption, (batch, 1, 1, 1)))
    kwargs = dict(y=y, mask=Tensor(np.ones((batch, caption.shape[2]), np.int32)))
    diffusion = IDDPM(timestep_respacing="")
    opt = nn.Adam(model.trainable_params(), learning_rate=lr)
    step = ms.value_and_grad(lambda t, n: diffusion.training_losses(model, x0, t, kwargs, noise=n)["loss"].mean(),
                             None, opt.parameters)
    model.set_train(True)
    losses = []
    for _ in range(steps):
        t = Tensor(rng.integers(0, diffusion.num_timesteps, batch).astype(np.int32))
        loss, grads = step(t, _f32(rng.standard_normal(x0.shape)))
        opt(grads)
        losses.append(float(loss.asnumpy()))
    return np.array(losses)


def test_tiny_denoiser_loss_drops():
    "Fast version: 40 steps of the hybrid loss on one clip cut the loss at least 3x."
    ms.set_seed(0)
    caption = np.random.default_rng(1).standard_normal((1, 1, 4, 16))
    losses = _overfit(TinyDenoiser(), (4, 2, 4, 4), caption, steps=40, lr=1e-2)
    assert losses[:3].mean() > 3 * losses[-10:].mean(), losses


@slow
def test_tiny_denoiser_overfits_one_clip():
    ms.set_seed(0)
    caption = np.random.default_rng(1).standard_normal((1, 1, 4, 16))
    losses = _overfit(TinyDenoiser(), (4, 2, 4, 4), caption, steps=200, lr=1e-2)
    assert losses[:5].mean() > 10 * np.median(losses[-50:]), (losses[:5], losses[-50:])


@slow
def test_tiny_stdit_overfits_one_clip():
    stdit = pytest.importorskip("opensora_nb.models.stdit")
    ms.set_seed(0)
    model = stdit.STDiT(input_size=(2, 4, 4), in_channels=4, patch_size=(1, 2, 2), hidden_size=64, depth=1,
                        num_heads=2, caption_channels=16, model_max_length=4, class_dropout_prob=0.0)
    caption = np.random.default_rng(1).standard_normal((1, 1, 4, 16))
    losses = _overfit(model, (4, 2, 4, 4), caption, steps=200, lr=5e-3, batch=8)  # measured: 0.861 -> 0.063 (13.7x)
    assert losses[:5].mean() > 10 * np.median(losses[-50:]), (losses[:5], losses[-50:])
