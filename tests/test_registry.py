"""Every registered component has a tiny fixture that builds and runs on spec-shaped inputs."""

from __future__ import annotations

import numpy as np
import pytest

from semgir_engine import registry
from semgir_engine.errors import UnknownNameError

torch = pytest.importorskip("torch")


def test_unknown_name_lists_valid():
    with pytest.raises(UnknownNameError) as exc:
        registry.get("unett")
    assert "unet" in str(exc.value) and "clip_image" in str(exc.value)


@pytest.mark.parametrize("name", registry.names())
def test_every_component_has_a_tiny_fixture(name):
    from semgir_engine.semgir.components import build_component, run_torch
    from semgir_engine.semgir.sources import ModelSource

    spec = registry.get(name, "tiny")
    module = build_component(name, ModelSource.parse("tiny"))
    for which in ("min", "opt"):
        inputs = registry.sample_inputs(spec, which)
        if "input_ids" in inputs:
            inputs["input_ids"] = inputs["input_ids"] % 150 + 6
        outs = run_torch(module, inputs, spec)
        assert list(outs) == spec.output_names()
        for t in spec.outputs:
            got = outs[t.name].shape
            assert len(got) == len(t.shape)
            for g, want in zip(got, t.shape):
                if isinstance(want, int):
                    assert g == want, (name, t.name, got, t.shape)
            assert np.isfinite(outs[t.name]).all()


def test_spec_digest_stable_and_sensitive():
    a, b = registry.get("unet", "tiny"), registry.get("unet", "full")
    assert a.digest() == registry.get("unet", "tiny").digest()
    assert a.digest() != b.digest()
