"""CausalVAE 4x8x8 (opensora_nb.models.causalvae): shapes, causality, tiling, released-folder round trip,
2-D -> 3-D inflation checked against diffusers' AutoencoderKL, and block parity against torch written here."""
import json
import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, Tensor

from opensora_nb.models.causalvae import (
    CAUSALVAE_4x8x8, AttnBlock3D, CausalConv3d, CausalVAEModel, ResnetBlock3D, SpatialDownsample2x,
    SpatialUpsample2x, TimeDownsample2x, TimeUpsample2x, inflate_vae2d_to_vae3d, tiny_causalvae_config)


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    ms.set_seed(0)
    return CausalVAEModel(**tiny_causalvae_config())


def test_shapes(tiny):
    post = tiny.encode(Tensor(rnd(1, 3, 9, 16, 24)))
    assert post.mean.shape == (1, 4, 3, 2, 3) and post.sample().shape == (1, 4, 3, 2, 3)
    assert post.kl().shape == (1, 3)  # summed over axes 1-3, as the original
    assert tiny.decode(post.mode()).shape == (1, 3, 9, 16, 24)
    assert tiny.encode(Tensor(rnd(2, 3, 1, 16, 16))).mean.shape == (2, 4, 1, 2, 2)  # an image: one latent frame
    assert tiny.decode(Tensor(rnd(1, 4, 2, 2, 2))).shape == (1, 3, 5, 16, 16)


@pytest.mark.parametrize("frames, near", [(16, "13 or 17"), (64, "61 or 65"), (2, "1 or 5")])
def test_bad_frame_count(tiny, frames, near):
    with pytest.raises(ValueError, match=f"got {frames}. Nearest valid counts: {near}"):
        tiny.encode(Tensor(rnd(1, 3, frames, 16, 16)))


def test_bad_shapes_and_names(tiny):
    with pytest.raises(ValueError, match=r"video must be \(batch, 3, frames"):
        tiny.encode(Tensor(rnd(1, 4, 5, 16, 16)))
    with pytest.raises(ValueError, match="unknown CausalVAE block 'ResBlock9D'"):
        CausalVAEModel(**tiny_causalvae_config(encoder_mid_resnet="ResBlock9D"))


def _time_local(model):
    "The real wiring minus the parts that pool over time: GroupNorm -> Identity (attention is AttnBlock3DFix)."
    for _, cell in list(model.cells_and_names()):
        for name, child in list(cell.name_cells().items()):
            if isinstance(child, nn.GroupNorm): setattr(cell, name, nn.Identity())
    return model


def test_causal_skeleton():
    "With GroupNorm taken out, frame k reaches no latent before its group ceil(k/4) (and decoding likewise)."
    m = _time_local(CausalVAEModel(**tiny_causalvae_config(encoder_attention="AttnBlock3DFix",
                                                            decoder_attention="AttnBlock3DFix")))
    x = rnd(1, 3, 13, 8, 8)
    base = m.encode(Tensor(x)).mean.asnumpy()
    for k in (1, 5, 12):
        x2 = x.copy(); x2[:, :, k] += 1.0
        d = np.abs(m.encode(Tensor(x2)).mean.asnumpy() - base).max(axis=(0, 1, 3, 4))
        g = math.ceil(k / 4)
        assert d[:g].max() == 0.0 and d[g] > 0, (k, d)
    z = rnd(1, 4, 4, 1, 1)
    base = m.decode(Tensor(z)).asnumpy()
    for k in (1, 3):
        z2 = z.copy(); z2[:, :, k] += 1.0
        d = np.abs(m.decode(Tensor(z2)).asnumpy() - base).max(axis=(0, 1, 3, 4))
        # torch's linear time upsampling looks half a frame ahead: latent k first shows at frame max(1, 4k-6)
        first = max(1, 4 * k - 6)
        assert d[:first].max() == 0.0 and d[first] > 0, (k, d)


def test_released_architecture_is_not_strictly_causal(tiny):
    "GroupNorm statistics and AttnBlock3D's reshape pool over all frames: the last frame nudges latent frame 0."
    x = rnd(1, 3, 9, 8, 8); x2 = x.copy(); x2[:, :, -1] += 1.0
    d = np.abs(tiny.encode(Tensor(x2)).mean.asnumpy() - tiny.encode(Tensor(x)).mean.asnumpy())
    assert d[:, :, 0].max() > 0


def _local_encode(x):  # local in space, causal in time: every 4th frame, 8x8 mean
    b, c, t, h, w = x.shape
    m = x[:, :, ::4].reshape(b, c, -1, h // 8, 8, w // 8, 8).mean(axis=(4, 6))
    return ms.ops.concat([m, m, m[:, :2]], axis=1)


def _local_decode(z):  # frame 0, then every latent frame 4 times; 8x8 nearest
    up = ms.ops.repeat_interleave(ms.ops.repeat_interleave(z[:, :3], 8, axis=3), 8, axis=4)
    return ms.ops.concat([up[:, :, :1], ms.ops.repeat_interleave(up[:, :, 1:], 4, axis=2)], axis=2)


def test_tiling_machinery_is_exact():
    "Crops, blends and time chunks line up: with local per-tile functions, tiled == untiled everywhere."
    m = CausalVAEModel(**tiny_causalvae_config())
    m._encode_tile, m._decode_tile = _local_encode, _local_decode
    m.tile_sample_min_size, m.tile_latent_min_size, m.tile_sample_min_size_t, m.tile_latent_min_size_t = 64, 8, 9, 3
    x = Tensor(rnd(1, 3, 21, 136, 72))
    full = m.encode(x).mean.asnumpy(); m.enable_tiling(); tiled = m.encode(x).mean.asnumpy()
    np.testing.assert_allclose(tiled, full, atol=1e-5)
    z = Tensor(rnd(1, 4, 6, 17, 9))
    m.disable_tiling(); full = m.decode(z).asnumpy(); m.enable_tiling(); tiled = m.decode(z).asnumpy()
    assert tiled.shape == (1, 3, 21, 136, 72)
    np.testing.assert_allclose(tiled, full, atol=1e-5)


def test_tiled_real_network(tiny):
    """Real tiny network through the tiled path (16-px tiles, overlap 0.5: 2x2 tiles; time chunks of 5 frames / 2
    latents): same shapes as untiled, finite values. Tiles see less context (receptive field, per-tile GroupNorm/attention
    statistics), so values only approximate the untiled ones, as in the original; exactness of the tiling itself is
    `test_tiling_machinery_is_exact`."""
    tiny.tile_overlap_factor = 0.5
    tiny.tile_sample_min_size, tiny.tile_latent_min_size, tiny.tile_sample_min_size_t, tiny.tile_latent_min_size_t = 16, 2, 5, 2
    try:
        x = Tensor(rnd(1, 3, 9, 16, 16, seed=1))
        full = tiny.encode(x).mean.asnumpy()
        tiny.enable_tiling(); tiled = tiny.encode(x).mean.asnumpy()
        assert tiled.shape == full.shape == (1, 4, 3, 2, 2) and np.isfinite(tiled).all()
        dec = tiny.decode(Tensor(tiled)).asnumpy()
        assert dec.shape == (1, 3, 9, 16, 16) and np.isfinite(dec).all()
    finally:
        tiny.disable_tiling(); tiny.tile_overlap_factor = 0.25
        tiny.tile_sample_min_size, tiny.tile_latent_min_size, tiny.tile_sample_min_size_t, tiny.tile_latent_min_size_t = 256, 32, 17, 5


def test_released_folder_round_trip(tiny, tmp_path):
    "config.json + diffusion_pytorch_model.safetensors with the original names -> from_pretrained -> same parameters."
    from safetensors.numpy import save_file
    sd = tiny.torch_state_dict()
    for name in ("encoder.conv_in.conv.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.conv.weight",
                 "encoder.mid.attn_1.q.conv.weight", "encoder.norm_out.bias", "decoder.up.3.upsample.conv.conv.bias",
                 "decoder.up.1.block.1.conv2.conv.weight", "quant_conv.conv.weight", "post_quant_conv.conv.bias"):
        assert name in sd, name
    assert not any("gamma" in k or "beta" in k for k in sd)
    cfg = {"_class_name": "CausalVAEModel", "_diffusers_version": "0.27.2", **tiny_causalvae_config()}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({**sd, "loss.discriminator.main.0.weight": np.zeros((2, 3), np.float32)},
              str(tmp_path / "diffusion_pytorch_model.safetensors"))
    m = CausalVAEModel.from_pretrained(tmp_path)
    got = m.torch_state_dict()
    assert sorted(got) == sorted(sd)
    for k, v in sd.items(): np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert m.load_report.ignored == ["loss.discriminator.main.0.weight"]
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="Open-Sora-Plan-v1.0.0"):
        CausalVAEModel.from_pretrained(tmp_path)


def test_released_config_parameter_count():
    m = CausalVAEModel(**CAUSALVAE_4x8x8)
    assert sum(int(np.prod(p.shape)) for p in m.get_parameters()) == 229_169_895  # hidden 128, [1,2,4,4], 2 resnets


# ---------------- torch references (written here from the original's code) ----------------
torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a): return torch.from_numpy(np.asarray(a))


def _ref_causal_conv(x, w, b, pad_hw):
    kt = w.shape[2]
    x = torch.cat([x[:, :, :1].repeat(1, 1, kt - 1, 1, 1), x], dim=2)
    return F.conv3d(x, w, b, padding=(0, pad_hw, pad_hw))


def _ref_attn3d(x, p):  # the original AttnBlock3D, reshape quirk included
    h_ = F.group_norm(x, 32, p["norm.weight"], p["norm.bias"], eps=1e-6)
    q, k, v = (_ref_causal_conv(h_, p[f"{n}.conv.weight"], p[f"{n}.conv.bias"], 0) for n in "qkv")
    b, c, t, h, w = q.shape
    q = q.reshape(b * t, c, h * w).permute(0, 2, 1)
    k = k.reshape(b * t, c, h * w)
    w_ = torch.softmax(torch.bmm(q, k) * (int(c) ** -0.5), dim=2)
    v = v.reshape(b * t, c, h * w)
    h_ = torch.bmm(v, w_.permute(0, 2, 1)).reshape(b, c, t, h, w)
    return x + _ref_causal_conv(h_, p["proj_out.conv.weight"], p["proj_out.conv.bias"], 0)


def _ref_resnet3d(x, p):
    h = F.silu(F.group_norm(x, 32, p["norm1.weight"], p["norm1.bias"], eps=1e-6))
    h = _ref_causal_conv(h, p["conv1.conv.weight"], p["conv1.conv.bias"], 1)
    h = F.silu(F.group_norm(h, 32, p["norm2.weight"], p["norm2.bias"], eps=1e-6))
    h = _ref_causal_conv(h, p["conv2.conv.weight"], p["conv2.conv.bias"], 1)
    if "nin_shortcut.conv.weight" in p: x = _ref_causal_conv(x, p["nin_shortcut.conv.weight"], p["nin_shortcut.conv.bias"], 0)
    return x + h


def _params(cell):
    from opensora_nb.models.causalvae import torch_name
    return {torch_name(n): _t(p.asnumpy()) for n, p in cell.parameters_and_names()}


def _close(ours, ref, tol=1e-5):
    ref = ref.detach().numpy()
    err = np.abs(ours.asnumpy() - ref).max() / max(np.abs(ref).max(), 1e-6)
    assert err <= tol, err


def test_blocks_match_torch_reference():
    x = rnd(2, 64, 5, 6, 7)
    conv = CausalConv3d(64, 32, 3, padding=1)
    p = _params(conv)
    _close(conv(Tensor(x)), _ref_causal_conv(_t(x), p["conv.weight"], p["conv.bias"], 1))
    att = AttnBlock3D(64)
    _close(att(Tensor(x)), _ref_attn3d(_t(x), _params(att)))
    res = ResnetBlock3D(in_channels=64, out_channels=32, dropout=0.0)
    _close(res(Tensor(x)), _ref_resnet3d(_t(x), _params(res)))
    down = SpatialDownsample2x(64, 64); p = _params(down)
    _close(down(Tensor(x)), F.conv3d(F.pad(_t(x), (0, 1, 0, 1, 0, 0)), p["conv.conv.weight"], p["conv.conv.bias"], stride=(1, 2, 2)))
    up = SpatialUpsample2x(64, 64); p = _params(up)
    ref = F.interpolate(_t(x).reshape(2, 64 * 5, 6, 7), scale_factor=(2, 2), mode="nearest").reshape(2, 64, 5, 12, 14)
    _close(up(Tensor(x)), F.conv3d(ref, p["conv.conv.weight"], p["conv.conv.bias"], padding=(0, 1, 1)))
    tx = _t(x)
    ref = F.avg_pool3d(torch.cat([tx[:, :, :1], tx[:, :, :1], tx], 2), (3, 1, 1), stride=(2, 1, 1))
    _close(TimeDownsample2x(64, 64)(Tensor(x)), ref)
    ref = torch.cat([tx[:, :, :1], F.interpolate(tx[:, :, 1:], scale_factor=(2, 1, 1), mode="trilinear")], 2)
    _close(TimeUpsample2x(64, 64)(Tensor(x)), ref)


# ---------------- 2-D -> 3-D inflation, checked against diffusers' AutoencoderKL ----------------

def test_inflated_vae_equals_image_vae_on_one_frame():
    "Tail-inflated from an SD-style VAE, CausalVAE on a single frame is that image VAE (encode moments and decode)."
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae2d = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32, layers_per_block=1,
                                    block_out_channels=(32, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                                    up_block_types=("UpDecoderBlock2D",) * 4).eval()
    with torch.no_grad():  # random norms and biases, so the check sees them
        for n, p in vae2d.named_parameters():
            if n.endswith("bias") or "norm" in n: p.add_(0.1 * torch.randn_like(p))
    sd = {k: v.numpy() for k, v in vae2d.state_dict().items()}
    m = CausalVAEModel(**tiny_causalvae_config())
    inflate_vae2d_to_vae3d(m, sd)
    w3 = m.encoder.conv_in.conv.weight.asnumpy()
    np.testing.assert_array_equal(w3[:, :, -1], sd["encoder.conv_in.weight"]); assert not w3[:, :, :-1].any()
    img = rnd(1, 3, 32, 32, seed=5)
    with torch.no_grad():
        moments = vae2d.quant_conv(vae2d.encoder(_t(img)))
        dec = vae2d.decode(_t(rnd(1, 4, 4, 4, seed=6))).sample
    _close(m._encode_tile(Tensor(img[:, :, None]))[:, :, 0], moments, tol=1e-4)
    _close(m.decode(Tensor(rnd(1, 4, 4, 4, seed=6)[:, :, None]))[:, :, 0], dec, tol=1e-4)
