"""STDiT (Open-Sora v1.0): parity with a torch re-implementation of the original forward, released key/shape table,
parameter count, checkpoint round trip, PixArt initialisation, dtype flow, masks, recompute (freezing and bad-input
errors are pinned in nbs/03_stdit.ipynb)."""
import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, ops

from opensora_nb.runtime import set_seed
from opensora_nb.models.stdit import (STDiT, STDiT_XL_2, STDiTBlock, count_params, load_stdit_checkpoint,
                                      load_pixart_checkpoint, load_checkpoint,
                                      STDIT_RECOMPUTED, tiny_stdit_config)

torch = pytest.importorskip("torch")
F = torch.nn.functional

TINY = tiny_stdit_config()


def _rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _perturbed(cfg=TINY, seed=0, **kw):
    "A tiny STDiT whose zero-initialised tensors (cross-attn/temporal/final projections) are made random."
    set_seed(seed)
    m = STDiT(**{**cfg, **kw})
    rng = np.random.default_rng(seed + 100)
    for n, p in m.parameters_and_names():
        if p.requires_grad and np.abs(p.asnumpy()).max() == 0:
            p.set_data(Tensor((rng.standard_normal(p.shape) * 0.05).astype(np.float32)))
    return m


# --------------------------------------------------------------------------------------------------------------
# A torch re-implementation of Open-Sora v1.0's STDiT forward, written from reading opensora/models/stdit/stdit.py
# and layers/blocks.py. The cross-attention packs the valid caption tokens of the whole batch into one sequence
# and uses a block-diagonal mask, as the original does with xformers' BlockDiagonalMask.from_seqlens([N]*B, y_lens).

def _sincos_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", np.asarray(pos, np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _sincos_2d(dim, gh, gw, scale):
    grid_h = np.arange(gh, dtype=np.float32) / scale
    grid_w = np.arange(gw, dtype=np.float32) / scale
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, gw, gh])   # w first, as in the original
    return np.concatenate([_sincos_1d(dim // 2, grid[0]), _sincos_1d(dim // 2, grid[1])], axis=1)


def _lin(x, W, name):
    return F.linear(x, W[name + ".weight"], W.get(name + ".bias"))


def _ln(x):
    return F.layer_norm(x.float(), x.shape[-1:], eps=1e-6).to(x.dtype)


def _self_attn(x, W, name, heads):
    B, N, C = x.shape
    qkv = _lin(x, W, name + ".qkv").view(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    attn = ((q * (C // heads) ** -0.5) @ k.transpose(-2, -1)).float().softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return _lin(x, W, name + ".proj")


def _packed_cross_attn(x, y_packed, y_lens, W, name, heads):
    B, N, C = x.shape
    D = C // heads
    q = _lin(x, W, name + ".q_linear").view(1, B * N, heads, D).transpose(1, 2)
    kv = _lin(y_packed, W, name + ".kv_linear").view(1, -1, 2, heads, D)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    bias = torch.full((B * N, k.shape[2]), float("-inf"))
    start = 0
    for b, n in enumerate(y_lens):
        bias[b * N:(b + 1) * N, start:start + n] = 0.0
        start += n
    out = ((q @ k.transpose(-2, -1)) * D ** -0.5 + bias).softmax(dim=-1) @ v     # (1, heads, B*N, D)
    return _lin(out.transpose(1, 2).reshape(B, N, C), W, name + ".proj")


def _torch_block(x, y, t0, y_lens, W, pre, heads, T, S, tpe):
    B, N, C = x.shape
    mods = (W[pre + "scale_shift_table"][None] + t0.reshape(B, 6, -1)).chunk(6, dim=1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
    x_m = _ln(x) * (1 + scale_msa) + shift_msa
    x_s = _self_attn(x_m.reshape(B * T, S, C), W, pre + "attn", heads).reshape(B, T * S, C)   # (B T) S C
    x = x + gate_msa * x_s
    x_t = x.reshape(B, T, S, C).permute(0, 2, 1, 3).reshape(B * S, T, C)                   # (B S) T C
    if tpe is not None:
        x_t = x_t + tpe
    x_t = _self_attn(x_t, W, pre + "attn_temp", heads)
    x_t = x_t.reshape(B, S, T, C).permute(0, 2, 1, 3).reshape(B, T * S, C)
    x = x + gate_msa * x_t
    x = x + _packed_cross_attn(x, y, y_lens, W, pre + "cross_attn", heads)
    h = _ln(x) * (1 + scale_mlp) + shift_mlp
    h = _lin(F.gelu(_lin(h, W, pre + "mlp.fc1"), approximate="tanh"), W, pre + "mlp.fc2")
    return x + gate_mlp * h


def torch_stdit(W, x, timestep, y, mask, cfg, space_scale=1.0, time_scale=1.0):
    "Open-Sora v1.0 STDiT.forward (eval mode) on numpy inputs with weights W {torch name: tensor}."
    Tn, Hn, Wn = [i // p for i, p in zip(cfg["input_size"], cfg["patch_size"])]
    C, heads, S = cfg["hidden_size"], cfg["num_heads"], Hn * Wn
    pos = torch.from_numpy(_sincos_2d(C, Hn, Wn, space_scale)).float()[None]
    tpe = torch.from_numpy(_sincos_1d(C, np.arange(Tn) / time_scale)).float()[None]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    timestep = torch.from_numpy(np.asarray(timestep)).float()
    x = F.conv3d(x, W["x_embedder.proj.weight"], W["x_embedder.proj.bias"], stride=cfg["patch_size"])
    x = x.flatten(2).transpose(1, 2)
    B = x.shape[0]
    x = (x.reshape(B, Tn, S, C) + pos).reshape(B, Tn * S, C)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = timestep[:, None] * freqs[None]
    t = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    t = _lin(F.silu(_lin(t, W, "t_embedder.mlp.0")), W, "t_embedder.mlp.2")
    t0 = _lin(F.silu(t), W, "t_block.1")
    y = _lin(F.gelu(_lin(y, W, "y_embedder.y_proj.fc1"), approximate="tanh"), W, "y_embedder.y_proj.fc2")
    if mask is not None:
        mask = torch.from_numpy(np.asarray(mask))
        if mask.shape[0] != y.shape[0]:
            mask = mask.repeat(y.shape[0] // mask.shape[0], 1)
        y = y.squeeze(1).masked_select(mask.unsqueeze(-1) != 0).view(1, -1, C)
        y_lens = mask.sum(dim=1).tolist()
    else:
        y_lens = [y.shape[2]] * y.shape[0]
        y = y.squeeze(1).view(1, -1, C)
    for i in range(cfg["depth"]):
        x = _torch_block(x, y, t0, y_lens, W, f"blocks.{i}.", heads, Tn, S, tpe if i == 0 else None)
    shift, scale = (W["final_layer.scale_shift_table"][None] + t[:, None]).chunk(2, dim=1)
    x = _lin(_ln(x) * (1 + scale) + shift, W, "final_layer.linear")
    Tp, Hp, Wp = cfg["patch_size"]
    co = x.shape[-1] // (Tp * Hp * Wp)
    x = x.reshape(B, Tn, Hn, Wn, Tp, Hp, Wp, co).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, co, Tn * Tp, Hn * Hp, Wn * Wp).numpy()


def _weights(m):
    return {n: torch.from_numpy(p.asnumpy().copy()) for n, p in m.parameters_and_names()}


# --------------------------------------------------------------------------------------------------------------
def test_parity_with_torch_reference():
    "fp32 forward == the torch re-implementation: padded masks, non-prefix mask, no mask, CFG-tiled mask, scales."
    m = _perturbed(space_scale=0.5, time_scale=2.0)
    W = _weights(m)
    B = 3
    x, y = _rnd(B, 4, 4, 8, 8, seed=1), _rnd(B, 1, 8, 32, seed=2)
    ts = np.array([3, 500, 999], np.int32)
    mask = np.array([[1] * 8, [1] * 3 + [0] * 5, [1, 0, 1, 1, 0, 0, 1, 0]], np.int32)
    cases = {"mask": mask, "none": None}
    errs = {}
    for name, mk in cases.items():
        ours = m(Tensor(x), Tensor(ts), Tensor(y), None if mk is None else Tensor(mk)).asnumpy()
        ref = torch_stdit(W, x, ts, y, mk, TINY, space_scale=0.5, time_scale=2.0)
        errs[name] = np.abs(ours - ref).max()
        assert errs[name] <= 1e-5 * max(1.0, np.abs(ref).max()), (name, errs[name])
    # classifier-free guidance batch: [x; x] with [y; y_null] and only the conditional mask (tiled)
    x2, y2, ts2 = np.concatenate([x, x]), np.concatenate([y, _rnd(B, 1, 8, 32, seed=3)]), np.concatenate([ts, ts])
    ours = m(Tensor(x2), Tensor(ts2), Tensor(y2), Tensor(mask)).asnumpy()
    ref = torch_stdit(W, x2, ts2, y2, mask, TINY, space_scale=0.5, time_scale=2.0)
    errs["cfg"] = np.abs(ours - ref).max()
    assert errs["cfg"] <= 1e-5 * max(1.0, np.abs(ref).max())
    print("STDiT parity max abs err:", {k: float(v) for k, v in errs.items()}, "output scale", float(np.abs(ref).max()))
    # the sin-cos tables are the original's
    np.testing.assert_allclose(m.pos_embed.asnumpy()[0], _sincos_2d(64, 4, 4, 0.5), atol=1e-6)
    np.testing.assert_allclose(m.pos_embed_temporal.asnumpy()[0], _sincos_1d(64, np.arange(4) / 2.0), atol=1e-6)


def test_caption_of_length_one():
    "A single caption token, with and without a mask, matches the reference (the original needs mask=None here)."
    cfg = {**TINY, "model_max_length": 1}
    m = _perturbed(cfg, seed=3)
    W = _weights(m)
    x, y, ts = _rnd(2, 4, 4, 8, 8, seed=4), _rnd(2, 1, 1, 32, seed=5), np.array([7, 70], np.int32)
    ours = m(Tensor(x), Tensor(ts), Tensor(y)).asnumpy()
    ref = torch_stdit(W, x, ts, y, None, cfg)
    assert np.abs(ours - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    masked = m(Tensor(x), Tensor(ts), Tensor(y), Tensor(np.ones((2, 1), np.int32))).asnumpy()
    np.testing.assert_allclose(masked, ours, atol=1e-6)


def test_mask_semantics_and_shapes():
    "(B, 1, 1, L) masks are squeezed like the original's; padded tokens never matter; pred_sigma=False -> C channels."
    m = _perturbed(seed=5)
    x, y, ts = Tensor(_rnd(2, 4, 4, 8, 8)), _rnd(2, 1, 8, 32, seed=1), Tensor(np.array([1, 2], np.int32))
    mask = np.array([[1, 1, 0, 0, 0, 0, 0, 0], [1] * 8], np.int32)
    ref = m(x, ts, Tensor(y), Tensor(mask))
    assert ref.shape == (2, 8, 4, 8, 8) and ref.dtype == ms.float32
    y_pad = y.copy(); y_pad[0, 0, 2:] = 1e3
    np.testing.assert_allclose(m(x, ts, Tensor(y_pad), Tensor(mask[:, None, None])).asnumpy(), ref.asnumpy(),
                               atol=1e-5)
    assert STDiT(**{**TINY, "pred_sigma": False})(x, ts, Tensor(y)).shape == (2, 4, 4, 8, 8)


def test_fp16_compute():
    "dtype='fp16': matmuls in fp16, LayerNorm/softmax fp32, output fp32 and close to the fp32 model."
    m32 = _perturbed(seed=7)
    set_seed(7)
    m16 = STDiT(**TINY, dtype="fp16")
    for (n, p), (_, q) in zip(m16.parameters_and_names(), m32.parameters_and_names()):
        p.set_data(q.data.copy())
        assert p.dtype == ms.float32        # parameters stay fp32
    x, y, ts = Tensor(_rnd(2, 4, 4, 8, 8)), Tensor(_rnd(2, 1, 8, 32, seed=1)), Tensor(np.array([5, 900], np.int32))
    mask = Tensor(np.array([[1] * 4 + [0] * 4, [1] * 8], np.int32))
    a, b = m32(x, ts, y, mask).asnumpy(), m16(x, ts, y, mask)
    assert b.dtype == ms.float32
    b = b.asnumpy()
    err = np.abs(a - b).max() / np.abs(a).max()
    assert 0 < err < 2e-2, err
    assert m16.blocks[0].attn.qkv(Tensor(_rnd(1, 3, 64))).dtype == ms.float16


def test_bf16_request_on_cpu_falls_back_to_fp32():
    m = STDiT(**TINY, dtype="bf16")
    assert m.dtype == ms.float32


def test_training_caption_dropout_uses_null_caption_and_keeps_mask():
    "class_dropout_prob=1: in training every caption becomes y_embedding, while the given mask still applies."
    m = _perturbed(seed=9, class_dropout_prob=1.0)
    x, ts = Tensor(_rnd(2, 4, 4, 8, 8)), Tensor(np.array([5, 9], np.int32))
    y = Tensor(_rnd(2, 1, 8, 32, seed=2))
    mask = Tensor(np.array([[1] * 3 + [0] * 5, [1] * 8], np.int32))
    null = ops.tile(m.y_embedder.y_embedding.value()[None, None], (2, 1, 1, 1))
    want = m(x, ts, null, mask).asnumpy()
    m.set_train(True)
    got = m(x, ts, y, mask).asnumpy()
    with pytest.raises(ValueError, match="model_max_length=8"):
        m(x, ts, Tensor(_rnd(2, 1, 9, 32)))
    trimmed = m(x[:1], ts[:1], y[:1, :, :3], mask[:1, :3]).asnumpy()   # cut to the caption: the null caption is cut too
    m.set_train(False)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(trimmed, want[:1], atol=1e-6)


def test_drop_path_only_in_training():
    m = _perturbed(seed=2, drop_path=0.5, class_dropout_prob=0.0)
    x, ts, y = Tensor(_rnd(2, 4, 4, 8, 8)), Tensor(np.array([1, 2], np.int32)), Tensor(_rnd(2, 1, 8, 32))
    a = m(x, ts, y).asnumpy()
    m.set_train(True)
    outs = [m(x, ts, y).asnumpy() for _ in range(2)]
    m.set_train(False)
    assert any(np.abs(o - a).max() > 1e-4 for o in outs)   # kept branches are scaled by 2, dropped ones vanish


def test_recompute_gives_same_gradients():
    m = _perturbed(seed=11)
    x, ts, y = Tensor(_rnd(2, 4, 4, 8, 8)), Tensor(np.array([1, 800], np.int32)), Tensor(_rnd(2, 1, 8, 32, seed=1))
    mask = Tensor(np.array([[1] * 5 + [0] * 3, [1] * 8], np.int32))
    params = m.trainable_params()
    f = ms.value_and_grad(lambda x: (m(x, ts, y, mask) ** 2).mean(), None, params)
    l0, g0 = f(x)
    m.enable_grad_checkpoint()             # all blocks
    assert m.grad_checkpoint_blocks == 2
    l1, g1 = f(x)
    m.disable_grad_checkpoint()
    assert m.grad_checkpoint_blocks == 0 and all(b._recompute_cell is None for b in m.blocks)
    np.testing.assert_allclose(l0.asnumpy(), l1.asnumpy(), rtol=1e-6)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-6)
    with pytest.raises(ValueError, match="allowed: 0..2"):
        m.enable_grad_checkpoint(3)


# --------------------------------------------------------------------------------------------------------------
def released_stdit_keys(T=16, H=32, W=32, depth=28, C=1152, in_ch=4, patch=(1, 2, 2), cap=4096, L=120, mlp=4.0,
                        pred_sigma=True):
    """Names and shapes of Open-Sora v1.0 STDiT.state_dict(), derived from the original code: buffers pos_embed,
    pos_embed_temporal, y_embedder.y_embedding; no affine LayerNorm parameters (all elementwise_affine=False)."""
    hid, out = int(C * mlp), (2 * in_ch if pred_sigma else in_ch) * int(np.prod(patch))
    S = (H // patch[1]) * (W // patch[2])
    keys = {"pos_embed": (1, S, C), "pos_embed_temporal": (1, T // patch[0], C),
            "x_embedder.proj.weight": (C, in_ch) + tuple(patch), "x_embedder.proj.bias": (C,),
            "t_embedder.mlp.0.weight": (C, 256), "t_embedder.mlp.0.bias": (C,),
            "t_embedder.mlp.2.weight": (C, C), "t_embedder.mlp.2.bias": (C,),
            "t_block.1.weight": (6 * C, C), "t_block.1.bias": (6 * C,),
            "y_embedder.y_embedding": (L, cap),
            "y_embedder.y_proj.fc1.weight": (C, cap), "y_embedder.y_proj.fc1.bias": (C,),
            "y_embedder.y_proj.fc2.weight": (C, C), "y_embedder.y_proj.fc2.bias": (C,),
            "final_layer.scale_shift_table": (2, C),
            "final_layer.linear.weight": (out, C), "final_layer.linear.bias": (out,)}
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "scale_shift_table": (6, C),
                     b + "attn.qkv.weight": (3 * C, C), b + "attn.qkv.bias": (3 * C,),
                     b + "attn.proj.weight": (C, C), b + "attn.proj.bias": (C,),
                     b + "cross_attn.q_linear.weight": (C, C), b + "cross_attn.q_linear.bias": (C,),
                     b + "cross_attn.kv_linear.weight": (2 * C, C), b + "cross_attn.kv_linear.bias": (2 * C,),
                     b + "cross_attn.proj.weight": (C, C), b + "cross_attn.proj.bias": (C,),
                     b + "mlp.fc1.weight": (hid, C), b + "mlp.fc1.bias": (hid,),
                     b + "mlp.fc2.weight": (C, hid), b + "mlp.fc2.bias": (C,),
                     b + "attn_temp.qkv.weight": (3 * C, C), b + "attn_temp.qkv.bias": (3 * C,),
                     b + "attn_temp.proj.weight": (C, C), b + "attn_temp.proj.bias": (C,)})
    return keys


def test_xl2_names_shapes_and_count_match_released_checkpoint():
    import contextlib
    no_init = getattr(ms.nn.utils, "no_init_parameters", contextlib.nullcontext)
    with no_init():                               # shapes only; nothing of the 3 GB is drawn
        xl = STDiT_XL_2(input_size=(16, 32, 32))
    ours = {n: tuple(p.shape) for n, p in xl.parameters_and_names()}
    want = released_stdit_keys()
    assert sorted(ours) == sorted(want), (set(ours) ^ set(want))
    assert ours == want
    assert len(ours) == 550
    n = sum(int(np.prod(s)) for k, s in want.items() if k not in STDiT.BUFFERS)
    assert n == 759_620_768 == count_params(xl)
    assert {p.name for p in xl.get_parameters() if not p.requires_grad} == set(STDiT.BUFFERS)


def _save_torch(sd, path):
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, str(path))


def test_torch_checkpoint_round_trip(tmp_path):
    "A torch .pth named like the original (EMA-wrapped, other-resolution pos tables) loads to identical params."
    src = _perturbed(seed=21)
    sd = {n: p.asnumpy() for n, p in src.parameters_and_names()}
    sd["pos_embed"] = _rnd(1, 64, 64)                  # a 16x16-grid table: dropped, like the original's find_model
    sd["pos_embed_temporal"] = _rnd(1, 16, 64)
    path = tmp_path / "stdit.pth"
    torch.save({"ema": {k: torch.from_numpy(v) for k, v in sd.items()}}, str(path))
    set_seed(99)
    dst = STDiT(**TINY)
    report = load_checkpoint(dst, path)                 # recognised as an STDiT checkpoint
    assert type(report).__name__ == "LoadReport" and report.ok and report.loaded == len(sd)
    for (n, p), (_, q) in zip(src.parameters_and_names(), dst.parameters_and_names()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy(), err_msg=n)
    x, ts, y = Tensor(_rnd(1, 4, 4, 8, 8)), Tensor(np.array([3], np.int32)), Tensor(_rnd(1, 1, 8, 32))
    np.testing.assert_array_equal(src(x, ts, y).asnumpy(), dst(x, ts, y).asnumpy())
    # a checkpoint of another model is refused, naming keys, before anything is assigned
    bad = dict(sd); bad.pop("blocks.1.mlp.fc2.weight"); bad["blocks.1.mlp.fc3.weight"] = sd["blocks.1.mlp.fc2.weight"]
    _save_torch(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc2\.weight.*|blocks\.1\.mlp\.fc3\.weight"):
        load_stdit_checkpoint(dst, tmp_path / "bad.pth")


def test_pixart_initialisation_from_torch_file(tmp_path):
    set_seed(4)
    m = STDiT(**TINY)
    init = {n: p.asnumpy().copy() for n, p in m.parameters_and_names()}
    rng = np.random.default_rng(0)
    pix = {n: rng.standard_normal(s.shape).astype(np.float32) for n, s in m.parameters_and_names()
           if ".attn_temp." not in n and n not in STDIT_RECOMPUTED}
    pix["x_embedder.proj.weight"] = pix["x_embedder.proj.weight"][:, :, 0]          # PixArt's 2-D kernel
    pix["pos_embed"] = rng.standard_normal((1, 256, 64)).astype(np.float32)         # PixArt-512's 64x64 table
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in pix.items()}}, str(tmp_path / "pixart.pth"))
    rep = load_checkpoint(m, tmp_path / "pixart.pth")        # recognised as PixArt by content
    assert rep.reshaped == [("x_embedder.proj.weight", (64, 4, 2, 2), (64, 4, 1, 2, 2))]
    assert rep.dropped == ["pos_embed"] and not (rep.unexpected or rep.missing or rep.mismatched)
    assert sorted(rep.at_init) == sorted([f"blocks.{i}.attn_temp.{a}.{w}" for i in range(2) for a in ("qkv", "proj")
                                          for w in ("weight", "bias")] + list(STDIT_RECOMPUTED))
    assert len(rep.loaded) == len(pix) - 1
    got = {n: p.asnumpy() for n, p in m.parameters_and_names()}
    for n in got:
        if n in rep.at_init:
            np.testing.assert_array_equal(got[n], init[n], err_msg=n)
        elif n == "x_embedder.proj.weight":
            np.testing.assert_array_equal(got[n][:, :, 0], pix[n])
        else:
            np.testing.assert_array_equal(got[n], pix[n], err_msg=n)
    assert np.abs(got["blocks.0.attn_temp.proj.weight"]).max() == 0 and np.abs(got["blocks.0.attn_temp.qkv.weight"]).max() > 0
    # the initialised video model is PixArt frame by frame: the temporal branch adds nothing
    x, ts, y = _rnd(1, 4, 4, 8, 8), np.array([10], np.int32), _rnd(1, 1, 8, 32)
    ref = torch_stdit({k: torch.from_numpy(v) for k, v in got.items()}, x, ts, y, None, TINY)
    np.testing.assert_allclose(m(Tensor(x), Tensor(ts), Tensor(y)).asnumpy(), ref, atol=1e-5 * np.abs(ref).max())
    # a PixArt-MS (1024) file has size embedders this model lacks: refused by name unless strict=False
    ms_pix = {**pix, "csize_embedder.mlp.0.weight": np.zeros((64, 256), np.float32)}
    with pytest.raises(ValueError, match="csize_embedder.mlp.0.weight"):
        load_pixart_checkpoint(m, ms_pix)
    rep = load_pixart_checkpoint(m, ms_pix, strict=False)
    assert rep.unexpected == ["csize_embedder.mlp.0.weight"]


def test_convert_builds_for_the_file_geometry(tmp_path, monkeypatch):
    "The opensora-convert hook builds STDiT-XL/2 for the file's latent size (checked on a depth-0 shape stand-in)."
    import opensora_nb.models.stdit as mod
    built = {}
    def small_xl(**kw):
        built.update(kw)
        return STDiT(**{**TINY, **{k: v for k, v in kw.items() if k in ("model_max_length", "pred_sigma")},
                        "input_size": kw["input_size"][:1] + (8, 8)})
    monkeypatch.setattr(mod, "STDiT_XL_2", small_xl)
    src = _perturbed(seed=1)
    sd = {n: p.asnumpy() for n, p in src.parameters_and_names()}
    sd["pos_embed"], sd["pos_embed_temporal"] = _rnd(1, 256, 64), _rnd(1, 4, 64)
    _save_torch(sd, tmp_path / "s.pth")
    from opensora_nb.commands import build_for_convert
    cell, rep = build_for_convert("stdit", str(tmp_path / "s.pth"))      # what `opensora-convert --model stdit` calls
    assert built["input_size"] == (4, 32, 32) and built["model_max_length"] == 8 and rep.ok
    for (n, p), (_, q) in zip(src.parameters_and_names(), cell.parameters_and_names()):
        if n not in STDIT_RECOMPUTED:
            np.testing.assert_array_equal(p.asnumpy(), q.asnumpy(), err_msg=n)
    with pytest.raises(ValueError, match="choose one of"):
        build_for_convert("stdit3", str(tmp_path / "s.pth"))
