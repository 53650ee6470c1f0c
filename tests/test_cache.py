"""opensora-infer-t5 end to end: a tiny T5 folder written here, a captions CSV, resume, bad input."""
import io
import json

import numpy as np
import pytest
import sentencepiece as spm
from safetensors.numpy import save_file

import mindspore as ms

from opensora_nb.commands import infer_t5_main
from opensora_nb.data.cache import load_text_cache
from opensora_nb.models.t5 import T5Config, T5Encoder, T5Embedder


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_t5")
    words = [f"a {c} {s} {m} on a {b} background" for c in ("red", "blue", "green", "white")
             for s in ("circle", "square", "star") for m in ("moves left", "moves right", "spins")
             for b in ("black", "grey")]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(words), model_writer=buf, vocab_size=80, pad_id=0,
                                   eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    (d / "spiece.model").write_bytes(buf.getvalue())
    cfg = T5Config(vocab_size=192, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu")
    (d / "config.json").write_text(json.dumps(dict(cfg.__dict__, model_type="t5")))
    ms.set_seed(3)
    save_file({p.name: p.asnumpy() for p in T5Encoder(cfg).get_parameters()}, str(d / "model.safetensors"))
    return d


CAPTIONS = ["a red circle moves left on a black background", "", "A BLUE square, spins!  ",
            "a green star moves right " * 20, "ein grüner Stern 星"]


def _write_csv(path, captions, header="video,caption"):
    lines = [header] + [f'clips/{i:02d}.mp4,"{c}"' for i, c in enumerate(captions)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_infer_t5_end_to_end_and_resume(t5_folder, tmp_path):
    _write_csv(tmp_path / "video_caption.csv", CAPTIONS)
    out = tmp_path / "t5_cache"
    argv = ["--csv_path", str(tmp_path / "video_caption.csv"), "--caption_column", "caption",
            "--output_path", str(out), "--t5_model_dir", str(t5_folder), "--model_max_length", "120",
            "--batch_size", "2", "--dtype", "fp32"]
    assert infer_t5_main(argv) == dict(written=5, skipped=0, total=5)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [f"clips/{i:02d}.npz" for i in range(5)]  # no temporaries left
    ref = T5Embedder(t5_folder, model_max_length=120)
    emb, mask = ref.get_text_embeddings(CAPTIONS)
    tok = ref.tokenize(CAPTIONS)
    for i in range(5):
        c = load_text_cache(out / f"clips/{i:02d}.npz")
        assert c["tokens"].dtype == np.int32 and c["tokens"].shape == (120,)
        assert c["mask"].dtype == np.uint8 and c["mask"].shape == (120,)
        assert c["text_emb"].dtype == np.float32 and c["text_emb"].shape == (120, 16)
        np.testing.assert_array_equal(c["tokens"], tok["input_ids"][i])
        np.testing.assert_array_equal(c["mask"], mask.asnumpy()[i])
        np.testing.assert_allclose(c["text_emb"], emb.asnumpy()[i], atol=1e-6)
    assert load_text_cache(out / "clips/01.npz")["mask"].sum() == 1  # empty caption: eos only
    assert load_text_cache(out / "clips/03.npz")["mask"].sum() == 120  # long caption: truncated

    # resume: nothing to do, then only the removed file is recomputed (and equals the first run)
    assert infer_t5_main(argv) == dict(written=0, skipped=5, total=5)
    before = load_text_cache(out / "clips/02.npz")["text_emb"]
    (out / "clips/02.npz").unlink()
    assert infer_t5_main(argv) == dict(written=1, skipped=4, total=5)
    np.testing.assert_allclose(load_text_cache(out / "clips/02.npz")["text_emb"], before, atol=1e-6)


def test_csv_without_file_column_names_by_row(t5_folder, tmp_path):
    (tmp_path / "caps.csv").write_text("caption\na red circle\na blue square\n")
    argv = ["--csv_path", str(tmp_path / "caps.csv"), "--t5_model_dir", str(t5_folder), "--dtype", "bf16",
            "--model_max_length", "8"]
    assert infer_t5_main(argv)["written"] == 2
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["00000000.npz", "00000001.npz"]
    assert load_text_cache(tmp_path / "00000001.npz")["text_emb"].shape == (8, 16)


def test_missing_caption_column(t5_folder, tmp_path, capsys):
    _write_csv(tmp_path / "v.csv", ["a red circle"], header="path,text")
    with pytest.raises(SystemExit) as e:
        infer_t5_main(["--csv_path", str(tmp_path / "v.csv"), "--t5_model_dir", str(t5_folder)])
    assert e.value.code == 1
    assert "no column 'caption'; columns present: ['path', 'text']" in capsys.readouterr().err


def test_missing_t5_folder(tmp_path, capsys):
    _write_csv(tmp_path / "v.csv", ["a red circle"])
    with pytest.raises(SystemExit) as e:
        infer_t5_main(["--csv_path", str(tmp_path / "v.csv"), "--t5_model_dir", str(tmp_path / "no_t5")])
    assert e.value.code == 1 and "spiece.model" in capsys.readouterr().err


def test_infer_vae_causalvae_round_trip(tmp_path):
    "opensora-infer-vae --vae_type causalvae: the cached mean is the VAE's posterior mean; the dataset reads it back."
    from opensora_nb.commands import infer_vae_main
    from opensora_nb.data.cache import load_latent_cache
    from opensora_nb.data.datasets import VideoTextDataset, read_clip
    from opensora_nb.data.video import video_transform, write_video
    from opensora_nb.models.causalvae import CausalVAEModel, tiny_causalvae_config
    ms.set_seed(0)
    CausalVAEModel(**tiny_causalvae_config()).save_pretrained(tmp_path / "vae")
    write_video(tmp_path / "clips/a.mp4", np.random.default_rng(1).integers(0, 255, (11, 24, 32, 3), dtype=np.uint8), fps=8)
    (tmp_path / "a.json").write_text(json.dumps([{"path": "clips/a.mp4", "cap": ["noise"]}, {"path": "clips/x.mp4", "cap": ["gone"]}]))
    argv = ["--csv_path", str(tmp_path / "a.json"), "--vae_type", "causalvae", "--vae_checkpoint", str(tmp_path / "vae"),
            "--output_path", str(tmp_path / "lat"), "--image_size", "16", "--num_frames", "5", "--frame_stride", "2"]
    assert infer_vae_main(argv) == dict(written=1, skipped=0, failed={"missing": 1}, total=2)
    c = load_latent_cache(tmp_path / "lat/clips/a.npz")
    vae = CausalVAEModel.from_pretrained(tmp_path / "vae").set_train(False)
    x = video_transform(read_clip(tmp_path / "clips/a.mp4", np.linspace(0, 9, 5, dtype=int)), 16, "plan")
    np.testing.assert_allclose(c["latent_mean"], vae.encode(ms.Tensor(x[None])).mean.asnumpy()[0].transpose(1, 0, 2, 3), atol=1e-5)
    assert c["latent_std"].shape == (2, 4, 2, 2) and c["ori_size"].tolist() == [24, 32] and float(c["fps"]) == 8.0
    ds = VideoTextDataset(tmp_path / "a.json", num_frames=5, frame_stride=2, vae_latent_folder=tmp_path / "lat",
                          latent_sampling="whole", latent_sample=False)
    assert ds.skip_counts() == {"missing_latent": 1}
    np.testing.assert_allclose(ds[0]["latent"], 0.18215 * c["latent_mean"].transpose(1, 0, 2, 3), rtol=1e-6)
    assert infer_vae_main(argv)["skipped"] == 1   # resumed: nothing recomputed
