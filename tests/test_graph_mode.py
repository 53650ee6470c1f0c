"""Compiled = eager. Every model's forward pass, and one training step (forward, `value_and_grad`, AdamW update)
of STDiT and LatteT2V, give the eager (PyNative) numbers compiled: relative max abs difference <= 1e-6. Text masks
include a caption of one token and a mask with holes.

Each case compiles once, in one of the two ways (compiling is most of this file's time): GRAPH_MODE (where calling a
Cell compiles it; what `mode: graph` sets for sampling) for the denoisers' and VAEs' forward passes and STDiT's
training step, `mindspore.jit` (what `DiffusionTrainer` wraps its step in) for LatteT2V's training step, joint images
and the frame-wise SD VAE; T5 both ways. The notebooks hold the other way of the two headline cases: `03_stdit`
compiles STDiT (full and cut captions) with `mindspore.jit`, `09_latte` LatteT2V without a mask, `14_train` trains
STDiT under `mindspore.jit` through `DiffusionTrainer`.
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from opensora_nb.runtime import set_seed
from opensora_nb.attention import trim_caption
from opensora_nb.diffusion.iddpm import IDDPM
from opensora_nb.models.stdit import STDiT, tiny_stdit_config
from opensora_nb.models.latte import LatteT2V, tiny_latte_config
from opensora_nb.models.t5 import T5Encoder, tiny_t5_config
from opensora_nb.models.sd_vae import AutoencoderKL, VideoAutoencoderKL, tiny_sd_vae_config
from opensora_nb.models.causalvae import CausalVAEModel, tiny_causalvae_config

TOL = 1e-6


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rel(a, b):
    a, b = (t.asnumpy() if isinstance(t, Tensor) else np.asarray(t) for t in (a, b))
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run_in(mode, fn, *args):
    "`fn(*args)` eagerly, under mindspore.jit, or in GRAPH_MODE (where a Cell's construct compiles on call)."
    if mode == "jit":
        return ms.jit(fn)(*args)
    if mode == "GRAPH_MODE":
        ms.set_context(mode=ms.GRAPH_MODE)
        try:
            return fn(*args)
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)
    return fn(*args)


def check_compiled(cell, *args, first=lambda out: out, modes=("GRAPH_MODE",)):
    "Eager and compiled outputs of `cell(*args)` agree; returns the eager output."
    eager = first(cell(*args))
    for name in modes:
        out = first(run_in(name, cell, *args))
        assert out.shape == eager.shape, name
        assert rel(out, eager) <= TOL, f"{name}: relative difference {rel(out, eager):.2e}"
    return eager


def perturbed(model, seed=100):
    "Make the zero-initialised tensors (output projections) random, so that every path shows in the output."
    rng = np.random.default_rng(seed)
    for _, p in model.parameters_and_names():
        if p.requires_grad and np.abs(p.asnumpy()).max() == 0:
            p.set_data(Tensor((rng.standard_normal(p.shape) * 0.05).astype(np.float32)))
    return model


# masks: a full caption, a caption of one token, a caption with holes (not a prefix)
def caption_masks(L):
    m = np.zeros((3, L), np.int32)
    m[0] = 1
    m[1, 0] = 1
    m[2, [0, 2, L - 3]] = 1
    return m


def test_stdit_compiled():
    set_seed(0)
    model = perturbed(STDiT(**tiny_stdit_config())).set_train(False)
    x, y = Tensor(rnd(3, 4, 4, 8, 8)), Tensor(rnd(3, 1, 8, 32, seed=1))
    t, mask = Tensor(np.array([1, 500, 999], np.int32)), Tensor(caption_masks(8))
    eager = check_compiled(model, x, t, y, mask)
    # the caller's cut of the shared padding changes nothing (compiled on the cut: 03_stdit under jit, and
    # test_pipelines' GRAPH_MODE sampling, which cuts before its loop)
    yt, mt = trim_caption(y[1:], mask[1:], axis=2)
    assert yt.shape[2] == 6
    assert rel(model(x[1:], t[1:], yt, mt), eager[1:]) <= TOL


def test_latte_compiled():
    set_seed(0)
    model = LatteT2V(**tiny_latte_config()).set_train(False)
    x, cap = Tensor(rnd(3, 4, 3, 8, 8)), Tensor(rnd(3, 6, 32, seed=1))
    t, mask = Tensor(np.array([3, 400, 999], np.int32)), Tensor(caption_masks(6))

    class WithMask(nn.Cell):  # the keyword argument as a positional one
        def __init__(self, m):
            super().__init__()
            self.m = m

        def construct(self, x, t, cap, mask):
            return self.m(x, t, cap, encoder_attention_mask=mask)
    check_compiled(WithMask(model), x, t, cap, mask)     # without a mask (the sampling call): 09_latte, jit


def test_latte_joint_images_compiled():
    "use_image_num=1: two video frames plus one image, with a caption (and mask) per image."
    set_seed(0)
    model = LatteT2V(**tiny_latte_config()).set_train(False)
    x, cap = Tensor(rnd(2, 4, 3, 8, 8)), Tensor(rnd(2, 2, 6, 32, seed=1))
    t, mask = Tensor(np.array([3, 400], np.int32)), Tensor(caption_masks(6)[1:].reshape(2, 1, 6).repeat(2, 1))

    class Joint(nn.Cell):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def construct(self, x, t, cap, mask):
            return self.m(x, t, cap, encoder_attention_mask=mask, use_image_num=1)
    check_compiled(Joint(model), x, t, cap, mask, modes=("jit",))


def test_t5_compiled():
    set_seed(0)
    enc = T5Encoder(tiny_t5_config(num_layers=3)).set_train(False)
    ids = np.random.default_rng(0).integers(3, 64, (3, 10)).astype(np.int32)
    check_compiled(enc, Tensor(ids), Tensor(caption_masks(10)), modes=("jit", "GRAPH_MODE"))   # the cheap model: both


def test_sd_vae_compiled():
    set_seed(0)
    vae = AutoencoderKL(**tiny_sd_vae_config()).set_train(False)
    img = Tensor(rnd(2, 3, 16, 16))
    check_compiled(vae, img, True, Tensor(rnd(2, 4, 8, 8, seed=3)))   # a posterior sample with given noise

    class Video(nn.Cell):  # Open-Sora's frame-wise wrapper, in micro-batches of 2 frames, posterior mean
        def __init__(self, vae):
            super().__init__()
            self.video = VideoAutoencoderKL(vae, micro_batch_size=2)

        def construct(self, x):
            return self.video.decode(self.video.encode(x, sample_posterior=False))
    check_compiled(Video(vae), Tensor(rnd(1, 3, 3, 16, 16)), modes=("jit",))


def test_causalvae_compiled():
    set_seed(0)
    vae = CausalVAEModel(**tiny_causalvae_config()).set_train(False)
    clip = Tensor(rnd(1, 3, 5, 16, 24))      # 5 frames -> 2 latent frames of 2x3
    eager = check_compiled(vae, clip, False, first=lambda out: out[0])
    assert eager.shape == (1, 3, 5, 16, 24)


def test_causalvae_tiling_refuses_to_compile():
    vae = CausalVAEModel(**tiny_causalvae_config()).set_train(False)
    vae.enable_tiling()
    with pytest.raises(ValueError, match="CausalVAE tiling .* cannot run inside a compiled graph"):
        ms.jit(vae)(Tensor(rnd(1, 3, 5, 16, 16)), False)


# ---- one training step ------------------------------------------------------------------------------------------

class DiffusionTrainStep(nn.Cell):
    "IDDPM's hybrid loss on `model`, its gradients by `value_and_grad`, and an AdamW update."
    def __init__(self, model, caption_kwargs):
        super().__init__()
        self.model, self.caption_kwargs = model, caption_kwargs
        self.diffusion = IDDPM(timestep_respacing="")
        self.optimizer = nn.AdamWeightDecay(model.trainable_params(), learning_rate=1e-3, weight_decay=0.01)
        self.grad_fn = ms.value_and_grad(self.loss, None, self.optimizer.parameters)

    def loss(self, x0, t, noise, caption, mask):
        kwargs = {self.caption_kwargs[0]: caption, self.caption_kwargs[1]: mask}
        return self.diffusion.training_losses(self.model, x0, t, model_kwargs=kwargs, noise=noise)["loss"].mean()

    def construct(self, x0, t, noise, caption, mask):
        loss, grads = self.grad_fn(x0, t, noise, caption, mask)
        self.optimizer(grads)
        return loss


def step_both_ways(build, compiled, *args):
    "One training step eagerly and compiled (`compiled`: 'jit' or 'GRAPH_MODE'), each from the same initial weights."
    results = []
    for mode in ("eager", compiled):
        step = build()
        loss = run_in(mode, step, *args)
        results.append((float(loss.asnumpy()), {n: p.asnumpy() for n, p in step.model.parameters_and_names()}))
    (loss0, params0), (loss, params) = results
    start = build().model
    moved = max(np.abs(params0[n] - p.asnumpy()).max() for n, p in start.parameters_and_names() if p.requires_grad)
    assert moved > 1e-4, "the step did not update the weights"
    assert abs(loss - loss0) <= TOL * abs(loss0), f"{compiled}: loss {loss} vs eager {loss0}"
    worst = max(rel(params[n], params0[n]) for n in params0)
    assert worst <= TOL, f"{compiled}: updated weights differ by {worst:.2e} (relative)"
    return loss0


def test_stdit_training_step_compiled():
    def build():
        set_seed(0)
        model = perturbed(STDiT(**tiny_stdit_config(class_dropout_prob=0.0)))
        return DiffusionTrainStep(model.set_train(True), ("y", "mask")).set_train(True)
    x0, noise = Tensor(rnd(3, 4, 4, 8, 8)), Tensor(rnd(3, 4, 4, 8, 8, seed=2))
    t = Tensor(np.array([0, 400, 999], np.int32))        # t = 0 selects the decoder likelihood term
    loss = step_both_ways(build, "GRAPH_MODE", x0, t, noise, Tensor(rnd(3, 1, 8, 32, seed=1)), Tensor(caption_masks(8)))
    assert np.isfinite(loss)


def test_latte_training_step_compiled():
    def build():
        set_seed(0)
        model = LatteT2V(**tiny_latte_config())
        return DiffusionTrainStep(model.set_train(True), ("encoder_hidden_states", "encoder_attention_mask")).set_train(True)
    x0, noise = Tensor(rnd(3, 4, 3, 8, 8)), Tensor(rnd(3, 4, 3, 8, 8, seed=2))
    t = Tensor(np.array([0, 300, 999], np.int32))
    loss = step_both_ways(build, "jit", x0, t, noise, Tensor(rnd(3, 6, 32, seed=1)), Tensor(caption_masks(6)))
    assert np.isfinite(loss)
