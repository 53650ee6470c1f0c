"""Our MindSpore models beside PyTorch references on the same CPU: time, peak memory and agreement. Prints one JSON line.

Every (case, side) runs in its own process (`python bench/compare.py --child CASE SIDE ...`), so each side's peak RSS
is its own; both sides use the same number of threads (`--threads`, default 2: `torch.set_num_threads(n)`;
`mindspore.device_context.cpu.op_tuning.threads_num(n)`, the successor of `set_context(runtime_num_threads=n)`;
`OMP_NUM_THREADS` / `MKL_NUM_THREADS` / `OPENBLAS_NUM_THREADS` = n for numpy and the BLAS libraries). fp32 everywhere,
eval mode, no gradients except in `stdit_d2_fwdbwd`; ours run PyNative (the package's default), or with `--mode graph`
the two denoiser forwards (`stdit_d2_fwd`, `latte_d2_fwd`) run compiled as the samplers run them (GRAPH_MODE around
each call, `runtime.compiled_cell`; the STDiT's shared caption padding cut first; the warm-up call compiles). A reference process
imports torch (and diffusers / transformers) but never mindspore, ours never torch: importing the other framework
would add 0.3-0.4 GB to a side's resident memory.

Each case builds one model with random weights, and the side built first hands them to the other through a
safetensors file in a temporary folder, so both compute with the same weights on the same inputs (numpy, seed 0).
Zero-initialised tensors are made random first (as the parity tests do), so that no branch is skipped. Per case:
`ours_s` / `ref_s` are the median of BENCH_REPEATS (default 1) timed calls after one untimed warm-up call, `ratio` =
ours_s / ref_s. `ours_peak_gb` / `ref_peak_gb` are the process's `ru_maxrss` with the peak reset after set-up
(`/proc/self/clear_refs` = 5, `peak_reset`): the resident model and inputs plus what the calls add, not the transient
copies of building and loading (that whole-process peak is `*_setup_peak_gb`); `mem_ratio` = ours / ref.
`max_abs_err` is max |ours - ref| over the output, `ref_scale` max |ref| and `rel_err` their quotient (the parity tests'
bar: <= 1e-5 x max(1, scale)); a MindSpore read-back of the result ends every timed call (one element per output,
as bench/attention.py does), torch's calls are synchronous.

Cases (full size; `--tiny` / COMPARE_TINY=1 runs each at toy size to check the plumbing in seconds):
- `matmul_2048`: 2048x2048 @ 2048x2048 fp32. Ours: `kernels.matmul` (what the models call: OpenBLAS through
  `opensora_nb.blas` under the default `blas` kernels, MindSpore's `MatMul` under `cpu`), with MindSpore's own
  `ops.matmul` as `ours_native_s` and `kernels.linear` (x @ W^T, how every Dense layer of our models multiplies)
  as `ours_linear_s`; ref: `torch.matmul`, and numpy's `a @ b` as `ref_numpy_s`. `*_gflops` = 2 n^3 / time.
- `stdit_d2_fwd`: a depth-2 slice of STDiT-XL/2 (hidden 1152, 16 heads, patch 1x2x2, caption_channels 4096), built
  as bench/stdit.py builds it, on latent (1, 4, 16, 32, 32) (4096 tokens), 120 caption tokens of which 30 valid,
  timestep 500: one forward. Ours: `opensora_nb.models.stdit.STDiT`; ref: `torch_stdit` of tests/test_stdit.py
  (Open-Sora v1.0's forward re-implemented in torch) on our weights by name.
- `stdit_d2_fwdbwd`: the same, forward + backward: gradient of sum(output x a fixed random cotangent) w.r.t. every
  trainable parameter (ours: `mindspore.value_and_grad` over `model.trainable_params()`; ref: `torch_stdit` with
  `.numpy()` taken off its return, autograd). Also `grad_max_abs_err` / `grad_scale` over all parameters.
- `latte_d2_fwd`: a depth-2 slice (2 spatial + 2 temporal blocks) of LatteT2V-XL/122 (16 heads x 72, patch 2, 4 ->
  8 channels, caption_channels 4096, video_length 5), built as bench/_latte.py builds it, on latent
  (1, 4, 5, 32, 32), 120 caption tokens of which 30 valid, timestep 500: one forward. Ours:
  `opensora_nb.models.latte.LatteT2V`; ref: diffusers' `LatteTransformer3DModel` holding our weights, set up by
  tests/test_latte.py's `torch_reference` (and its `per_frame_bias` for the caption mask).
- `t5_xxl_layer`: one T5-v1.1-XXL encoder layer (d_model 4096, d_kv 64, 64 heads, d_ff 10240, gated-gelu,
  32 relative buckets, vocab 32128) + the final norm, on 8 captions x 120 tokens (real lengths 120 down to 8).
  Ref: transformers' `T5EncoderModel` (num_layers=1; norms and relative bias made random as tests/test_t5.py does),
  saved with `save_pretrained`; ours: `opensora_nb.models.t5.T5Encoder.from_pretrained` of that folder.
- `sd_vae_16x256`: the SD VAE (sd-vae-ft-ema config: block_out_channels 128, 256, 512, 512, 2 layers per block,
  latent 4), encode + decode of a 16-frame 256x256 clip frame by frame in micro-batches of 4 frames (4 encoder calls,
  then 4 decoder calls, as Open-Sora's VideoAutoencoderKL), the posterior's mode (Open-Sora samples; the mode keeps
  the comparison exact). Ref: diffusers' `AutoencoderKL` (GroupNorm affine made random as tests/test_sd_vae.py does),
  saved with `save_pretrained`; ours: `AutoencoderKL.from_pretrained` of that folder in `VideoAutoencoderKL`.
- `causalvae_decode_17x256` (slow: ours about 370 s; run with `--slow` or by name): the released CausalVAE 4x8x8
  config (`CAUSALVAE_4x8x8`), untiled decode of a (1, 4, 5, 32, 32) latent to (1, 3, 17, 256, 256). Ours:
  `CausalVAEModel.decode`; ref: the decoder composed here in torch from tests/test_causalvae.py's block references
  (`_ref_causal_conv`, `_ref_resnet3d`, `_ref_attn3d`) in Open-Sora-Plan v1.0.0's order (post_quant_conv, conv_in,
  mid block_1 / attn_1 / block_2, levels 3..0 of 3 resnets each then SpatialUpsample2x / TimeUpsample2x, norm_out,
  SiLU, conv_out); every decoder weight must be used. GroupNorm affine and biases are made random. The warm-up call of
  both sides decodes a small (1, 4, 2, 8, 8) latent instead of a second full call (as bench/plan_models.py does).
- `attn_lean_vs_padded`: ours only. `opensora_nb.attention.attention` at STDiT's cross-attention shape: queries
  (2, 16, 4096, 72), 120 keys of which 30 valid (both captions), k = v. `ours_s` is `path="lean"` (padded keys
  dropped), `ref_s` is `path="math"` (padded keys masked): there is no torch side, `ratio` is lean / padded.

Environment: BENCH_REPEATS, COMPARE_TINY=1 (= --tiny), COMPARE_MODE=graph (= --mode graph), COMPARE_SKIP (a comma list),
COMPARE_CAUSALVAE_LATENT (the CausalVAE case's latent, default 1,4,5,32,32).
Usage: `python bench/compare.py [--cases a,b] [--threads N] [--mode pynative|graph] [--slow] [--tiny] [--list]`.
The machine may be shared: `load_avg` (1, 5, 15 min) is recorded before and after, and per case.
"""
import argparse
import ast
import copy
import datetime
import importlib.metadata
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(HERE), "tests")
REPEATS = int(os.environ.get("BENCH_REPEATS", "1"))
CASES = ("matmul_2048", "stdit_d2_fwd", "stdit_d2_fwdbwd", "latte_d2_fwd", "t5_xxl_layer", "sd_vae_16x256",
         "causalvae_decode_17x256", "attn_lean_vs_padded")
SLOW = {"causalvae_decode_17x256"}
# packages each case's reference needs (a missing one -> the case is reported as skipped)
NEEDS = {"matmul_2048": ("torch",), "stdit_d2_fwd": ("torch",), "stdit_d2_fwdbwd": ("torch",),
         "latte_d2_fwd": ("torch", "diffusers"), "t5_xxl_layer": ("torch", "transformers"),
         "sd_vae_16x256": ("torch", "diffusers"), "causalvae_decode_17x256": ("torch",), "attn_lean_vs_padded": ()}
REF_FROM = {"stdit_d2_fwd": "test_stdit.py", "stdit_d2_fwdbwd": "test_stdit.py", "latte_d2_fwd": "test_latte.py",
            "causalvae_decode_17x256": "test_causalvae.py"}
FIRST = {"t5_xxl_layer": "ref", "sd_vae_16x256": "ref"}  # the side that makes the weights; else ours
FRAMEWORK = {"ours": "mindspore", "ref": "torch"}


def _gb(kib):
    return round(kib / 2**20, 3)


def _peak_gb():
    return _gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _reset_peak() -> bool:
    "Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where that is refused."
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _load_avg():
    return [round(v, 2) for v in os.getloadavg()]


# --------------------------------------------------------------------------------------------------------------
# shapes

def spec(case: str, tiny: bool) -> dict:
    "The shapes (and sizes) of one case, full or toy."
    if case == "matmul_2048":
        return {"n": 256 if tiny else 2048}
    if case.startswith("stdit"):
        if tiny:
            return dict(latent=[1, 4, 4, 8, 8], hidden_size=64, num_heads=4, depth=2, patch_size=[1, 2, 2],
                        caption_channels=32, caption_tokens=8, valid_tokens=3, timestep=500)
        return dict(latent=[1, 4, 16, 32, 32], hidden_size=1152, num_heads=16, depth=2, patch_size=[1, 2, 2],
                    caption_channels=4096, caption_tokens=120, valid_tokens=30, timestep=500)
    if case == "latte_d2_fwd":
        if tiny:
            return dict(latent=[1, 4, 5, 8, 8], num_layers=2, heads=2, head_dim=8, caption_channels=32,
                        caption_tokens=8, valid_tokens=3, timestep=500)
        return dict(latent=[1, 4, 5, 32, 32], num_layers=2, heads=16, head_dim=72, caption_channels=4096,
                    caption_tokens=120, valid_tokens=30, timestep=500, version="17x256x256")
    if case == "t5_xxl_layer":
        if tiny:
            return dict(vocab_size=512, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=1,
                        relative_attention_num_buckets=8, relative_attention_max_distance=20, batch=2, tokens=16)
        return dict(vocab_size=32128, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=1,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128, batch=8, tokens=120)
    if case == "sd_vae_16x256":
        if tiny:
            return dict(frames=4, size=32, micro_batch=2, block_out_channels=[32, 64], layers_per_block=1)
        return dict(frames=16, size=256, micro_batch=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2)
    if case == "causalvae_decode_17x256":
        if tiny:  # tiny_causalvae_config(): hidden 32, mult 1,1,2,2, one resnet per level
            return dict(latent=[1, 4, 3, 4, 4], out=[1, 3, 9, 32, 32], config="tiny_causalvae_config()",
                        warmup_latent=[1, 4, 2, 2, 2])
        # COMPARE_CAUSALVAE_LATENT="1,4,3,16,16": another latent size (here 9x128x128 out), for a quicker look
        lat = [int(v) for v in os.environ.get("COMPARE_CAUSALVAE_LATENT", "1,4,5,32,32").split(",")]
        return dict(latent=lat, out=[lat[0], 3, 1 + 4 * (lat[2] - 1), 8 * lat[3], 8 * lat[4]], config="CAUSALVAE_4x8x8",
                    warmup_latent=[1, 4, 2, 8, 8])
    if case == "attn_lean_vs_padded":
        if tiny:
            return dict(q=[2, 4, 64, 16], keys=8, valid_keys=3)
        return dict(q=[2, 16, 4096, 72], keys=120, valid_keys=30)
    raise ValueError(f"unknown case {case!r}; cases: {', '.join(CASES)}")


def _rng(seed=0):
    import numpy as np
    return np.random.default_rng(seed)


def _normal(shape, seed):
    import numpy as np
    return _rng(seed).standard_normal(shape).astype(np.float32)


def _valid_mask(batch, length, valid):
    import numpy as np
    m = np.zeros((batch, length), np.int32)
    m[:, :valid] = 1
    return m


# --------------------------------------------------------------------------------------------------------------
# the handover between the two sides of a case (a folder of files)

class Handover:
    "Files one side of a case leaves for the other: weights (torch names), a config, the outputs."
    def __init__(self, workdir, case):
        self.dir, self.case = workdir, case

    def path(self, name):
        return os.path.join(self.dir, f"{self.case}.{name}")

    def save_weights(self, tensors: dict):
        from safetensors.numpy import save_file
        import numpy as np
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, self.path("weights.safetensors"))

    def save_json(self, obj):
        with open(self.path("config.json"), "w") as f:
            json.dump(obj, f, default=lambda o: list(o) if isinstance(o, tuple) else str(o))

    def load_json(self):
        with open(self.path("config.json")) as f:
            return json.load(f)


def _test_functions(test_file: str, names, namespace: dict, tensor_return=()) -> dict:
    """Compile the named top-level functions of tests/`test_file` into `namespace` without running the file (it
    imports mindspore), annotations dropped. For a name in `tensor_return`, also a copy `NAME_tensor` whose final
    `return X.numpy()` returns X."""
    path = os.path.join(TESTS, test_file)
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    missing = [n for n in names if n not in defs]
    if missing:
        raise RuntimeError(f"{path} no longer defines {missing}: update bench/compare.py's reference")
    body = [copy.deepcopy(defs[n]) for n in names]
    for fn in body:  # annotations name the test module's imports (e.g. `model: LatteT2V`): not needed to run
        fn.returns = None
        for arg in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs:
            arg.annotation = None
    for name in tensor_return:
        fn = copy.deepcopy(body[names.index(name)])
        ret = fn.body[-1]
        call = getattr(ret, "value", None)
        if not (isinstance(ret, ast.Return) and isinstance(call, ast.Call) and not call.args
                and isinstance(call.func, ast.Attribute) and call.func.attr == "numpy"):
            raise RuntimeError(f"{path}: {name} no longer ends in `return ....numpy()`; update bench/compare.py")
        ret.value = call.func.value
        fn.name = name + "_tensor"
        body.append(fn)
    exec(compile(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[])), path, "exec"), namespace)
    return namespace


# --------------------------------------------------------------------------------------------------------------
# the sides of every case: each returns dict(run=..., result=... -> {name: array}, warmup=..., extra=...)

def _ms_wait(*tensors):
    "Wait for MindSpore results without timing a host copy of them: one element of each is read back."
    from mindspore import ops
    ops.concat([t.reshape(-1)[:1].astype(tensors[0].dtype) for t in tensors]).asnumpy()


def _perturb_zeros(model, seed=100, std=0.05):
    "Zero-initialised trainable tensors (cross-attention / temporal / final projections) -> small random values."
    import numpy as np
    from mindspore import Tensor
    rng = np.random.default_rng(seed)
    for _, p in model.parameters_and_names():
        if p.requires_grad and not np.abs(p.asnumpy()).any():
            p.set_data(Tensor((rng.standard_normal(p.shape) * std).astype(np.float32)))


def _matmul_inputs(s):
    return _normal((s["n"], s["n"]), 1), _normal((s["n"], s["n"]), 2)


def ours_matmul(s, io):
    import numpy as np
    import mindspore as ms
    from mindspore import ops
    from opensora_nb import kernels
    a_np, b_np = _matmul_inputs(s)
    a, b, bt = ms.Tensor(a_np), ms.Tensor(b_np), ms.Tensor(np.ascontiguousarray(b_np.T))
    last = {}

    def run():
        last["out"] = kernels.matmul(a, b); _ms_wait(last["out"])

    def extra():
        lin = lambda: _ms_wait(kernels.linear(a, bt))
        t = _timed(lin)
        tn = _timed(lambda: _ms_wait(ops.matmul(a, b)))
        err = float(np.abs(kernels.linear(a, bt).asnumpy() - last["out"].asnumpy()).max())
        return {"linear_s": t, "linear_gflops": _gflops(s["n"], t), "linear_vs_matmul_max_abs_err": err,
                "native_s": tn, "native_gflops": _gflops(s["n"], tn), "blas": bool(kernels.use_blas(ms.float32)),
                "fast_plain_matmul": bool(kernels.fast_plain_matmul(s["n"]))}
    return dict(run=run, result=lambda: {"out": last["out"].asnumpy()}, extra=extra)


def ref_matmul(s, io):
    import numpy as np
    import torch
    a_np, b_np = _matmul_inputs(s)
    a, b = torch.from_numpy(a_np), torch.from_numpy(b_np)
    last = {}

    def run():
        last["out"] = torch.matmul(a, b)

    def extra():
        t = _timed(lambda: a_np @ b_np)
        try:
            blas = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
        except (AttributeError, KeyError):
            blas = "unknown"
        return {"numpy_s": t, "numpy_gflops": _gflops(s["n"], t), "numpy_blas": blas}
    return dict(run=run, result=lambda: {"out": last["out"].numpy()}, extra=extra)


def _stdit_inputs(s):
    import numpy as np
    B, L = s["latent"][0], s["caption_tokens"]
    x = _normal(s["latent"], 1)
    y = _normal((B, 1, L, s["caption_channels"]), 2)
    return x, np.full((B,), s["timestep"], np.int32), y, _valid_mask(B, L, s["valid_tokens"])


def _stdit_cotangent(s):
    B, C, T, H, W = s["latent"]
    return _normal((B, 2 * C, T, H, W), 3)  # learned sigma: 2C output channels


def _ours_call(model):
    """`model` as this run calls it: eagerly (PyNative, the package's default), or with COMPARE_MODE=graph compiled
    as the samplers call it (`runtime.compiled_cell`: GRAPH_MODE around each call; the untimed warm-up compiles)."""
    if os.environ.get("COMPARE_MODE", "pynative") != "graph":
        return model
    from opensora_nb.runtime import compiled_cell
    return compiled_cell(model)


def _ours_stdit(s, io, backward):
    import mindspore as ms
    from mindspore import ops
    from opensora_nb.attention import trim_caption
    from opensora_nb.runtime import set_seed
    from opensora_nb.models.stdit import STDiT
    set_seed(0)
    model = STDiT(input_size=tuple(s["latent"][2:]), depth=s["depth"], hidden_size=s["hidden_size"],
                  num_heads=s["num_heads"], patch_size=tuple(s["patch_size"]), caption_channels=s["caption_channels"],
                  model_max_length=s["caption_tokens"])
    _perturb_zeros(model)
    model.set_train(False)
    io.save_weights({n: p.asnumpy() for n, p in model.parameters_and_names()})
    params = model.trainable_params()
    io.save_json({"trainable": [p.name for p in params]})
    x, t, y, mask = (ms.Tensor(a) for a in _stdit_inputs(s))
    last = {}
    if not backward:
        call = _ours_call(model)
        if call is not model:  # compiled: the shared padding cut on the host first, as the samplers do
            y, mask = trim_caption(y, mask)
        def run():
            last["out"] = call(x, t, y, mask); _ms_wait(last["out"])
        return dict(run=run, result=lambda: {"out": last["out"].asnumpy()})
    cot = ms.Tensor(_stdit_cotangent(s))
    grad_fn = ms.value_and_grad(lambda x: (model(x, t, y, mask) * cot).sum(), None, params)

    def run():
        loss, grads = grad_fn(x)
        _ms_wait(loss, *grads)
        last["grads"] = grads

    def result():
        out = {"out": model(x, t, y, mask).asnumpy()}
        out.update({f"grad/{p.name}": g.asnumpy() for p, g in zip(params, last["grads"])})
        return out
    return dict(run=run, result=result)


def _ref_stdit(s, io, backward):
    import math
    import torch
    from safetensors.torch import load_file
    ns = _test_functions("test_stdit.py", ["_sincos_1d", "_sincos_2d", "_lin", "_ln", "_self_attn",
                                           "_packed_cross_attn", "_torch_block", "torch_stdit"],
                         {"np": __import__("numpy"), "torch": torch, "F": torch.nn.functional, "math": math},
                         tensor_return=["torch_stdit"])
    W = load_file(io.path("weights.safetensors"))
    cfg = dict(input_size=s["latent"][2:], patch_size=s["patch_size"], hidden_size=s["hidden_size"],
               num_heads=s["num_heads"], depth=s["depth"])
    x, t, y, mask = _stdit_inputs(s)
    last = {}
    if not backward:
        def run():
            with torch.no_grad():
                last["out"] = ns["torch_stdit"](W, x, t, y, mask, cfg)
        return dict(run=run, result=lambda: {"out": last["out"]})
    trainable = io.load_json()["trainable"]
    for n in trainable:
        W[n].requires_grad_(True)
    cot = torch.from_numpy(_stdit_cotangent(s))

    def run():
        for n in trainable:
            W[n].grad = None
        out = ns["torch_stdit_tensor"](W, x, t, y, mask, cfg)
        (out * cot).sum().backward()
        last["out"] = out

    def result():
        out = {"out": last["out"].detach().numpy()}
        out.update({f"grad/{n}": W[n].grad.numpy() for n in trainable})
        return out
    return dict(run=run, result=result)


def _latte_inputs(s):
    import numpy as np
    B, L = s["latent"][0], s["caption_tokens"]
    return (_normal(s["latent"], 1), np.full((B,), s["timestep"], np.int64),
            _normal((B, L, s["caption_channels"]), 2), _valid_mask(B, L, s["valid_tokens"]))


def ours_latte(s, io):
    import mindspore as ms
    from opensora_nb.models.latte import (LatteT2V, LatteT2V_XL_122, latte_version_kwargs, latte_torch_state_dict,
                                          tiny_latte_config)
    ms.set_seed(0)
    if "version" in s:  # full width, as bench/_latte.py builds it
        model = LatteT2V_XL_122(num_layers=s["num_layers"], **latte_version_kwargs(s["version"]))
    else:
        model = LatteT2V(**tiny_latte_config(video_length=s["latent"][2], num_layers=s["num_layers"]))
    _perturb_zeros(model)
    model.set_train(False)
    io.save_weights(latte_torch_state_dict(model))
    io.save_json(dict(model.config))
    x, t, cap, mask = _latte_inputs(s)
    x, t, cap = ms.Tensor(x), ms.Tensor(t), ms.Tensor(cap)
    call, last = _ours_call(model), {}
    if call is not model:   # compiled: the mask as a tensor (a graph's inputs are tensors)
        mask = ms.Tensor(mask)

    def run():
        last["out"] = call(x, t, cap, encoder_attention_mask=mask); _ms_wait(last["out"])
    return dict(run=run, result=lambda: {"out": last["out"].asnumpy()})


def ref_latte(s, io):
    import numpy as np
    import torch
    from safetensors.numpy import load_file
    sd = load_file(io.path("weights.safetensors"))
    ns = _test_functions("test_latte.py", ["torch_reference", "per_frame_bias"],
                         {"np": np, "torch": torch, "latte_torch_state_dict": lambda model: sd})
    ref = ns["torch_reference"](SimpleNamespace(config=SimpleNamespace(**io.load_json())))
    del sd
    x, t, cap, mask = _latte_inputs(s)
    x, t, cap = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(cap)
    bias = ns["per_frame_bias"](mask, s["latent"][2])
    last = {}

    def run():
        with torch.no_grad():
            last["out"] = ref(x, t, cap, encoder_attention_mask=bias, return_dict=False)[0]
    return dict(run=run, result=lambda: {"out": last["out"].numpy()})


def _t5_inputs(s):
    import numpy as np
    B, L = s["batch"], s["tokens"]
    ids = _rng(1).integers(3, s["vocab_size"], size=(B, L)).astype(np.int64)
    mask = np.ones((B, L), np.int64)
    for b, n in enumerate(np.linspace(L, min(8, L), B).astype(int)):  # real lengths L ... 8, eos last
        ids[b, n - 1] = 1; ids[b, n:] = 0; mask[b, n:] = 0
    return ids, mask


def ref_t5(s, io):
    import torch
    import transformers
    keys = ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers", "relative_attention_num_buckets",
            "relative_attention_max_distance")
    cfg = transformers.T5Config(**{k: s[k] for k in keys}, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                                is_encoder_decoder=False)
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(cfg).eval()
    with torch.no_grad():  # as tests/test_t5.py: norms and the relative bias random, so that they matter
        for name, p in model.named_parameters():
            if "layer_norm" in name: p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in name: p.copy_(torch.randn_like(p))
    model.save_pretrained(io.path("folder"))
    ids, mask = (torch.from_numpy(a) for a in _t5_inputs(s))
    last = {}

    def run():
        with torch.no_grad():
            last["out"] = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return dict(run=run, result=lambda: {"out": last["out"].numpy()})


def ours_t5(s, io):
    import numpy as np
    import mindspore as ms
    from opensora_nb.models.t5 import T5Encoder
    model = T5Encoder.from_pretrained(io.path("folder"))
    model.set_train(False)
    ids, mask = (ms.Tensor(a.astype(np.int32)) for a in _t5_inputs(s))
    last = {}

    def run():
        last["out"] = model(ids, mask); _ms_wait(last["out"])
    return dict(run=run, result=lambda: {"out": last["out"].asnumpy()})


def _vae_clip(s):
    import numpy as np
    return _rng(1).uniform(-1, 1, (1, 3, s["frames"], s["size"], s["size"])).astype(np.float32)


def ref_sd_vae(s, io):
    import torch
    import diffusers
    n = len(s["block_out_channels"])
    cfg = dict(in_channels=3, out_channels=3, block_out_channels=tuple(s["block_out_channels"]),
               layers_per_block=s["layers_per_block"], down_block_types=("DownEncoderBlock2D",) * n,
               up_block_types=("UpDecoderBlock2D",) * n, act_fn="silu", latent_channels=4, norm_num_groups=32,
               sample_size=s["size"], scaling_factor=0.18215)  # sd-vae-ft-ema's config.json at full size
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**cfg).eval()
    with torch.no_grad():  # as tests/test_sd_vae.py: GroupNorm affine away from 1 / 0
        for name, p in ref.named_parameters():
            if "norm" in name: p.add_(0.1 * torch.randn_like(p))
    ref.save_pretrained(io.path("folder"))
    clip, mb, sf = torch.from_numpy(_vae_clip(s)), s["micro_batch"], cfg["scaling_factor"]
    b, c, t, h, w = clip.shape
    frames = clip.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    last = {}

    def run():  # Open-Sora's VideoAutoencoderKL: encode micro-batch by micro-batch, then decode likewise
        with torch.no_grad():
            z = torch.cat([ref.encode(frames[i:i + mb]).latent_dist.mode() * sf for i in range(0, b * t, mb)])
            x = torch.cat([ref.decode(z[i:i + mb] / sf).sample for i in range(0, b * t, mb)])
        last["out"] = x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)
    return dict(run=run, result=lambda: {"out": last["out"].numpy()})


def ours_sd_vae(s, io):
    import mindspore as ms
    from opensora_nb.models.sd_vae import AutoencoderKL, VideoAutoencoderKL
    vae = VideoAutoencoderKL(AutoencoderKL.from_pretrained(io.path("folder")), micro_batch_size=s["micro_batch"])
    vae.set_train(False)
    clip = ms.Tensor(_vae_clip(s))
    last = {}

    def run():
        last["out"] = vae.decode(vae.encode(clip, sample_posterior=False)); _ms_wait(last["out"])
    return dict(run=run, result=lambda: {"out": last["out"].asnumpy()})


def ours_causalvae(s, io):
    import numpy as np
    import mindspore as ms
    from opensora_nb.models.causalvae import CAUSALVAE_4x8x8, CausalVAEModel, tiny_causalvae_config
    ms.set_seed(0)
    cfg = tiny_causalvae_config() if s["config"].startswith("tiny") else dict(CAUSALVAE_4x8x8)
    model = CausalVAEModel(**cfg)
    rng = np.random.default_rng(100)
    for n, p in model.parameters_and_names():  # GroupNorm affine and biases away from their 1 / 0 start
        if n.endswith((".gamma", ".beta", ".bias")):
            p.set_data(ms.Tensor(p.asnumpy() + (0.1 * rng.standard_normal(p.shape)).astype(np.float32)))
    model.set_train(False)
    io.save_weights(model.torch_state_dict())
    io.save_json(model.config)
    z, zw = ms.Tensor(_normal(s["latent"], 1)), ms.Tensor(_normal(s["warmup_latent"], 2))
    last = {}

    def run():
        last["out"] = model.decode(z); _ms_wait(last["out"])
    return dict(run=run, warmup=lambda: _ms_wait(model.decode(zw)), result=lambda: {"out": last["out"].asnumpy()})


def _causalvae_reference_decoder(ns, P: dict, cfg: dict):
    "Open-Sora-Plan v1.0.0's CausalVAEModel.decode in torch, from the test's block references; checks every weight is used."
    import torch
    F = torch.nn.functional
    conv, resnet, attn = ns["_ref_causal_conv"], ns["_ref_resnet3d"], ns["_ref_attn3d"]
    n = len(cfg["hidden_size_mult"])
    expect = dict(decoder_conv_in="CausalConv3d", decoder_conv_out="CausalConv3d", decoder_attention="AttnBlock3D",
                  decoder_mid_resnet="ResnetBlock3D", q_conv="CausalConv3d")
    bad = {k: cfg[k] for k, v in expect.items() if cfg[k] != v}
    bad.update({k: cfg[k] for k, ok in (("decoder_resnet_blocks", {"ResnetBlock3D"}),
                                        ("decoder_spatial_upsample", {"", "SpatialUpsample2x"}),
                                        ("decoder_temporal_upsample", {"", "TimeUpsample2x"}))
                if not set(cfg[k]) <= ok})
    if bad or cfg["attn_resolutions"]:
        raise ValueError(f"the torch reference decoder covers the released 4x8x8 layout only; this config has {bad}, "
                         f"attn_resolutions={cfg['attn_resolutions']}")
    used = set()

    def sub(prefix):
        out = {k[len(prefix):]: v for k, v in P.items() if k.startswith(prefix)}
        used.update(prefix + k for k in out)
        return out

    def cc(name, x, pad):
        c = sub(name + ".")
        return conv(x, c["weight"], c["bias"], pad)

    def spatial_up(x, p):  # nearest 2x over (c t) h w, then the (1, 3, 3) causal conv (no time padding)
        b, c, t, h, w = x.shape
        x = F.interpolate(x.reshape(b, c * t, h, w), scale_factor=(2, 2), mode="nearest").reshape(b, c, t, 2 * h, 2 * w)
        return conv(x, p["conv.conv.weight"], p["conv.conv.bias"], 1)

    def time_up(x):  # keep frame 0; trilinear x2 in time for the rest
        if x.shape[2] <= 1: return x
        return torch.cat([x[:, :, :1], F.interpolate(x[:, :, 1:], scale_factor=(2, 1, 1), mode="trilinear")], 2)

    def decode(z):
        h = cc("post_quant_conv.conv", z, 0)
        h = cc("decoder.conv_in.conv", h, 1)
        h = resnet(h, sub("decoder.mid.block_1."))
        h = attn(h, sub("decoder.mid.attn_1."))
        h = resnet(h, sub("decoder.mid.block_2."))
        for i in reversed(range(n)):
            for j in range(cfg["num_res_blocks"] + 1):
                h = resnet(h, sub(f"decoder.up.{i}.block.{j}."))
            if cfg["decoder_spatial_upsample"][i]: h = spatial_up(h, sub(f"decoder.up.{i}.upsample."))
            if cfg["decoder_temporal_upsample"][i]: h = time_up(h)
        norm = sub("decoder.norm_out.")
        h = F.silu(F.group_norm(h, 32, norm["weight"], norm["bias"], eps=1e-6))
        h = cc("decoder.conv_out.conv", h, 1)
        unused = sorted(k for k in P if k.startswith(("decoder.", "post_quant_conv.")) and k not in used)
        if unused:
            raise RuntimeError(f"the torch reference decoder left decoder weights unused: {unused[:8]}")
        return h
    return decode


def ref_causalvae(s, io):
    import numpy as np
    import torch
    from safetensors.torch import load_file
    ns = _test_functions("test_causalvae.py", ["_ref_causal_conv", "_ref_attn3d", "_ref_resnet3d"],
                         {"np": np, "torch": torch, "F": torch.nn.functional})
    P = {k: v for k, v in load_file(io.path("weights.safetensors")).items()
         if k.startswith(("decoder.", "post_quant_conv."))}
    decode = _causalvae_reference_decoder(ns, P, io.load_json())
    z, zw = torch.from_numpy(_normal(s["latent"], 1)), torch.from_numpy(_normal(s["warmup_latent"], 2))
    last = {}

    def run():
        with torch.no_grad():
            last["out"] = decode(z)

    def warmup():
        with torch.no_grad():
            decode(zw)
    return dict(run=run, warmup=warmup, result=lambda: {"out": last["out"].numpy()})


def _attn_side(path):
    def side(s, io):
        import mindspore as ms
        from opensora_nb.attention import attention
        B, H, N, D = s["q"]
        q = ms.Tensor(_normal((B, H, N, D), 1))
        kv = ms.Tensor(_normal((B, H, s["keys"], D), 2))
        mask = ms.Tensor(_valid_mask(B, s["keys"], s["valid_keys"]))
        last = {}

        def run():
            last["out"] = attention(q, kv, kv, key_mask=mask, path=path); _ms_wait(last["out"])
        return dict(run=run, result=lambda: {"out": last["out"].asnumpy()})
    return side


SIDES = {
    "matmul_2048": (ours_matmul, ref_matmul),
    "stdit_d2_fwd": (lambda s, io: _ours_stdit(s, io, False), lambda s, io: _ref_stdit(s, io, False)),
    "stdit_d2_fwdbwd": (lambda s, io: _ours_stdit(s, io, True), lambda s, io: _ref_stdit(s, io, True)),
    "latte_d2_fwd": (ours_latte, ref_latte),
    "t5_xxl_layer": (ours_t5, ref_t5),
    "sd_vae_16x256": (ours_sd_vae, ref_sd_vae),
    "causalvae_decode_17x256": (ours_causalvae, ref_causalvae),
    "attn_lean_vs_padded": (_attn_side("lean"), _attn_side("math")),
}
SIDE_FRAMEWORK = {("attn_lean_vs_padded", "ref"): "mindspore"}  # the padded path is ours too


# --------------------------------------------------------------------------------------------------------------
# one side of one case, in its own process

def _timed(run, warmup=None, repeats=REPEATS):
    "One untimed warm-up call (`warmup`, else `run`), then the median of `repeats` timed calls."
    (warmup or run)()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 4)


def _gflops(n, seconds):
    return round(2 * n ** 3 / seconds / 1e9, 1)


def _set_threads(framework, n):
    "Both frameworks on `n` threads; returns what was set, read back where the framework tells."
    if framework == "torch":
        import torch
        torch.set_num_threads(n)
        return {"torch.get_num_threads": torch.get_num_threads()}
    import mindspore as ms
    from opensora_nb.runtime import set_runtime
    set_runtime("CPU")
    try:
        from mindspore.device_context.cpu.op_tuning import threads_num
        threads_num(n)
        how = "mindspore.device_context.cpu.op_tuning.threads_num"
    except ImportError:
        ms.set_context(runtime_num_threads=n)
        how = "set_context(runtime_num_threads)"
    return {how: n, "runtime_num_threads": ms.get_context("runtime_num_threads")}


def _errors(ours: dict, ref: dict) -> dict:
    import numpy as np
    if set(ours) != set(ref):
        raise RuntimeError(f"the two sides returned different results: {sorted(set(ours) ^ set(ref))[:8]}")
    out = {}
    groups = {"out": [k for k in ours if not k.startswith("grad/")], "grad": [k for k in ours if k.startswith("grad/")]}
    for g, keys in groups.items():
        if not keys: continue
        for k in keys:
            if ours[k].shape != ref[k].shape:
                raise RuntimeError(f"{k}: ours {ours[k].shape} vs ref {ref[k].shape}")
        err = max(float(np.abs(ours[k].astype(np.float64) - ref[k]).max()) for k in keys)
        scale = max(float(np.abs(ref[k]).max()) for k in keys)
        out[g] = {"max_abs_err": err, "scale": scale, "rel_err": err / scale if scale else None,
                  "finite": bool(all(np.isfinite(ours[k]).all() and np.isfinite(ref[k]).all() for k in keys))}
        if g == "out":
            out[g]["shape"] = list(ours[keys[0]].shape)
    return out


def child(case, side, workdir, threads, tiny):
    import numpy as np
    s = spec(case, tiny)
    framework = SIDE_FRAMEWORK.get((case, side), FRAMEWORK[side])
    report = {"case": case, "side": side, "framework": framework, "threads": _set_threads(framework, threads)}
    io = Handover(workdir, case)
    t0 = time.perf_counter()
    bench = SIDES[case][side == "ref"](s, io)
    report["setup_s"] = round(time.perf_counter() - t0, 2)
    report["setup_peak_gb"] = _peak_gb()
    report["peak_reset"] = _reset_peak()
    report["time_s"] = _timed(bench["run"], bench.get("warmup"))
    report["peak_gb"] = _peak_gb()
    if "extra" in bench:
        report["extra"] = bench["extra"]()
    result = bench["result"]()
    other = os.path.join(workdir, f"{case}.{'ours' if side == 'ref' else 'ref'}.npz")
    if os.path.exists(other):  # the second side compares
        with np.load(other) as f:
            theirs = dict(f)
        report["errors"] = _errors(result, theirs) if side == "ours" else _errors(theirs, result)
    else:
        np.savez(os.path.join(workdir, f"{case}.{side}.npz"), **result)
    print(json.dumps(report))


# --------------------------------------------------------------------------------------------------------------
# the parent: runs every (case, side) in its own process and assembles one JSON line

def _version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _skip_reason(case):
    missing = [p for p in NEEDS[case] if importlib.util.find_spec(p) is None]
    if missing:
        return f"reference package missing: {', '.join(missing)} (pip install -e '.[parity]')"
    if case in REF_FROM and not os.path.exists(os.path.join(TESTS, REF_FROM[case])):
        return f"reference tests/{REF_FROM[case]} not found"
    return None


def _run_child(case, side, workdir, threads, tiny):
    env = dict(os.environ, GLOG_v="3", OPENSORA_NB_PROGRESS="0", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", case, side, "--workdir", workdir,
           "--threads", str(threads)] + (["--tiny"] if tiny else [])
    print(f"compare: {case} {side} ...", file=sys.stderr, flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write(r.stderr[-20000:])
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    sys.stderr.write("".join(l + "\n" for l in r.stdout.splitlines() if not l.startswith("{")))
    print(f"compare: {case} {side} done in {time.time() - t0:.1f} s (rc {r.returncode})", file=sys.stderr, flush=True)
    if r.returncode or not lines:
        return {"error": (r.stderr or r.stdout or f"exit {r.returncode}")[-1500:]}
    return json.loads(lines[-1])


def _ratio(a, b, digits=3):
    return round(a / b, digits) if a is not None and b else None


def run_case(case, threads, tiny):
    s = spec(case, tiny)
    entry = {"shapes": s, "load_avg_start": _load_avg()}
    reason = _skip_reason(case)
    if reason:
        return {**entry, "skipped": reason}
    workdir = tempfile.mkdtemp(prefix=f"compare-{case}-")
    try:
        first = FIRST.get(case, "ours")
        order = (first, "ref" if first == "ours" else "ours")
        sides = {}
        for side in order:
            sides[side] = _run_child(case, side, workdir, threads, tiny)
            if "error" in sides[side]:
                return {**entry, "error": f"{side} side failed: {sides[side]['error']}"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ours, ref = sides["ours"], sides["ref"]
    errs = sides[order[1]].get("errors", {})
    entry.update(ours_s=ours["time_s"], ref_s=ref["time_s"], ratio=_ratio(ours["time_s"], ref["time_s"]),
                 ours_peak_gb=ours["peak_gb"], ref_peak_gb=ref["peak_gb"],
                 mem_ratio=_ratio(ours["peak_gb"], ref["peak_gb"]),
                 max_abs_err=errs.get("out", {}).get("max_abs_err"), ref_scale=errs.get("out", {}).get("scale"),
                 rel_err=errs.get("out", {}).get("rel_err"), out_shape=errs.get("out", {}).get("shape"),
                 finite=errs.get("out", {}).get("finite"))
    if "grad" in errs:
        entry.update(grad_max_abs_err=errs["grad"]["max_abs_err"], grad_scale=errs["grad"]["scale"],
                     grad_rel_err=errs["grad"]["rel_err"])
    for side, r in (("ours", ours), ("ref", ref)):
        entry[f"{side}_setup_s"] = r["setup_s"]
        entry[f"{side}_setup_peak_gb"] = r["setup_peak_gb"]
        entry[f"{side}_peak_reset"] = r["peak_reset"]
        entry[f"{side}_threads"] = r["threads"]
        entry.update({f"{side}_{k}": v for k, v in r.get("extra", {}).items()})
    if case == "matmul_2048":
        entry.update(ours_gflops=_gflops(s["n"], ours["time_s"]), ref_gflops=_gflops(s["n"], ref["time_s"]),
                     ours_op="opensora_nb.kernels.matmul", ref_op="torch.matmul")
    if case == "attn_lean_vs_padded":
        entry.update(ours_path="lean", ref_path="math (padded keys masked; ours too: there is no torch side)",
                     note="ratio = lean / padded")
    entry["load_avg_end"] = _load_avg()
    return entry


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", help=f"comma list (default: all but the slow ones); cases: {', '.join(CASES)}")
    p.add_argument("--threads", type=int, default=int(os.environ.get("COMPARE_THREADS", "2")))
    p.add_argument("--slow", action="store_true", help=f"also run {', '.join(sorted(SLOW))}")
    p.add_argument("--tiny", action="store_true", default=os.environ.get("COMPARE_TINY", "0") == "1",
                   help="toy shapes: checks the plumbing and the agreement in seconds")
    p.add_argument("--mode", choices=("pynative", "graph"), default=os.environ.get("COMPARE_MODE", "pynative"),
                   help="how ours call the denoisers (stdit_d2_fwd, latte_d2_fwd): eagerly, or compiled as the samplers do")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--child", nargs=2, metavar=("CASE", "SIDE"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    os.environ["COMPARE_MODE"] = a.mode     # the children (ours) read it
    if a.child:
        return child(a.child[0], a.child[1], a.workdir, a.threads, a.tiny)
    if a.list:
        print("\n".join(c + (" (slow)" if c in SLOW else "") for c in CASES))
        return
    if a.cases:
        cases = [c.strip() for c in a.cases.split(",") if c.strip()]
        unknown = [c for c in cases if c not in CASES]
        if unknown:
            p.error(f"unknown cases {unknown}; cases: {', '.join(CASES)}")
    else:
        cases = [c for c in CASES if a.slow or c not in SLOW]
    skip = set(filter(None, os.environ.get("COMPARE_SKIP", "").split(",")))
    res = {"bench": "compare", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "tiny": a.tiny, "mode": a.mode, "dtype": "fp32", "device": "CPU", "threads": a.threads, "repeats": REPEATS,
           "cpu_count": os.cpu_count(), "load_avg_start": _load_avg(),
           "versions": {k: _version(k) for k in ("mindspore", "torch", "numpy", "diffusers", "transformers")},
           "cases": {}}
    for c in cases:
        res["cases"][c] = {"skipped": "COMPARE_SKIP"} if c in skip else run_case(c, a.threads, a.tiny)
    res["load_avg_end"] = _load_avg()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
