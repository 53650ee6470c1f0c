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
