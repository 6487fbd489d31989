"""The PyTorch backend: component sessions from torch modules (the reference the exports are validated against).

:class:`TorchSessions` is a :class:`.pipeline.SessionProvider`: each registry component is its torch
wrapper (:mod:`.components`, the same module export traces), run on numpy inputs by spec order. The
pipeline settings and tokenizer files are the ones an export would write (:func:`.components.pipeline_settings`),
so the torch and exported backends run the same loops on the same settings.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from .. import registry
from ..errors import SemgirError
from ..spec import ModelSize
from .components import Bundles, pipeline_settings, run_torch
from .sources import ModelSource

log = logging.getLogger(__name__)


def torch_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; refused clearly when that GPU is not there (never another one)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise SemgirError(f"invalid device {device!r} (cpu, cuda, cuda:N)") from exc
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = dev.index or 0
        if idx >= n:
            raise SemgirError(f"device {device!r} asked for, but this machine has {n} CUDA device(s)"
                              + ("" if n else " (or torch has no CUDA)"))
    elif dev.type != "cpu":
        raise SemgirError(f"device {device!r}: only cpu and cuda[:N] are supported")
    return dev


class TorchSessions:
    """Torch modules of one model source as component sessions (built on first use)."""

    kind = "torch"

    def __init__(self, src: ModelSource, device: str = "cpu", components: Iterable[str] | None = None,
                 bundles: Bundles | None = None, lcm: bool = True):
        """``components``: the ones the caller will use (default: the SemGIR pipeline's); their settings are
        computed now (which builds their weights). ``lcm``: fuse LCM-LoRA weights when present."""
        self.src, self.device = src, torch_device(device)
        self.bundles = bundles or Bundles(src, lcm=lcm)
        self._assets = tempfile.TemporaryDirectory(prefix="semgir-assets-")
        self.asset_dir = Path(self._assets.name)
        names = set(components or registry.PIPELINE_COMPONENTS + ("clip_text",))
        self.settings = pipeline_settings(names, self.bundles, self.asset_dir)
        self.random_weights = src.random_weights
        self._size = "tiny" if src.size is ModelSize.TINY else "full"
        self._sessions: dict = {}

    def has(self, name: str) -> bool:
        return name in registry.names()

    def session(self, name: str):
        if name not in self._sessions:
            module = self.bundles.module(name).to(self.device)
            spec = registry.get(name, self._size)
            dev = self.device
            self._sessions[name] = lambda **inputs: run_torch(module, inputs, spec, dev)
        return self._sessions[name]

    def describe(self) -> dict:
        return {"source": self.settings["source"]}
