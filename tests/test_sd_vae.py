"""Parity of `opensora_nb.models.sd_vae` with diffusers' `AutoencoderKL` (tiny random config, fp32 CPU),
the three checkpoint layouts, and the Open-Sora video wrapper."""
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from safetensors.torch import save_file as save_torch_safetensors

from mindspore import Tensor

from opensora_nb.models.sd_vae import SCALING_FACTOR, AutoencoderKL, VideoAutoencoderKL, tiny_sd_vae_config

TINY = tiny_sd_vae_config(norm_num_groups=32)   # diffusers' keyword arguments too
TOL = 1e-5


@pytest.fixture(scope="module")
def reference():
    "A diffusers AutoencoderKL with random weights, including non-trivial GroupNorm affine parameters."
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**TINY).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:  # GroupNorms start at weight 1 / bias 0: perturb so a gamma/beta mix-up shows
                p.add_(0.1 * torch.randn_like(p))
    return ref


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory, reference):
    folder = tmp_path_factory.mktemp("sd_vae")
    reference.save_pretrained(folder)  # config.json + diffusion_pytorch_model.safetensors
    return folder


@pytest.fixture(scope="module")
def ours(diffusers_folder):
    return AutoencoderKL.from_pretrained(diffusers_folder)


def _image(seed=1, shape=(2, 3, 32, 32)):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _params(model):
    return {n: p.asnumpy() for n, p in model.parameters_and_names()}


def test_parity_with_diffusers(reference, ours):
    x = _image()
    with torch.no_grad():
        post = reference.encode(torch.from_numpy(x)).latent_dist
        dec = reference.decode(post.mean).sample.numpy()
    our_post = ours.encode(Tensor(x))
    pairs = {"mean": (our_post.mean, post.mean), "logvar": (our_post.logvar, post.logvar),
             "std": (our_post.std, post.std), "decoded": (ours.decode(our_post.mode()), torch.from_numpy(dec))}
    errs = {k: float(np.abs(a.asnumpy() - b.numpy()).max()) for k, (a, b) in pairs.items()}
    scales = {k: max(1.0, float(np.abs(b.numpy()).max())) for k, (a, b) in pairs.items()}
    print("parity max abs errors:", {k: f"{v:.2e} (output scale {scales[k]:.2f})" for k, v in errs.items()})
    # fp32: max abs error <= 1e-5 relative to the output scale (max |reference|, at least 1)
    assert all(errs[k] <= TOL * scales[k] for k in errs), (errs, scales)
    # the same noise gives the same sample; KL matches diffusers'
    noise = np.random.default_rng(2).standard_normal(post.mean.shape).astype(np.float32)
    ref_sample = (post.mean + post.std * torch.from_numpy(noise)).numpy()
    np.testing.assert_allclose(our_post.sample(noise=Tensor(noise)).asnumpy(), ref_sample, atol=TOL)
    np.testing.assert_allclose(our_post.kl().asnumpy(), post.kl().numpy(), rtol=1e-5)


def test_bin_folder_and_subfolder(tmp_path, reference, ours):
    reference.save_pretrained(tmp_path / "vae", safe_serialization=False)  # diffusion_pytorch_model.bin
    assert (tmp_path / "vae" / "diffusion_pytorch_model.bin").is_file()
    loaded = AutoencoderKL.from_pretrained(tmp_path, subfolder="vae")
    a, b = _params(loaded), _params(ours)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _old_attention_names(sd):
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    return {re.sub(r"\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.", lambda m: f".attentions.0.{names[m[1]]}.", k): v
            for k, v in sd.items()}


def test_old_attention_names(tmp_path, reference, ours):
    sd = _old_attention_names(reference.state_dict())
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in sd
    save_torch_safetensors({k: v.contiguous() for k, v in sd.items()}, tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(dict(reference.config)))
    a, b = _params(AutoencoderKL.from_pretrained(tmp_path)), _params(ours)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _ldm_names(sd, num_blocks=2):
    "Write a diffusers VAE state dict in the original LDM / SD layout (what vae-ft-mse-840000-ema-pruned holds)."
    att = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in sd.items():
        n = k.replace(".conv_shortcut.", ".nin_shortcut.").replace(".conv_norm_out.", ".norm_out.")
        n = re.sub(r"\.mid_block\.resnets\.(\d)\.", lambda m: f".mid.block_{int(m[1]) + 1}.", n)
        m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", n)
        if m:
            n = f"{m[1]}.mid.attn_1.{att[m[2]]}.{m[3]}"
            if m[3] == "weight" and v.ndim == 2:
                v = v[:, :, None, None]  # linear -> 1x1 conv
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", n)
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", n)
        n = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{num_blocks - 1 - int(m[1])}.block.", n)
        n = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                   lambda m: f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.", n)
        out[n] = v.contiguous()
    return out


@pytest.mark.parametrize("prefix", ["", "first_stage_model."])
def test_single_file_sd_layout(tmp_path, reference, ours, prefix):
    sd = {prefix + k: v for k, v in _ldm_names(reference.state_dict()).items()}
    assert prefix + "encoder.mid.attn_1.q.weight" in sd and prefix + "decoder.up.0.block.0.nin_shortcut.weight" in sd
    if prefix:  # a whole SD checkpoint also holds the UNet and the text encoder
        sd["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4)
        sd["cond_stage_model.transformer.x"] = torch.zeros(2)
    save_torch_safetensors(sd, tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors")
    loaded = AutoencoderKL.from_pretrained(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors", config=TINY)
    a, b = _params(loaded), _params(ours)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_other_model_file_is_refused(tmp_path, reference):
    sd = {k: v.contiguous() for k, v in reference.state_dict().items() if not k.startswith("decoder.")}
    sd["time_embedding.linear_1.weight"] = torch.zeros(8, 4)
    save_torch_safetensors(sd, tmp_path / "other.safetensors")
    with pytest.raises(ValueError) as e:
        AutoencoderKL.from_pretrained(tmp_path / "other.safetensors", config=TINY)
    msg = str(e.value)
    assert "time_embedding.linear_1.weight" in msg and "decoder." in msg
    # a folder without weights, or without config.json
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        AutoencoderKL.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **TINY}))
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        AutoencoderKL.from_pretrained(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="UNet2DModel"):
        AutoencoderKL.from_pretrained(tmp_path / "empty")


def test_video_wrapper(reference, diffusers_folder, ours):
    vid = VideoAutoencoderKL(from_pretrained=str(diffusers_folder))
    assert vid.out_channels == 4 and vid.patch_size == (1, 8, 8)
    clip = _image(3, (2, 3, 2, 16, 16))  # (B, C, T, H, W)
    z = vid.encode(clip_t := Tensor(clip), sample_posterior=False)
    assert z.shape == (2, 4, 2, 8, 8)  # tiny VAE downsamples by 2
    frames = torch.from_numpy(clip).permute(0, 2, 1, 3, 4).reshape(4, 3, 16, 16)
    with torch.no_grad():
        ref_mean = reference.encode(frames).latent_dist.mean
        ref_dec = reference.decode(ref_mean).sample
    ref_z = (ref_mean * SCALING_FACTOR).reshape(2, 2, 4, 8, 8).permute(0, 2, 1, 3, 4).numpy()
    np.testing.assert_allclose(z.asnumpy(), ref_z, atol=TOL)
    out = vid.decode(z)
    assert out.shape == (2, 3, 2, 16, 16)
    ref_clip = ref_dec.reshape(2, 2, 3, 16, 16).permute(0, 2, 1, 3, 4).numpy()
    np.testing.assert_allclose(out.asnumpy(), ref_clip, atol=TOL * max(1.0, np.abs(ref_clip).max()))
    # the default is a posterior sample (as Open-Sora): z = 0.18215 * (mean + std * eps)
    zs = vid.encode(clip_t, generator=np.random.default_rng(4))
    eps = np.random.default_rng(4).standard_normal((4, 4, 8, 8)).astype(np.float32)
    post = ours.encode(Tensor(clip.transpose(0, 2, 1, 3, 4).reshape(4, 3, 16, 16)))
    expect = (post.mean.asnumpy() + post.std.asnumpy() * eps) * SCALING_FACTOR
    np.testing.assert_allclose(zs.asnumpy(), expect.reshape(2, 2, 4, 8, 8).transpose(0, 2, 1, 3, 4), atol=TOL)
    assert vid.get_latent_size([16, 256, 256]) == [16, 32, 32]
    with pytest.raises(ValueError, match="divisible"):
        vid.get_latent_size([16, 250, 256])
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        vid.encode(Tensor(clip[0]))


def test_micro_batches_equal_whole_batch(ours):
    whole, micro = VideoAutoencoderKL(ours), VideoAutoencoderKL(ours, micro_batch_size=4)
    clip = Tensor(_image(5, (2, 3, 3, 16, 16)))  # 6 frames: micro-batches of 4 leave a remainder of 2
    za = whole.encode(clip, generator=np.random.default_rng(0))
    zb = micro.encode(clip, generator=np.random.default_rng(0))
    np.testing.assert_allclose(za.asnumpy(), zb.asnumpy(), atol=1e-6)
    # batched kernels round differently at other batch sizes: 1.2e-6 at output scale 1.7 measured (old code: 1.4e-6)
    np.testing.assert_allclose(whole.decode(za).asnumpy(), micro.decode(za).asnumpy(), atol=3e-6)


def test_bad_micro_batch_and_missing_path(tmp_path, ours):
    with pytest.raises(ValueError, match="micro_batch_size"):
        VideoAutoencoderKL(ours, micro_batch_size=0)
    with pytest.raises(ValueError, match="from_pretrained"):
        VideoAutoencoderKL()
    with pytest.raises(FileNotFoundError, match="sd-vae-ft-ema"):
        VideoAutoencoderKL(str(tmp_path / "nowhere"))
