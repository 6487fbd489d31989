"""Preprocessing: zero padding vs resize, crops, normalisation; the module imports without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from semgir_engine.patch.preprocess import PreprocessConfig, crop, fit_min_side, normalize, prepare


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_pad_centres_the_image_in_zeros():
    a = _img(100, 300)
    out = fit_min_side(a, 256, "pad")
    assert out.shape == (256, 300, 3)
    top = (256 - 100) // 2
    assert np.array_equal(out[top : top + 100], a)
    assert out[:top].max() == 0 and out[top + 100 :].max() == 0


def test_resize_scales_the_short_side_to_the_crop():
    a = _img(100, 300)
    out = fit_min_side(a, 256, "resize")
    assert out.shape == (256, 768, 3)
    assert out.min() >= 0 and abs(float(out.mean()) - float(a.mean())) < 3.0  # content, not padding


def test_large_images_are_untouched_and_crops_are_exact():
    a = _img(300, 400)
    assert fit_min_side(a, 256, "pad") is a and fit_min_side(a, 256, "resize") is a
    assert np.array_equal(crop(a, 256), a[22:278, 72:328])
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = crop(a, 256, rng)
        assert c.shape == (256, 256, 3)


def test_prepare_normalises_with_the_config_constants():
    cfg = PreprocessConfig(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    a = np.full((64, 64, 3), 255, np.uint8)
    x = prepare(a, cfg)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert np.allclose(x, (1.0 - 0.5) / 0.25)
    assert np.allclose(normalize(np.zeros((2, 2, 3), np.uint8), cfg), -2.0)
    with pytest.raises(ValueError, match="valid: pad, resize"):
        PreprocessConfig(fit="stretch")


def test_preprocess_does_not_import_torch():
    code = "import sys, semgir_engine.patch.preprocess, semgir_engine.patch.detector; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
