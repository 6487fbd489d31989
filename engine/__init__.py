"""semgir-engine: tell AI-generated images from real ones (SemGIR and patch-shuffle detectors).

``import semgir_engine`` is light (numpy and Pillow only). The heavy libraries (torch,
diffusers, transformers, open_clip, onnxruntime) are imported only by the paths that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "Result", "Scorer", "ScorerConfig"]


def __getattr__(name: str):  # lazy: keeps `import semgir_engine` free of model code
    if name in ("Result",):
        from .results import Result

        return Result
    if name in ("Scorer", "ScorerConfig"):
        from . import scorer

        return getattr(scorer, name)
    raise AttributeError(name)
