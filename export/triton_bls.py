"""Triton Python-backend model ``semgir_pipeline``: the SemGIR loops as BLS over the component models.

Copied by :func:`semgir_engine.export.triton.write_triton_repo` to
``<repo>/semgir_pipeline/1/model.py``. The Python backend's environment needs ``semgir-engine``
(its torch-free runtime: numpy, Pillow, tokenizers); the graphs run in the component models,
each called with a BLS request, so they batch and scale with Triton like any other model.

Per request batch (dynamic batching merges requests): decode every image (the engine's decoder
and limits), then run :func:`semgir_engine.semgir.pipeline.run_semgir` with
:class:`~semgir_engine.runtime.ort_semgir.OrtSemgir` whose runners send BLS requests: caption
(``blip_vision`` once, ``blip_text_decoder`` once per generated token), regenerate
(``sd_text_encoder`` once, ``unet`` once per step of the numpy DPM-Solver++, ``vae_decoder``
once), embed (``clip_image``), classify (``semgir_head``). A bad image fails only its own request.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:  # provided by Triton's Python backend
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - outside Triton (tests inject a stand-in)
    pb_utils = None


class BlsRunner:
    """Calls one component model through Triton (BLS); same interface as the engine's OrtRunner.

    A batch larger than the component's ``max_batch_size`` is sent in chunks (the embedder sees
    twice the images, the UNet twice the latents with guidance).
    """

    def __init__(self, model_name: str, output_names: list[str], max_batch_size: int = 0):
        self.model_name, self.output_names, self.max_batch_size = model_name, output_names, max_batch_size

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        n = len(next(iter(arrays.values())))
        step = self.max_batch_size or n
        if n <= step:
            return self._call(arrays)
        parts = [self._call({k: v[i:i + step] for k, v in arrays.items()}) for i in range(0, n, step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}

    def _call(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in arrays.items()]
        request = pb_utils.InferenceRequest(model_name=self.model_name, requested_output_names=self.output_names,
                                            inputs=inputs)
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.model_name}: {response.error().message()}")
        return {n: pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in self.output_names}


class TritonPythonModel:
    def initialize(self, args):
        from semgir_engine.runtime.ort_semgir import OrtSemgir
        from semgir_engine.semgir.pipeline import CaptionConfig, RegenConfig

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        assets = Path(args.get("model_repository", Path(__file__).parents[1])) / args.get("model_version", "1") / "assets"
        if not assets.is_dir():
            assets = Path(__file__).with_name("assets")
        manifest = json.loads((assets / "manifest.json").read_text())
        outputs = {name: [t["name"] for t in entry[next(iter(entry))]["spec"]["outputs"]]
                   for name, entry in manifest["components"].items()}
        limits = {k: int(v) for k, v in manifest.get("triton_max_batch_size", {}).items()}
        self.seed = int(params.get("seed", 0))
        self.max_pixels = int(params.get("max_pixels", 64_000_000))
        regen = RegenConfig(steps=int(params.get("steps", 4)), guidance_scale=float(params.get("guidance_scale", 1.0)))
        self.pipe = OrtSemgir(assets, regen, CaptionConfig(max_new_tokens=int(params.get("max_new_tokens", 20))),
                              precision=params.get("precision", "fp32"), verify=False, kind="triton",
                              runner_factory=lambda name, path: BlsRunner(name, outputs[name], limits.get(name, 0)))

    def execute(self, requests):
        from semgir_engine.errors import InputError
        from semgir_engine.images import load_image
        from semgir_engine.semgir.pipeline import run_semgir

        decoded, owners, errors = [], [], {}
        for r, request in enumerate(requests):
            blobs = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
            for b in blobs:
                try:
                    decoded.append(load_image(bytes(b), max_pixels=self.max_pixels))
                    owners.append(r)
                except InputError as exc:
                    errors.setdefault(r, str(exc))
        p_ai = captions = None
        if decoded:
            out = run_semgir(self.pipe, [d.pixels for d in decoded], [d.sha256 for d in decoded], self.seed)
            p_ai, captions = out.p_ai, out.captions
        responses = []
        for r in range(len(requests)):
            if r in errors:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(errors[r])))
                continue
            idx = [i for i, o in enumerate(owners) if o == r]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("p_ai", np.asarray([[p_ai[i]] for i in idx], np.float64)),
                pb_utils.Tensor("caption", np.asarray([[captions[i].encode()] for i in idx], np.object_)),
                pb_utils.Tensor("sha256", np.asarray([[decoded[i].sha256.encode()] for i in idx], np.object_)),
            ]))
        return responses

    def finalize(self):
        self.pipe = None
