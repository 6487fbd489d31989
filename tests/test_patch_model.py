"""Patch-shuffle network: patching is a pure permutation, shuffling is exact, outputs are batch-invariant."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from semgir_engine.errors import UnknownNameError  # noqa: E402
from semgir_engine.patch.model import (  # noqa: E402
    PRESETS,
    PatchShuffleConfig,
    build_model,
    get_config,
    patchify,
    random_permutations,
    shuffle_patches,
    unpatchify,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_patchify_is_a_permutation_of_pixels():
    x = torch.randn(2, 3, 256, 256)
    p = patchify(x, 64)
    assert p.shape == (2, 16, 3, 64, 64)
    # nothing lost or duplicated: same multiset of values, and the inverse restores the image exactly
    assert torch.equal(torch.sort(p.flatten()).values, torch.sort(x.flatten()).values)
    assert torch.equal(unpatchify(p, 4), x)
    # patch (row 1, col 2) is the 64x64 block at rows 64:128, cols 128:192
    assert torch.equal(p[:, 1 * 4 + 2], x[:, :, 64:128, 128:192])


def test_per_sample_shuffle_is_a_permutation_of_patches():
    x = torch.randn(3, 3, 128, 128)
    p = patchify(x, 32)
    perm = random_permutations(3, 16, torch.Generator().manual_seed(1))
    q = shuffle_patches(p, perm)
    for b in range(3):
        assert sorted(perm[b].tolist()) == list(range(16))
        for j in range(16):
            assert torch.equal(q[b, j], p[b, perm[b, j]])
    assert torch.equal(torch.sort(q.flatten()).values, torch.sort(x.flatten()).values)


def test_forward_shapes_and_eval_paths_agree():
    cfg = get_config("test")
    m = build_model(cfg).eval()
    x = torch.randn(4, 3, 64, 64)
    z = m(x)
    assert z.shape == (4,)
    assert torch.allclose(m.predict_logits(x), z, atol=1e-6)
    # a given permutation in forward == the head applied to permuted features
    perm = torch.randperm(cfg.n_patches, generator=torch.Generator().manual_seed(3))
    f = m.patch_features(x)
    assert torch.allclose(m(x, perm=perm), m.head(f[:, perm].reshape(4, -1)).squeeze(1), atol=1e-6)
    # K-shuffle average == the mean of the K seeded single-permutation logits
    g = torch.Generator().manual_seed(7)
    manual = torch.stack([m(x, perm=torch.randperm(cfg.n_patches, generator=g)) for _ in range(5)]).mean(0)
    assert torch.allclose(m.predict_logits(x, k_shuffles=5, seed=7), manual, atol=1e-5)


def test_training_mode_shuffles_differently_per_call_but_is_seeded():
    m = build_model("test").train()
    m.dropout.p = 0.0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = m(x, generator=torch.Generator().manual_seed(0))
        b = m(x, generator=torch.Generator().manual_seed(0))
        c = m(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_invariance():
    m = build_model("test").eval()
    x = torch.randn(5, 3, 64, 64)
    batched = m.predict_logits(x, k_shuffles=3)
    single = torch.cat([m.predict_logits(x[i : i + 1], k_shuffles=3) for i in range(5)])
    assert torch.allclose(batched, single, atol=1e-4)


def test_presets_and_config_round_trip():
    assert set(PRESETS) >= {"tiny", "small", "paper"}
    # the CPU variants are orders of magnitude cheaper than the published-size stem
    assert PRESETS["tiny"].macs_per_image() < 0.1e9 < PRESETS["small"].macs_per_image() < 1e9
    assert PRESETS["paper"].macs_per_image() > 20e9
    for cfg in PRESETS.values():
        assert PatchShuffleConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UnknownNameError, match="valid: paper, small, test, tiny"):
        get_config("huge")
