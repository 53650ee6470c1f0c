"""Write a synthetic, full-size T5-v1.1-XXL encoder folder for the memory/speed benchmark (not committed).

    python bench/make_t5_xxl.py --out /tmp/t5xxl [--dtype bf16] [--shard_gb 2]

Same shapes, names and layout as a Hugging Face download (`config.json` of DeepFloyd/t5-v1_1-xxl,
`model-0000N-of-0000M.safetensors` shards + `model.safetensors.index.json`, a `spiece.model` trained here on a
few captions since no package ships the real one), with random weights at the T5 initialisation scale
(embedding std 1, projections std 1/sqrt(fan_in), norms 1). The file is streamed tensor by tensor, so writing
needs only a few hundred MB of RAM; the bf16 folder is 9.5 GB on disk (19 GB in fp32).
"""
import argparse
import io
import json
import os
import struct
import time

import numpy as np

XXL = dict(architectures=["T5EncoderModel"], model_type="t5", vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240,
           num_layers=24, num_decoder_layers=24, num_heads=64, relative_attention_num_buckets=32,
           relative_attention_max_distance=128, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
           dense_act_fn="gelu_new", is_gated_act=True, dropout_rate=0.1, initializer_factor=1.0,
           tie_word_embeddings=False, torch_dtype="float32")


def xxl_tensors(cfg=XXL):
    "[(name, shape, init std)] of the T5 encoder in Hugging Face order."
    d, ff, inner, L = cfg["d_model"], cfg["d_ff"], cfg["num_heads"] * cfg["d_kv"], cfg["num_layers"]
    out = [("shared.weight", (cfg["vocab_size"], d), 1.0)]
    for i in range(L):
        p = f"encoder.block.{i}."
        out += [(p + f"layer.0.SelfAttention.{n}.weight", (inner, d), d ** -0.5) for n in "qkv"]
        out += [(p + "layer.0.SelfAttention.o.weight", (d, inner), inner ** -0.5)]
        if i == 0:
            out += [(p + "layer.0.SelfAttention.relative_attention_bias.weight",
                     (cfg["relative_attention_num_buckets"], cfg["num_heads"]), d ** -0.5)]
        out += [(p + "layer.0.layer_norm.weight", (d,), None),
                (p + "layer.1.DenseReluDense.wi_0.weight", (ff, d), d ** -0.5),
                (p + "layer.1.DenseReluDense.wi_1.weight", (ff, d), d ** -0.5),
                (p + "layer.1.DenseReluDense.wo.weight", (d, ff), ff ** -0.5),
                (p + "layer.1.layer_norm.weight", (d,), None)]
    out.append(("encoder.final_layer_norm.weight", (d,), None))
    return out


class _Noise:
    "A pool of unit normals reused at random offsets: random-looking weights at disk speed."
    def __init__(self, n=1 << 24, seed=0):
        self.rng = np.random.default_rng(seed)
        self.pool = self.rng.standard_normal(n, dtype=np.float32)

    def tensor(self, shape, std):
        n = int(np.prod(shape))
        if std is None: return np.ones(n, np.float32)
        out = np.empty(n, np.float32)
        pos = 0
        while pos < n:
            k = min(n - pos, self.pool.size // 2)
            start = int(self.rng.integers(0, self.pool.size - k + 1))
            np.multiply(self.pool[start:start + k], std, out=out[pos:pos + k])
            pos += k
        return out


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    "float32 -> bfloat16 bits with round-to-nearest-even."
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors_streaming(path, entries, dtype, noise):
    "Write one .safetensors shard; tensor bytes are generated one at a time while writing."
    tag, size = ("BF16", 2) if dtype == "bf16" else ("F32", 4)
    header, off = {}, 0
    for name, shape, _ in entries:
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape, std in entries:
            x = noise.tensor(shape, std)
            f.write((_bf16_bits(x) if dtype == "bf16" else x).tobytes())
    os.replace(tmp, path)
    return off


def write_spiece(folder):
    import sentencepiece as spm
    caps = [f"a {c} {s} {m} on a {b} background" for c in ("red", "green", "blue", "white", "yellow")
            for s in ("circle", "square", "triangle", "star") for m in ("moves left", "moves right", "spins", "jumps")
            for b in ("black", "grey", "sunny")]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(caps), model_writer=buf, vocab_size=120, pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    (folder / "spiece.model").write_bytes(buf.getvalue())


def main(argv=None):
    from pathlib import Path
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("T5_XXL_DIR", "/tmp/t5xxl"))
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--shard_gb", type=float, default=2.0)
    args = p.parse_args(argv)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    size = 2 if args.dtype == "bf16" else 4
    shards, cur, cur_bytes = [], [], 0
    for e in xxl_tensors():
        n = int(np.prod(e[1])) * size
        if cur and cur_bytes + n > args.shard_gb * 2**30:
            shards.append(cur); cur, cur_bytes = [], 0
        cur.append(e); cur_bytes += n
    shards.append(cur)
    noise, weight_map, total = _Noise(), {}, 0
    for i, entries in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_safetensors_streaming(out / fn, entries, args.dtype, noise)
        weight_map.update({name: fn for name, _, _ in entries})
        print(f"wrote {fn} ({time.time() - t0:.0f} s)", flush=True)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}, indent=1))
    cfg = dict(XXL, torch_dtype="bfloat16" if args.dtype == "bf16" else "float32")
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    write_spiece(out)
    n_params = sum(int(np.prod(s)) for _, s, _ in xxl_tensors())
    print(json.dumps({"out": str(out), "dtype": args.dtype, "params": n_params, "bytes": total,
                      "shards": len(shards), "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
