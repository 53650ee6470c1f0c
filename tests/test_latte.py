"""LatteT2V (Open-Sora-Plan v1.0.0): parity with diffusers' Latte parts, shapes, mask semantics, folder round trip.

The torch reference is diffusers' `LatteTransformer3DModel` (the same architecture as Open-Sora-Plan's
`LatteT2V`: PatchEmbed, BasicTransformerBlock with `norm_type="ada_norm_single"`, AdaLayerNormSingle,
PixArtAlphaTextProjection) loaded with *our* weights under the original names. Where Open-Sora-Plan differs
from it (the temporal table's interpolation scale, the caption mask turned into a per-frame -10000 bias),
the test sets the reference up the Open-Sora-Plan way itself.
"""
import json

import numpy as np
import pytest
import mindspore as ms

from opensora_nb.models.latte import (LatteT2V, LatteT2V_XL_122, BasicTransformerBlock, attention_mask_to_bias,
                                      latte_torch_state_dict, load_latte_t2v_init, latte_versions_in,
                                      latte_caption_embeddings, tiny_latte_config)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

def tiny(**kw):
    return LatteT2V(**tiny_latte_config(**kw))


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_reference(model: LatteT2V):
    "diffusers' LatteTransformer3DModel holding our model's weights (strict load: the names must agree)."
    from diffusers import LatteTransformer3DModel
    c = model.config
    ref = LatteTransformer3DModel(
        num_attention_heads=c.num_attention_heads, attention_head_dim=c.attention_head_dim,
        in_channels=c.in_channels, out_channels=c.out_channels, num_layers=c.num_layers,
        cross_attention_dim=c.cross_attention_dim, attention_bias=c.attention_bias, sample_size=c.sample_size[0],
        patch_size=c.patch_size, activation_fn=c.activation_fn, num_embeds_ada_norm=c.num_embeds_ada_norm,
        norm_type=c.norm_type, norm_elementwise_affine=c.norm_elementwise_affine, norm_eps=c.norm_eps,
        caption_channels=c.caption_channels, video_length=c.video_length).eval()
    sd = {k: torch.from_numpy(v) for k, v in latte_torch_state_dict(model).items()}
    y = sd.pop("caption_projection.y_embedding")   # Open-Sora-Plan's (unused) persistent buffer
    assert y.shape == (120, c.caption_channels)
    ref.load_state_dict(sd, strict=True)
    # Open-Sora-Plan's temporal table: positions t / max(video_length // 5, 1), sin half then cos half
    D = c.num_attention_heads * c.attention_head_dim
    pos = np.arange(c.video_length, dtype=np.float32) / np.float32(max(c.video_length // 5, 1))
    omega = 1.0 / 10000 ** (np.arange(D // 2, dtype=np.float64) / (D / 2))
    ang = pos[:, None].astype(np.float64) * omega[None]
    ref.temp_pos_embed = torch.from_numpy(np.concatenate([np.sin(ang), np.cos(ang)], 1)[None].astype(np.float32))
    return ref


def per_frame_bias(mask, frames):
    "Open-Sora-Plan's conversion, written for the reference: (1 - m) * -10000, one row per frame."
    b = (1 - torch.as_tensor(mask, dtype=torch.float32)) * -10000.0
    return b[:, None].repeat_interleave(frames, dim=0)


def max_err(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.mark.parametrize("video_length,mask", [(3, False), (10, True)])
def test_parity_with_diffusers_latte(video_length, mask):
    model = tiny(video_length=video_length)
    ref = torch_reference(model)
    B, T, L = 2, video_length, 6
    x, cap = rand(B, 4, T, 8, 8, seed=1), rand(B, L, 32, seed=2)
    t = np.array([3, 871])
    m = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]) if mask else None
    ours = model(ms.Tensor(x), ms.Tensor(t), ms.Tensor(cap), encoder_attention_mask=m).asnumpy()
    with torch.no_grad():
        theirs = ref(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(cap),
                     encoder_attention_mask=None if m is None else per_frame_bias(m, T),
                     return_dict=False)[0].numpy()
    err = max_err(ours, theirs)
    print(f"LatteT2V parity vs diffusers (video_length={video_length}, mask={mask}): max abs err {err:.2e}, "
          f"output scale {np.abs(theirs).max():.2f}")
    assert ours.shape == theirs.shape == (B, 8, T, 8, 8)
    assert err <= 1e-5 * max(1.0, float(np.abs(theirs).max()))


def test_spatial_block_parity_with_diffusers_basic_transformer_block():
    from diffusers.models.attention import BasicTransformerBlock as RefBlock
    D, H, Dh = 32, 4, 8
    ours = BasicTransformerBlock(D, H, Dh, cross_attention_dim=24, activation_fn="gelu-approximate",
                                 attention_bias=True, norm_elementwise_affine=False, norm_eps=1e-6)
    ref = RefBlock(D, H, Dh, cross_attention_dim=24, activation_fn="gelu-approximate", attention_bias=True,
                   norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6).eval()
    ref.load_state_dict({n: torch.from_numpy(p.asnumpy()) for n, p in ours.parameters_and_names()}, strict=True)
    x, ctx, t = rand(3, 10, D, seed=3), rand(3, 7, 24, seed=4), rand(3, 6 * D, seed=5)
    m = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6])
    bias = attention_mask_to_bias(m)[:, None]
    got = ours(ms.Tensor(x), None, ms.Tensor(ctx), bias, ms.Tensor(t)).asnumpy()
    with torch.no_grad():
        want = ref(torch.from_numpy(x), encoder_hidden_states=torch.from_numpy(ctx),
                   encoder_attention_mask=torch.from_numpy(bias.asnumpy()), timestep=torch.from_numpy(t)).numpy()
    err = max_err(got, want)
    print(f"spatial block parity vs diffusers BasicTransformerBlock(ada_norm_single): max abs err {err:.2e}")
    assert err <= 1e-5 * max(1.0, float(np.abs(want).max()))


def test_shapes_video_and_joint_image_video():
    model = tiny()
    out = model(ms.Tensor(rand(2, 4, 3, 8, 8)), ms.Tensor([1, 2]), ms.Tensor(rand(2, 5, 32)))
    assert out.shape == (2, 8, 3, 8, 8)
    # 3 video frames + 2 images; 3-D caption mask (video caption + one per image)
    out = model(ms.Tensor(rand(2, 4, 5, 8, 8)), ms.Tensor([1, 2]), ms.Tensor(rand(2, 3, 5, 32)),
                encoder_attention_mask=np.ones((2, 3, 5)), use_image_num=2)
    assert out.shape == (2, 8, 5, 8, 8)
    # a latent of another size than sample_size: the 2-D table is recomputed
    out = model(ms.Tensor(rand(1, 4, 3, 12, 8)), ms.Tensor([5]), ms.Tensor(rand(1, 5, 32)))
    assert out.shape == (1, 8, 3, 12, 8)


def test_joint_image_video_layout_equals_separate_runs():
    """use_image_num=n: the video frames come out as a video-only run with the video caption, each image as a
    1-frame run with its own caption and no temporal attention (images only meet the spatial blocks)."""
    model = tiny()
    x, cap = rand(2, 4, 5, 8, 8, seed=7), rand(2, 3, 5, 32, seed=8)
    mask = np.array([[[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]],
                     [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]])
    t = ms.Tensor([50, 700])
    joint = model(ms.Tensor(x), t, ms.Tensor(cap), encoder_attention_mask=mask, use_image_num=2).asnumpy()
    video = model(ms.Tensor(x[:, :, :3]), t, ms.Tensor(cap[:, 0]), encoder_attention_mask=mask[:, 0]).asnumpy()
    assert max_err(joint[:, :, :3], video) < 1e-5
    for i in (1, 2):
        img = model(ms.Tensor(x[:, :, 2 + i:3 + i]), t, ms.Tensor(cap[:, i]), encoder_attention_mask=mask[:, i],
                    enable_temporal_attentions=False).asnumpy()
        assert max_err(joint[:, :, 2 + i:3 + i], img) < 1e-5


def test_mask_is_additive_minus_10000():
    np.testing.assert_array_equal(attention_mask_to_bias(np.array([[1, 0, 1]])).asnumpy(),
                                  np.array([[0, -10000, 0]], np.float32))
    model = tiny()
    x, cap, t = ms.Tensor(rand(2, 4, 3, 8, 8)), rand(2, 5, 32), ms.Tensor([4, 400])
    none = model(x, t, ms.Tensor(cap)).asnumpy()
    ones = model(x, t, ms.Tensor(cap), encoder_attention_mask=np.ones((2, 5))).asnumpy()
    assert max_err(none, ones) < 1e-5
    m = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    c2 = cap.copy(); c2[0, 2:] = 30 * rand(3, 32, seed=9)
    a = model(x, t, ms.Tensor(cap), encoder_attention_mask=m).asnumpy()
    b = model(x, t, ms.Tensor(c2), encoder_attention_mask=m).asnumpy()
    assert max_err(a, b) < 1e-5
    # -10000, not -inf: a fully masked caption still gives finite output (uniform weights over the tokens)
    assert np.isfinite(model(x, t, ms.Tensor(cap), encoder_attention_mask=np.zeros((2, 5))).asnumpy()).all()


def test_released_folder_round_trip(tmp_path):
    from safetensors.numpy import save_file
    model = tiny(video_length=5)
    # write the hub layout ourselves: diffusers config + safetensors under the torch names
    folder = tmp_path / "Open-Sora-Plan-v1.0.0" / "17x256x256"
    folder.mkdir(parents=True)
    cfg = dict(model.config, _class_name="LatteT2V", _diffusers_version="0.27.2", sample_size=[8, 8])
    (folder / "config.json").write_text(json.dumps(cfg))
    sd = latte_torch_state_dict(model)
    assert "caption_projection.y_embedding" in sd and "temp_pos_embed" not in sd and "pos_embed.pos_embed" not in sd
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "Open-Sora-Plan-v1.0.0" / "vae").mkdir()
    back = LatteT2V.from_pretrained(tmp_path / "Open-Sora-Plan-v1.0.0", subfolder="17x256x256")
    a, b = dict(model.parameters_and_names()), dict(back.parameters_and_names())
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k].asnumpy(), b[k].asnumpy())
    assert back.config.video_length == 5 and back.load_report.ok
    # half precision, as the original samples (torch_dtype=torch.float16)
    half = LatteT2V.from_pretrained(tmp_path / "Open-Sora-Plan-v1.0.0", subfolder="17x256x256", dtype="fp16")
    assert half.dtype == ms.float16
    x, cap, t = ms.Tensor(rand(1, 4, 5, 8, 8)), ms.Tensor(rand(1, 5, 32)), ms.Tensor([600])
    full, low = back(x, t, cap).asnumpy(), half(x, t, cap)
    assert low.dtype == ms.float16 and max_err(full, low.asnumpy()) < 2e-2 * np.abs(full).max()
    assert latte_versions_in(tmp_path / "Open-Sora-Plan-v1.0.0") == ["17x256x256"]
    # version-folder errors name the versions present
    with pytest.raises(ValueError, match="17x256x256"):
        LatteT2V.from_pretrained(tmp_path / "Open-Sora-Plan-v1.0.0", subfolder="65x512x512")
    with pytest.raises(ValueError, match="subfolder"):
        LatteT2V.from_pretrained(tmp_path / "Open-Sora-Plan-v1.0.0")
    with pytest.raises(FileNotFoundError, match="Open-Sora-Plan-v1.0.0"):
        LatteT2V.from_pretrained(tmp_path / "nowhere", subfolder="17x256x256")
    # a checkpoint with a missing tensor is refused by name
    sd.pop("proj_out.bias")
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match="proj_out.bias"):
        LatteT2V.from_pretrained(tmp_path / "Open-Sora-Plan-v1.0.0", subfolder="17x256x256")


def test_t2v_pt_initialisation(tmp_path):
    "Latte's t2v.pt: torch.load(...)['model'], strict=False, position tables recomputed for the new size."
    src = tiny(sample_size=16, video_length=16)
    sd = {k: torch.from_numpy(v) for k, v in latte_torch_state_dict(src).items()}
    sd["temp_pos_embed"] = torch.zeros(1, 16, 16)  # a buffer some checkpoints carry: ignored
    torch.save({"ema": {}, "model": sd, "opt": {"step": 1}}, tmp_path / "t2v.pt")
    dst = tiny()
    rep = load_latte_t2v_init(dst, tmp_path / "t2v.pt")
    assert rep.missing == [] and rep.unexpected == [] and rep.ignored == ["temp_pos_embed"]
    for (_, p), (_, q) in zip(src.parameters_and_names(), dst.parameters_and_names()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy())
    # a wider model does not fit: refused, like torch's load_state_dict
    with pytest.raises(ValueError, match="mis-shaped"):
        load_latte_t2v_init(tiny(attention_head_dim=4), tmp_path / "t2v.pt")
    with pytest.raises(FileNotFoundError, match="t2v.pt"):
        load_latte_t2v_init(dst, tmp_path / "missing.pt")


def test_pipeline_caption_trimming():
    emb, neg = ms.Tensor(rand(1, 8, 4)), ms.Tensor(rand(1, 8, 4, seed=1))
    c, u = latte_caption_embeddings(emb, np.array([[1, 1, 1, 1, 1, 0, 0, 0]]), neg)
    assert c.shape == (1, 5, 4) and u.shape == (1, 5, 4)
    np.testing.assert_array_equal(u.asnumpy(), neg.asnumpy()[:, :5])
    c, u = latte_caption_embeddings(ms.Tensor(np.ones((2, 3, 2), np.float32)), np.array([[1, 0, 0], [1, 1, 0]]))
    np.testing.assert_array_equal(c.asnumpy()[..., 0], [[1, 0, 0], [1, 1, 0]])


def test_bad_config_and_input_errors():
    with pytest.raises(ValueError, match="ada_norm_single"):
        tiny(norm_type="ada_norm_zero")
    with pytest.raises(ValueError, match="allowed"):
        tiny(activation_fn="swish")
    model = tiny()
    with pytest.raises(ValueError, match="video_length=3"):
        model(ms.Tensor(rand(1, 4, 4, 8, 8)), ms.Tensor([1]), ms.Tensor(rand(1, 5, 32)))
    with pytest.raises(ValueError, match="in_channels=4"):
        model(ms.Tensor(rand(1, 3, 3, 8, 8)), ms.Tensor([1]), ms.Tensor(rand(1, 5, 32)))


def test_xl_122_config():
    "LatteT2V-XL/122 as released: names/shapes checked on a 1-layer slice (the full model is 1.05e9 parameters)."
    m = LatteT2V_XL_122(num_layers=1, sample_size=32, video_length=5)
    shapes = {n: tuple(p.shape) for n, p in m.parameters_and_names()}
    assert shapes["pos_embed.proj.weight"] == (1152, 4, 2, 2)
    assert shapes["transformer_blocks.0.attn2.to_k.weight"] == (1152, 1152)
    assert shapes["transformer_blocks.0.ff.net.0.proj.weight"] == (4608, 1152)
    assert shapes["temporal_transformer_blocks.0.scale_shift_table"] == (6, 1152)
    assert shapes["adaln_single.linear.weight"] == (6912, 1152)
    assert shapes["caption_projection.linear_1.weight"] == (1152, 4096)
    assert shapes["caption_projection.y_embedding"] == (120, 4096)
    assert shapes["proj_out.weight"] == (32, 1152)
    assert not any("norm" in n for n in shapes)   # norm_elementwise_affine=False
