"""Patch-shuffle AI-image detector (Zheng et al., NeurIPS 2024, "Breaking Semantic Artifacts").

Runtime: :class:`PatchDetector` (``PatchDetector.load()`` gives the shipped default model).
Training, evaluation and the baseline live in ``train``, ``evaluate`` and ``baseline``; the network
in ``model`` (torch). Importing this package does not import torch.
"""

from .detector import DEFAULT_MANIFEST, ModelManifestError, PatchDetector
from .preprocess import PreprocessConfig

__all__ = ["DEFAULT_MANIFEST", "ModelManifestError", "PatchDetector", "PreprocessConfig"]
