"""T5-v1.1 encoder and tokenizer: parity with transformers (torch, CPU), loading layouts, bad input (a caption that is not
a string is pinned in nbs/05_t5.ipynb)."""
import copy
import io
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

import mindspore as ms

from opensora_nb.models.t5 import (T5Encoder, T5Tokenizer, T5Embedder, T5TextEncoder, relative_position_bucket,
                                   text_preprocessing)

EXTRA_IDS = 100


def _caption_corpus():
    "A small caption corpus with enough variety for a few hundred sentencepiece pieces."
    colors = "red green blue yellow purple orange white black pink cyan brown grey".split()
    shapes = "circle square triangle star ball cube cat dog bird car boat tree".split()
    verbs = "moves runs flies rolls jumps slides spins floats".split()
    dirs = "left right up down slowly quickly across around".split()
    rng = np.random.RandomState(0)
    lines = [f"a {rng.choice(colors)} {rng.choice(shapes)} {rng.choice(verbs)} {rng.choice(dirs)} on a "
             f"{rng.choice(colors)} background near the {rng.choice(shapes)}" for _ in range(300)]
    lines += ["The quick brown fox jumps over the lazy dog while the sun sets behind the mountains.",
              "A timelapse of clouds drifting over a city skyline at night, with neon lights reflecting.",
              "Ein Hund läuft über die Straße, café crème brûlée, naïve façade, El Niño, São Paulo.",
              "Numbers 0 1 2 3 4 5 6 7 8 9 and punctuation: commas, periods. questions? exclamations!",
              "underwater footage of colorful fish swimming between coral reefs and sea turtles"]
    return lines


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
    d = tmp_path_factory.mktemp("spiece")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_caption_corpus()), model_writer=buf, vocab_size=300,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    (d / "spiece.model").write_bytes(buf.getvalue())
    return d


@pytest.fixture(scope="module")
def hf_t5(spiece):
    "A tiny random T5-v1.1 (gated-gelu) encoder in torch, with non-trivial norm weights."
    n_sp = spm.SentencePieceProcessor(model_file=str(spiece / "spiece.model")).get_piece_size()
    cfg = transformers.T5Config(vocab_size=n_sp + EXTRA_IDS + 12, d_model=32, d_kv=8, d_ff=48, num_layers=3,
                                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False)
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name: p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "relative_attention_bias" in name: p.copy_(torch.randn_like(p))
    return model


def _inputs(vocab, B=3, L=40):
    rng = np.random.RandomState(1)
    ids = rng.randint(3, vocab, size=(B, L)).astype(np.int64)
    mask = np.ones((B, L), np.int64)
    for b, n in enumerate([L, L // 2 + 1, 1][:B]):
        ids[b, n - 1] = 1; ids[b, n:] = 0; mask[b, n:] = 0
    return ids, mask


def _torch_out(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()


def _ours_out(model, ids, mask):
    return model(ms.Tensor(ids.astype(np.int32)), ms.Tensor(mask.astype(np.int32))).asnumpy()


def _write_torch_shards(sd, folder, n_shards):
    "Write pytorch_model-0000N-of-0000M.bin shards + pytorch_model.bin.index.json like transformers 4.x did."
    names = list(sd)
    groups = np.array_split(np.arange(len(names)), n_shards)
    weight_map = {}
    for i, g in enumerate(groups):
        fn = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        torch.save({names[j]: sd[names[j]].contiguous() for j in g}, folder / fn)
        weight_map.update({names[j]: fn for j in g})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                    "weight_map": weight_map}))


@pytest.fixture(scope="module")
def layouts(hf_t5, spiece, tmp_path_factory):
    "The same weights as safetensors, sharded safetensors, pytorch_model.bin and sharded .bin folders."
    root = tmp_path_factory.mktemp("t5layouts")
    out = {}
    out["safetensors"] = root / "st"; hf_t5.save_pretrained(out["safetensors"])
    out["safetensors_sharded"] = root / "st_sharded"; hf_t5.save_pretrained(out["safetensors_sharded"], max_shard_size="20KB")
    sd = hf_t5.state_dict()
    out["bin"] = root / "bin"; out["bin"].mkdir()
    torch.save(sd, out["bin"] / "pytorch_model.bin")
    out["bin_sharded"] = root / "bin_sharded"; out["bin_sharded"].mkdir()
    _write_torch_shards(sd, out["bin_sharded"], 3)
    for d in out.values():
        if d != out["safetensors"]: shutil.copy(out["safetensors"] / "config.json", d / "config.json")
        shutil.copy(spiece / "spiece.model", d / "spiece.model")
    assert len(list(out["safetensors_sharded"].glob("model-*.safetensors"))) > 1
    return out


@pytest.mark.parametrize("layout", ["safetensors", "safetensors_sharded", "bin", "bin_sharded"])
def test_encoder_parity_fp32(hf_t5, layouts, layout):
    ours = T5Encoder.from_pretrained(layouts[layout])
    ids, mask = _inputs(hf_t5.config.vocab_size)
    ref, got = _torch_out(hf_t5, ids, mask), _ours_out(ours, ids, mask)
    err = np.abs(ref - got).max()
    print(f"T5 parity {layout}: max abs err {err:.2e} (output scale {np.abs(ref).max():.2f})")
    assert err <= 1e-5


def test_bf16_storage_matches_bf16_rounded_reference(hf_t5, layouts):
    "bf16 weights on CPU compute in fp32: equal to torch fp32 run on bf16-rounded weights."
    ours = T5Encoder.from_pretrained(layouts["bin_sharded"], dtype="bf16")
    assert ours.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.dtype == ms.bfloat16
    rounded = transformers.T5EncoderModel(hf_t5.config).eval()
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in hf_t5.state_dict().items()})
    ids, mask = _inputs(hf_t5.config.vocab_size)
    assert np.abs(_torch_out(rounded, ids, mask) - _ours_out(ours, ids, mask)).max() <= 1e-5


def test_bf16_checkpoint_file(hf_t5, layouts, tmp_path):
    "A checkpoint saved in bf16 loads into bf16 storage without a float32 detour and into fp32."
    copy.deepcopy(hf_t5).to(torch.bfloat16).save_pretrained(tmp_path)
    ids, mask = _inputs(hf_t5.config.vocab_size)
    a = _ours_out(T5Encoder.from_pretrained(tmp_path, dtype="bf16"), ids, mask)
    b = _ours_out(T5Encoder.from_pretrained(tmp_path, dtype="fp32"), ids, mask)
    assert np.abs(a - b).max() <= 1e-5


def test_conditional_generation_checkpoint_ignores_decoder(spiece, tmp_path):
    cfg = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=1,
                                num_heads=2, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                dropout_rate=0.0)
    torch.manual_seed(1)
    full = transformers.T5ForConditionalGeneration(cfg).eval()
    full.save_pretrained(tmp_path)
    ours = T5Encoder.from_pretrained(tmp_path)
    assert any(k.startswith("decoder.") for k in ours.load_report.ignored)
    ids, mask = _inputs(64, B=2, L=12)
    with torch.no_grad():
        ref = full.encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    assert np.abs(ref - _ours_out(ours, ids, mask)).max() <= 1e-5


def test_relative_position_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention
    rel = np.arange(-300, 301)
    for nb, md in [(32, 128), (8, 20), (16, 64)]:
        ref = T5Attention._relative_position_bucket(torch.tensor(rel), True, nb, md).numpy()
        np.testing.assert_array_equal(relative_position_bucket(rel, True, nb, md), ref)


CAPTIONS = ["", "a red circle moves left on a black background", "  a   red\tcircle \n moves   left  ",
            "A RED Circle, moving LEFT! (fast)", "Ein Hund läuft über die Straße — 日本語のテキスト 猫 ñ 🙂",
            "caf\u0065\u0301 ＦＵＬＬＷＩＤＴＨ ﬁ ligature", "red <extra_id_0> circle</s> moves <extra_id_99>",
            "the quick brown fox jumps over the lazy dog " * 30, "x", "   "]


def test_tokenizer_parity_with_transformers(spiece):
    ref_tok = transformers.T5Tokenizer.from_pretrained(str(spiece), extra_ids=EXTRA_IDS)
    ours = T5Tokenizer.from_pretrained(spiece)
    assert len(ours) == len(ref_tok)
    ref = ref_tok(CAPTIONS, max_length=120, padding="max_length", truncation=True, add_special_tokens=True,
                  return_attention_mask=True)
    got = ours(CAPTIONS, max_length=120)
    for i, c in enumerate(CAPTIONS):
        assert got["input_ids"][i].tolist() == ref["input_ids"][i], f"caption {i} {c[:40]!r}"
        assert got["attention_mask"][i].tolist() == ref["attention_mask"][i], f"caption {i} {c[:40]!r}"
    long = CAPTIONS.index("the quick brown fox jumps over the lazy dog " * 30)
    assert got["attention_mask"][long].sum() == 120 and got["input_ids"][long, -1] == 1  # truncated, eos kept
    assert ours.special["<extra_id_0>"] == ref_tok.convert_tokens_to_ids("<extra_id_0>")


# values produced by the original Open-Sora v1.0 `T5Embedder.text_preprocessing` (clean_caption twice)
CLEANED = {
    "A Red  CIRCLE moves LEFT": "a red circle moves left",
    "Look at https://example.com/cat.jpg @bob &amp; <b>cats</b>": "look at cats",
    "a cat—on a “mat”": 'a cat-on a "mat"',
    "this-is-my-cute-cat_and_dog": "this is my cute cat and dog",
    "IMG_1234.jpg free shipping worldwide": "worldwide",
    "  A Dog running, fast.Very fast!  ": "a dog running, fast. very fast!",
    "日本語 caption with 漢字 and ñ": "caption with and ñ",
    "page 12 of 1920x1080 wallpaper jc6640": "of wallpaper",
    "'quoted'": "quoted",
    "#123 hello #12345 123456789": "hello",
    "&quot;hi&quot; 192.168.0.1 \\n next": '"hi" next',
    "": "",
}


def test_caption_cleaning_matches_original():
    for raw, clean in CLEANED.items():
        assert text_preprocessing(raw) == clean, raw


def test_embedder_and_text_encoder(hf_t5, layouts):
    folder = layouts["safetensors"]
    emb = T5Embedder(folder, model_max_length=120)
    caps = ["A red circle moves left.", ""]
    y, mask = emb.get_text_embeddings(caps)
    assert y.shape == (2, 120, 32) and mask.shape == (2, 120)
    tok = emb.tokenize(caps)
    np.testing.assert_array_equal(mask.asnumpy(), tok["attention_mask"])
    ref = _torch_out(hf_t5, tok["input_ids"].astype(np.int64), tok["attention_mask"].astype(np.int64))
    assert np.abs(ref - y.asnumpy()).max() <= 1e-5
    enc = T5TextEncoder(folder, model_max_length=120)
    out = enc.encode(caps)
    assert out["y"].shape == (2, 1, 120, 32) and out["mask"].shape == (2, 120) and enc.output_dim == 32
    with pytest.raises(ValueError, match="y_embedder"):
        enc.null(2)


def test_missing_config(layouts, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((layouts["safetensors"] / "model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match="config.json"):
        T5Encoder.from_pretrained(tmp_path)


def test_missing_spiece(layouts, tmp_path):
    for f in ("config.json", "model.safetensors"):
        shutil.copy(layouts["safetensors"] / f, tmp_path / f)
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        T5Embedder(tmp_path)


def test_missing_shard(layouts, tmp_path):
    src = layouts["bin_sharded"]
    for f in src.iterdir():
        if f.name != "pytorch_model-00002-of-00003.bin": shutil.copy(f, tmp_path / f.name)
    with pytest.raises(FileNotFoundError, match="pytorch_model-00002-of-00003.bin"):
        T5Encoder.from_pretrained(tmp_path)


def test_config_that_does_not_fit_the_weights(layouts, tmp_path):
    for f in ("config.json", "model.safetensors"):
        shutil.copy(layouts["safetensors"] / f, tmp_path / f)
    cfg = json.loads((tmp_path / "config.json").read_text()); cfg["d_ff"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="wi_0.weight"):
        T5Encoder.from_pretrained(tmp_path)
