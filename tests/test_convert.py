"Checkpoint reading (torch zip without torch, safetensors, ckpt, sharded), load_weights, atomic save, the CLI."
import json
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from opensora_nb.commands import convert_main
from opensora_nb.weights import (LoadReport, iter_state_dict, load_weights, open_state_dict,
                                 read_state_dict, save_checkpoint_atomic)

torch = pytest.importorskip("torch")


def _np(t):
    "torch tensor -> numpy (bf16 -> float32), independent of the code under test."
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _tricky_state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    qkv = torch.randn(12, 4, generator=g)
    return {
        "dense.weight": torch.randn(4, 3, generator=g),
        "transposed": base.t(),                       # non-contiguous (strides (1, 8))
        "sliced": base[2:5, 1:7:2],                   # storage offset + step
        "q": qkv[:4], "k": qkv[4:8], "v": qkv[8:],    # three views of one storage
        "half": torch.randn(3, 5, generator=g).half(),
        "bf16": torch.randn(2, 7, generator=g).to(torch.bfloat16),
        "steps": torch.arange(10, dtype=torch.int64).reshape(2, 5),
        "int32": torch.arange(4, dtype=torch.int32),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "expanded": torch.randn(1, 3, generator=g).expand(4, 3),  # stride 0
    }


def test_torch_zip_matches_torch(tmp_path):
    sd = _tricky_state_dict()
    torch.save(sd, tmp_path / "w.pth")
    got = read_state_dict(tmp_path / "w.pth")
    assert list(got) == list(sd)
    for k, t in sd.items():
        ref = _np(t)
        assert got[k].shape == ref.shape and got[k].dtype == ref.dtype, k
        np.testing.assert_array_equal(got[k], ref, err_msg=k)
        assert got[k].flags["C_CONTIGUOUS"]
    # bf16 kept as MindSpore's numpy bfloat16, bit exact
    keep = read_state_dict(tmp_path / "w.pth", bf16="keep")["bf16"]
    assert keep.dtype.name == "bfloat16"
    np.testing.assert_array_equal(keep.view(np.uint16), sd["bf16"].view(torch.int16).numpy().view(np.uint16))


def test_wrappers_and_module_prefix(tmp_path):
    w = {"module.blocks.0.weight": torch.ones(2, 3), "module.blocks.0.bias": torch.zeros(2)}
    torch.save({"state_dict": w, "epoch": 3, "args": {"lr": 1e-4}}, tmp_path / "a.pt")
    assert sorted(read_state_dict(tmp_path / "a.pt")) == ["blocks.0.bias", "blocks.0.weight"]
    import argparse
    torch.save({"model": {"x": torch.ones(1)}, "ema": {"x": torch.full((1,), 2.0)}, "opt": {"state": {}},
                "args": argparse.Namespace(lr=1e-4), "dtype": torch.bfloat16}, tmp_path / "train.pt")
    assert read_state_dict(tmp_path / "train.pt")["x"][0] == 2.0            # ema preferred
    assert read_state_dict(tmp_path / "train.pt", key="model")["x"][0] == 1.0
    with pytest.raises(KeyError, match="top-level keys"):
        read_state_dict(tmp_path / "train.pt", key="nope")


def test_lazy_iteration(tmp_path):
    sd = {f"layer{i}.weight": torch.full((3, 3), float(i)) for i in range(4)}
    torch.save(sd, tmp_path / "big.bin")
    lazy = open_state_dict(tmp_path / "big.bin")
    assert lazy["layer2.weight"].shape == (3, 3) and lazy["layer2.weight"].dtype == "float32"
    it = iter_state_dict(tmp_path / "big.bin")
    assert isinstance(it, types.GeneratorType)
    name, arr = next(it)
    assert name == "layer0.weight" and arr.sum() == 0


def test_refuses_code_and_legacy(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"w": torch.ones(1), "evil": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        read_state_dict(tmp_path / "evil.pth")
    torch.save({"w": torch.ones(1)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy .*torch>=1.6"):
        read_state_dict(tmp_path / "old.pth")
    with pytest.raises(FileNotFoundError, match="Download"):
        read_state_dict(tmp_path / "missing.pth")


def test_safetensors_sharded_and_folder(tmp_path):
    from safetensors.torch import save_file
    a = {"a": torch.randn(2, 3), "b16": torch.randn(4).to(torch.bfloat16)}
    save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
    b = {"c": torch.arange(5, dtype=torch.int64)}
    torch.save(b, tmp_path / "model-00002-of-00002.bin")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b16": "model-00001-of-00002.safetensors",
                                            "c": "model-00002-of-00002.bin"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for src in (tmp_path / "model.safetensors.index.json", tmp_path):  # the index, or the folder holding it
        got = read_state_dict(src)
        assert sorted(got) == ["a", "b16", "c"]
        for k, t in {**a, **b}.items():
            np.testing.assert_array_equal(got[k], _np(t))
    index["weight_map"]["d"] = "model-00003-of-00003.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="model-00003-of-00003.safetensors"):
        read_state_dict(tmp_path / "model.safetensors.index.json")


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.GELU(),
                                        torch.nn.Linear(4, 6))
        self.emb = torch.nn.Embedding(10, 4)
        self.gn = torch.nn.GroupNorm(2, 4)
        self.bn = torch.nn.BatchNorm2d(4)


class MsNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.body = nn.SequentialCell(nn.Dense(3, 4), nn.LayerNorm((4,)), nn.GELU(), nn.Dense(4, 6))
        self.emb = nn.Embedding(10, 4)
        self.gn = nn.GroupNorm(2, 4)
        self.bn = nn.BatchNorm2d(4)


def _torch_file(tmp_path, name="net.pth", wrap=None):
    torch.manual_seed(0)
    tnet = TorchNet()
    with torch.no_grad():
        for p in tnet.parameters():
            p.copy_(torch.randn_like(p))
        tnet.bn.running_mean.copy_(torch.randn(4))
        tnet.bn.running_var.copy_(torch.rand(4) + 0.5)
    sd = tnet.state_dict()
    torch.save({wrap: sd} if wrap else sd, tmp_path / name)
    return sd


TORCH_TO_MS = {"body.1.weight": "body.1.gamma", "body.1.bias": "body.1.beta", "emb.weight": "emb.embedding_table",
               "gn.weight": "gn.gamma", "gn.bias": "gn.beta", "bn.weight": "bn.gamma", "bn.bias": "bn.beta",
               "bn.running_mean": "bn.moving_mean", "bn.running_var": "bn.moving_variance"}


def test_round_trip_torch_module_to_cell(tmp_path):
    sd = _torch_file(tmp_path, wrap="state_dict")
    net = MsNet()
    rep = load_weights(net, tmp_path / "net.pth")
    assert isinstance(rep, LoadReport) and rep.ok and rep.loaded == len(dict(net.parameters_and_names()))
    assert rep.ignored == ["bn.num_batches_tracked"]
    params = dict(net.parameters_and_names())
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        np.testing.assert_array_equal(params[TORCH_TO_MS.get(k, k)].asnumpy(), t.numpy(), err_msg=k)
    # forward parity through the loaded Dense/LayerNorm/GELU/Dense
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    tnet = TorchNet()
    tnet.load_state_dict(sd)
    with torch.no_grad():
        ref = tnet.body(torch.from_numpy(x)).numpy()
    out = net.body(ms.Tensor(x)).asnumpy()
    assert np.abs(out - ref).max() < 1e-3  # MindSpore nn.GELU defaults to the tanh approximation
    # and back through a MindSpore checkpoint written atomically
    save_checkpoint_atomic(net, tmp_path / "net.ckpt")
    net2 = MsNet()
    assert load_weights(net2, tmp_path / "net.ckpt").ok
    for (n, p), (_, q) in zip(net.parameters_and_names(), net2.parameters_and_names()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy(), err_msg=n)


def test_strict_errors_name_every_key(tmp_path):
    sd = _torch_file(tmp_path)
    sd = dict(sd)
    sd["body.3.weight"] = torch.zeros(5, 4)       # mis-shaped
    sd.pop("gn.bias")                             # missing
    sd["head.weight"] = torch.zeros(1)            # unexpected
    torch.save(sd, tmp_path / "bad.pth")
    net = MsNet()
    before = net.body[0].weight.asnumpy().copy()
    with pytest.raises(ValueError) as e:
        load_weights(net, tmp_path / "bad.pth")
    msg = str(e.value)
    assert "body.3.weight: checkpoint (5, 4) vs model (6, 4)" in msg
    assert "gn.beta" in msg and "head.weight" in msg and "strict=False" in msg
    np.testing.assert_array_equal(net.body[0].weight.asnumpy(), before)  # nothing assigned
    rep = load_weights(net, tmp_path / "bad.pth", strict=False)
    assert rep.missing == ["gn.beta"] and rep.unexpected == ["head.weight"]
    assert rep.mismatched == [("body.3.weight", (5, 4), (6, 4))]
    np.testing.assert_array_equal(net.body[0].weight.asnumpy(), sd["body.0.weight"].numpy())


def test_other_model_hint_and_rename(tmp_path):
    torch.save({f"decoder.up.{i}.conv.weight": torch.zeros(3) for i in range(6)}, tmp_path / "vae.pth")
    with pytest.raises(ValueError, match="different model"):
        load_weights(MsNet(), tmp_path / "vae.pth")
    sd = _torch_file(tmp_path)
    torch.save({f"model.{k}": v for k, v in sd.items()}, tmp_path / "prefixed.pth")
    with pytest.raises(ValueError, match=r"rename=\{'model.': ''\}"):
        load_weights(MsNet(), tmp_path / "prefixed.pth")
    assert load_weights(MsNet(), tmp_path / "prefixed.pth", rename={"model.": ""}).ok
    assert load_weights(MsNet(), tmp_path / "prefixed.pth", rename=lambda k: k[6:]).ok


def test_dtype_stream_and_dict_sources(tmp_path):
    sd = _torch_file(tmp_path)
    net = MsNet()
    rep = load_weights(net, iter_state_dict(tmp_path / "net.pth"), dtype=ms.float16)
    assert rep.ok and net.body[0].weight.dtype == ms.float16
    np.testing.assert_array_equal(net.body[0].weight.asnumpy(), sd["body.0.weight"].numpy().astype(np.float16))
    net = MsNet()
    bf = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(bf, tmp_path / "bf16.pth")
    assert load_weights(net, tmp_path / "bf16.pth").ok
    assert net.emb.embedding_table.dtype == ms.float32
    np.testing.assert_array_equal(net.emb.embedding_table.asnumpy(), bf["emb.weight"].float().numpy())
    assert load_weights(MsNet(), {k: v.numpy() for k, v in sd.items()}).ok


def test_save_atomic_safetensors_and_bad_target(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)}
    save_checkpoint_atomic(arrays, tmp_path / "x.safetensors")
    from safetensors.numpy import load_file
    got = load_file(str(tmp_path / "x.safetensors"))
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
    with pytest.raises(ValueError, match=".ckpt or .safetensors"):
        save_checkpoint_atomic(arrays, tmp_path / "x.pth")
    assert sorted(os.listdir(tmp_path)) == ["x.safetensors"]


def test_cli_none_and_model_hook(tmp_path, monkeypatch, capsys):
    sd = _torch_file(tmp_path)
    assert convert_main(["--model", "none", "--src", str(tmp_path / "net.pth"), "--target", str(tmp_path / "raw.ckpt")]) == 0
    raw = read_state_dict(tmp_path / "raw.ckpt")
    assert sorted(raw) == sorted(sd)
    np.testing.assert_array_equal(raw["emb.weight"], sd["emb.weight"].numpy())

    from opensora_nb import commands
    calls = {}
    def convert_msnet(src, strict, key, dtype, subfolder, rename):   # a stand-in for a model's conversion
        calls.update(src=src, strict=strict, subfolder=subfolder)
        cell = MsNet()
        return cell, load_weights(cell, src, strict=strict, dtype=dtype)
    monkeypatch.setattr(commands, "_converters", lambda: {"stdit": convert_msnet})
    target = tmp_path / "out" / "net.ckpt"
    assert convert_main(["--model", "stdit", "--src", str(tmp_path / "net.pth"), "--target", str(target)]) == 0
    assert "loaded 13/13" in capsys.readouterr().out
    net = MsNet()
    assert load_weights(net, target).ok
    np.testing.assert_array_equal(net.gn.gamma.asnumpy(), sd["gn.weight"].numpy())
    assert convert_main(["--model", "stdit", "--src", str(tmp_path / "net.pth"), "--target", str(tmp_path / "h.ckpt"),
                         "--dtype", "bf16"]) == 0
    half = ms.load_checkpoint(str(tmp_path / "h.ckpt"))
    assert half["body.0.weight"].dtype == ms.bfloat16
    np.testing.assert_array_equal(half["emb.embedding_table"].float().asnumpy(),
                                  sd["emb.weight"].to(torch.bfloat16).float().numpy())
    assert convert_main(["--model", "stdit", "--src", str(tmp_path / "net.pth"), "--target", str(target), "--no-strict"]) == 0
    assert calls["strict"] is False and calls["subfolder"] is None
    assert convert_main(["--model", "stdit", "--src", str(tmp_path / "net.pth"), "--target", str(target),
                         "--subfolder", "v1"]) == 0
    assert calls["subfolder"] == "v1"

    torch.save({"other.w": torch.zeros(2)}, tmp_path / "other.pth")
    assert convert_main(["--model", "stdit", "--src", str(tmp_path / "other.pth"), "--target", str(tmp_path / "o.ckpt")]) == 1
    assert "different model" in capsys.readouterr().err
    assert not (tmp_path / "o.ckpt").exists()

    with pytest.raises(SystemExit):
        convert_main(["--model", "sora2", "--src", "x", "--target", "y.ckpt"])
    err = capsys.readouterr().err
    assert "sora2" in err and "stdit" in err and "latte" in err


def test_compressed_zip_and_mindspore_reads_our_ckpt(tmp_path):
    sd = _tricky_state_dict()
    torch.save(sd, tmp_path / "w.pth")
    with zipfile.ZipFile(tmp_path / "w.pth") as zin, \
            zipfile.ZipFile(tmp_path / "deflated.pth", "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    got = read_state_dict(tmp_path / "deflated.pth")
    for k, t in sd.items():
        np.testing.assert_array_equal(got[k], _np(t), err_msg=k)
    # a .ckpt streamed by convert_main --model none is read by MindSpore itself (bf16 stays bf16)
    assert convert_main(["--model", "none", "--src", str(tmp_path / "w.pth"), "--target", str(tmp_path / "w.ckpt")]) == 0
    loaded = ms.load_checkpoint(str(tmp_path / "w.ckpt"))
    assert "empty" not in loaded  # MindSpore's format drops empty tensors, as its own writer does
    assert loaded["bf16"].dtype == ms.bfloat16
    for k, t in sd.items():
        if k != "empty":
            np.testing.assert_array_equal(loaded[k].asnumpy().astype(_np(t).dtype), _np(t), err_msg=k)


def test_hf_sharded_folder_from_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                                feed_forward_proj="gated-gelu")
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(cfg)
    ref = model.state_dict()
    for safe in (False, True):
        folder = tmp_path / f"t5_{safe}"
        model.save_pretrained(folder, safe_serialization=safe, max_shard_size="20KB")
        assert any(f.endswith(".index.json") for f in os.listdir(folder)), os.listdir(folder)
        got = read_state_dict(folder)
        assert "shared.weight" in got and len(got) >= len(ref) - 1  # a tied copy may be left out
        for k, v in got.items():
            np.testing.assert_array_equal(v, ref[k].numpy(), err_msg=k)


def test_tied_weights_from_torch(tmp_path):
    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(7, 4)
            self.head = torch.nn.Linear(4, 7)
            self.head.weight = self.emb.weight

    class MsTied(nn.Cell):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 4)
            self.head = nn.Dense(4, 7)
            self.head.weight = self.emb.embedding_table

    tnet = TorchTied()
    torch.save(tnet.state_dict(), tmp_path / "tied.pth")
    assert sorted(tnet.state_dict()) == ["emb.weight", "head.bias", "head.weight"]
    net = MsTied()
    rep = load_weights(net, tmp_path / "tied.pth")
    assert rep.ok and rep.loaded == 2 and rep.ignored == ["head.weight (another name of emb.embedding_table)"]
    np.testing.assert_array_equal(net.head.weight.asnumpy(), tnet.emb.weight.detach().numpy())


def test_skip_objects_reads_tensors_next_to_foreign_objects(tmp_path, capfd):
    import collections
    import pathlib

    class Callback:  # a class the reader must never import or run
        def __init__(self):
            self.best = 0.5

        def __reduce__(self):
            return (os.system, ("echo SHOULD-NOT-RUN",))

    w = {"blocks.0.weight": torch.randn(3, 2)}
    torch.save({"state_dict": w, "callbacks": {"ckpt": Callback()}, "dirpath": pathlib.Path("/a/b"),
                "device": torch.device("cpu"), "hist": collections.OrderedDict(a=1)}, tmp_path / "pl.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="skip_objects=True"):
        read_state_dict(tmp_path / "pl.ckpt")
    got = read_state_dict(tmp_path / "pl.ckpt", skip_objects=True)
    assert list(got) == ["blocks.0.weight"]
    np.testing.assert_array_equal(got["blocks.0.weight"], w["blocks.0.weight"].numpy())
    assert convert_main(["--model", "none", "--src", str(tmp_path / "pl.ckpt"), "--target", str(tmp_path / "o.ckpt")]) == 1
    assert convert_main(["--model", "none", "--src", str(tmp_path / "pl.ckpt"), "--target", str(tmp_path / "o.ckpt"),
                         "--skip-objects"]) == 0
    assert "SHOULD-NOT-RUN" not in capfd.readouterr().out  # fd-level: an os.system echo would show here
    with pytest.raises(pickle.UnpicklingError):  # the CLI flag does not leak into later calls
        read_state_dict(tmp_path / "pl.ckpt")
