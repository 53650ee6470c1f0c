"""opensora_nb.metrics: PSNR/SSIM against known values and Open-Sora-Plan's eval formulas (cv2 filter2D -> scipy)."""
import math

import numpy as np
import pytest

from opensora_nb.metrics import psnr, psnr_per_frame, ssim, ssim_per_frame


def original_frame_ssim(img1, img2):
    "cal_ssim.py's `ssim` for one channel in [0, 1], with cv2.filter2D (reflect-101 border) done by scipy."
    nd = pytest.importorskip("scipy.ndimage")
    k = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2)); k /= k.sum()
    win = np.outer(k, k)
    f = lambda im: nd.correlate(im, win, mode="mirror")[5:-5, 5:-5]
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    mu1, mu2 = f(img1), f(img2)
    s1, s2, s12 = f(img1 ** 2) - mu1 ** 2, f(img2 ** 2) - mu2 ** 2, f(img1 * img2) - mu1 * mu2
    return (((2 * mu1 * mu2 + C1) * (2 * s12 + C2)) / ((mu1 ** 2 + mu2 ** 2 + C1) * (s1 + s2 + C2))).mean()


def original_frame_psnr(img1, img2):
    mse = np.mean((img1 / 1.0 - img2 / 1.0) ** 2)
    return 100 if mse < 1e-10 else 20 * math.log10(1 / math.sqrt(mse))


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.random((2, 5, 3, 24, 30))                         # B T C H W in [0, 1]
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    return a, b


def test_matches_the_original_eval_formulas(pair):
    a, b = pair
    ref_s = np.array([[np.mean([original_frame_ssim(a[i, t, c], b[i, t, c]) for c in range(3)]) for t in range(5)] for i in range(2)])
    ref_p = np.array([[original_frame_psnr(a[i, t], b[i, t]) for t in range(5)] for i in range(2)])
    np.testing.assert_allclose(ssim_per_frame(a, b, "BTCHW", (0, 1)), ref_s, rtol=1e-10)
    np.testing.assert_allclose(psnr_per_frame(a, b, "BTCHW", (0, 1)), ref_p, rtol=1e-10)


def test_layouts_and_ranges_agree(pair):
    a, b = pair[0][0], pair[1][0]                              # T C H W in [0, 1]
    u8 = lambda v: np.round(v * 255).astype(np.uint8).transpose(0, 2, 3, 1)            # T H W C uint8
    m11 = lambda v: (np.round(v * 255) / 255 * 2 - 1).astype(np.float32).transpose(1, 0, 2, 3)  # C T H W [-1, 1]
    assert ssim(u8(a), u8(b)) == pytest.approx(ssim(m11(a), m11(b), "CTHW"), abs=1e-6)
    assert psnr(u8(a), u8(b)) == pytest.approx(psnr(m11(a), m11(b), "CTHW"), abs=1e-4)


def test_known_values():
    x = np.random.default_rng(1).integers(0, 250, (4, 16, 16, 3), dtype=np.uint8)
    assert psnr(x, x) == math.inf and psnr(x, x, cap=100) == 100
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert psnr(x, x + 5) == pytest.approx(20 * math.log10(255 / 5))      # constant error of 5 levels
    # Gaussian noise of std s (in [0, 1] units) on unclipped data: PSNR ~= -20 log10(s)
    y = np.full((8, 64, 64, 3), 0.5) + np.random.default_rng(2).normal(0, 0.1, (8, 64, 64, 3))
    assert psnr(np.full_like(y, 0.5), y, value_range=(0, 1)) == pytest.approx(20.0, abs=0.1)


def test_against_skimage_if_installed(pair):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = pair[0][0, 0, 0], pair[1][0, 0, 0]
    ref = metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
    ours = ssim(a[None, None, None], b[None, None, None], "BTCHW", (0, 1))
    assert ours == pytest.approx(ref, abs=1e-3)   # skimage averages over a slightly different (reflect-padded) region


def test_bad_input_is_named():
    x = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(x, x[:1])
    with pytest.raises(ValueError, match="layout"):
        ssim(x, x, layout="TXYC")


# ---- LPIPS, FVD, CLIP score: the arithmetic against references on the same random weights -------------------

def _torch():
    return pytest.importorskip("torch")


def _save_torch(sd: dict, path):
    torch = _torch()
    torch.save({k: torch.tensor(v) for k, v in sd.items()}, str(path))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_a_torch_reference_through_the_released_file_layout(net, tmp_path):
    "Random weights written as torchvision + lpips files, loaded by name; distances equal torch's formula."
    torch = _torch(); F = torch.nn.functional
    from opensora_nb.metrics import LPIPS, LPIPS_NETS, LPIPS_SHIFT, LPIPS_SCALE
    rng = np.random.default_rng(0)
    layers, ends, chans = LPIPS_NETS[net]()
    backbone, convs = {}, []
    for i, layer in enumerate(layers):
        if hasattr(layer, "weight"):
            w = rng.normal(0, 0.1, layer.weight.shape).astype(np.float32); b = rng.normal(0, 0.1, layer.bias.shape).astype(np.float32)
            backbone[f"features.{i}.weight"], backbone[f"features.{i}.bias"] = w, b
    backbone["classifier.1.weight"] = np.zeros((4, 4), np.float32)               # dropped on load, as released files carry it
    lin = {f"lin{k}.model.1.weight": np.abs(rng.normal(0, 0.1, (1, c, 1, 1))).astype(np.float32) for k, c in enumerate(chans)}
    _save_torch(backbone, tmp_path / "backbone.pth"); _save_torch(lin, tmp_path / "lin.pth")
    model = LPIPS.from_pretrained(tmp_path / "backbone.pth", tmp_path / "lin.pth", net=net)
    assert model.load_report.ok

    def ref(x0, x1):
        shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1); scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
        feats = []
        for x in ((x0 - shift) / scale, (x1 - shift) / scale):
            out, start = [], 0
            for end in ends:
                for i in range(start, end):
                    layer = layers[i]; name = type(layer).__name__
                    if name == "Conv2d":
                        x = F.conv2d(x, torch.tensor(backbone[f"features.{i}.weight"]), torch.tensor(backbone[f"features.{i}.bias"]),
                                     stride=layer.stride[0] if isinstance(layer.stride, tuple) else layer.stride,
                                     padding=layer.padding if isinstance(layer.padding, int) else layer.padding[0])
                    elif name == "ReLU": x = F.relu(x)
                    else: x = F.max_pool2d(x, 2 if net == "vgg" else 3, 2)
                out.append(x); start = end
            feats.append(out)
        d = 0
        for k, (a, b) in enumerate(zip(*feats)):
            na, nb = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10), b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = d + F.conv2d((na - nb) ** 2, torch.tensor(lin[f"lin{k}.model.1.weight"])).mean((2, 3))[:, 0]
        return d.numpy()

    x0 = rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32); x1 = np.clip(x0 + rng.normal(0, 0.2, x0.shape), -1, 1).astype(np.float32)
    from mindspore import Tensor
    ours = model(Tensor(x0), Tensor(x1)).asnumpy()
    np.testing.assert_allclose(ours, ref(torch.tensor(x0), torch.tensor(x1)), rtol=1e-4)
    assert ours.min() > 0


def test_lpips_names_the_missing_files(tmp_path):
    from opensora_nb.metrics import LPIPS
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPS.from_pretrained(tmp_path / "vgg16.pth", net="vgg")
    _save_torch({"features.0.weight": np.zeros((64, 3, 11, 11), np.float32)}, tmp_path / "alex.pth")
    with pytest.raises(FileNotFoundError, match="lpips/weights/v0.1/alex.pth"):
        LPIPS.from_pretrained(tmp_path / "alex.pth", tmp_path / "no_lin.pth", net="alex")


def test_frechet_distance_against_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    from opensora_nb.metrics import frechet_distance, feature_stats
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(300, 20)), rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20)) * 0.3 + 1
    (m1, s1), (m2, s2) = feature_stats(f1), feature_stats(f2)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)
    np.testing.assert_allclose(s1, np.cov(f1.T, ddof=1))


def test_i3d_loads_its_released_names_from_a_torch_file(tmp_path):
    "Every parameter of pytorch-i3d's InceptionI3d state dict (with BN's num_batches_tracked) loads strictly."
    from opensora_nb.metrics import InceptionI3d
    model = InceptionI3d()
    rng = np.random.default_rng(0)
    sd = {p.name: rng.normal(0, 0.01, p.shape).astype(np.float32) for p in model.get_parameters()}
    sd.update({k.replace("running_var", "num_batches_tracked"): np.array(0) for k in list(sd) if k.endswith("running_var")})
    _save_torch(sd, tmp_path / "i3d_pretrained_400.pt")
    loaded = InceptionI3d.from_pretrained(tmp_path / "i3d_pretrained_400.pt")
    assert loaded.load_report.ok
    w = {p.name: p.asnumpy() for p in loaded.get_parameters()}
    np.testing.assert_array_equal(w["Mixed_4d.b2b.conv3d.weight"], sd["Mixed_4d.b2b.conv3d.weight"])
    with pytest.raises(FileNotFoundError, match="i3d_pretrained_400.pt"):
        InceptionI3d.from_pretrained(tmp_path / "missing.pt")


def _tiny_clip_config():
    return {"projection_dim": 16,
            "vision_config": {"hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2,
                              "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
            "text_config": {"hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2,
                            "vocab_size": 700, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "layer_norm_eps": 1e-5}}


def test_clip_towers_match_transformers(tmp_path):
    "transformers' CLIPModel with random weights, saved as a Hugging Face folder, read by CLIPModel.from_pretrained."
    torch = _torch(); transformers = pytest.importorskip("transformers")
    from opensora_nb.metrics import CLIPModel
    from mindspore import Tensor
    cfg = _tiny_clip_config()
    torch.manual_seed(0)
    ref = transformers.CLIPModel(transformers.CLIPConfig(text_config=cfg["text_config"], vision_config=cfg["vision_config"],
                                                         projection_dim=16)).eval()
    ref.save_pretrained(tmp_path)
    ours = CLIPModel.from_pretrained(tmp_path)
    assert ours.load_report.ok, str(ours.load_report)
    rng = np.random.default_rng(0)
    px = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    ids = np.array([[0, 5, 9, 650, 2, 1, 1], [0, 7, 2, 1, 1, 1, 1]], np.int64)
    with torch.no_grad():
        img_ref = ref.get_image_features(pixel_values=torch.tensor(px))
        txt_ref = ref.get_text_features(input_ids=torch.tensor(ids))
    img_ref = getattr(img_ref, "pooler_output", img_ref).numpy(); txt_ref = getattr(txt_ref, "pooler_output", txt_ref).numpy()
    np.testing.assert_allclose(ours.get_image_features(Tensor(px)).asnumpy(), img_ref, atol=1e-5 * max(1, np.abs(img_ref).max()))
    np.testing.assert_allclose(ours.get_text_features(ids).asnumpy(), txt_ref, atol=1e-5 * max(1, np.abs(txt_ref).max()))


def test_clip_tokenizer_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    import json
    from opensora_nb.metrics import CLIPTokenizer, _bytes_to_unicode
    chars = list(_bytes_to_unicode().values())
    merges = ["r e", "re d</w>", "c i", "ci r", "cir c", "circ l", "circl e</w>", "m o", "mo v", "mov e", "move s</w>", "l e", "le f", "lef t</w>"]
    toks = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(toks))}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab)); (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    ref = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    ours = CLIPTokenizer.from_pretrained(tmp_path)
    for text in ["A red circle moves left", "a  RED circle, moves left!!", "circles 123 & friends's", "caf\u00e9 red"]:
        assert ours.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
    ids = ours(["a red circle"])
    assert ids.shape == (1, 77) and ids[0, 0] == vocab["<|startoftext|>"] and (ids[0, 5:] == vocab["<|endoftext|>"]).all()


def test_evaluate_videos_checks_its_inputs():
    from opensora_nb.metrics import evaluate_videos
    v = [np.zeros((3, 16, 16, 3), np.uint8)]
    with pytest.raises(ValueError, match="differ"):
        evaluate_videos(v, [np.zeros((3, 16, 8, 3), np.uint8)], "psnr")
    with pytest.raises(ValueError, match="caption"):
        evaluate_videos(v, v, "clip", clip_path="/nowhere")
    assert evaluate_videos(v, [x + 1 for x in v], "psnr")["psnr"] == pytest.approx(20 * math.log10(255))
