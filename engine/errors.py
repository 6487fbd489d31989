"""Typed errors. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class SemgirError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(SemgirError):
    """One input item cannot be scored (corrupt, truncated, too large, not an image...).

    Raised per item: the caller records it in that item's row and goes on with the rest.
    """


class UnknownNameError(SemgirError, KeyError):
    """A name (component, method, backend, format) is not registered; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]):
        self.kind, self.name, self.valid = kind, name, tuple(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(sorted(self.valid))}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class WeightsNotFoundError(SemgirError):
    """Real weights were asked for but are not on disk (we never download)."""

    def __init__(self, component: str, looked_in: list[str], hint: str = ""):
        self.component, self.looked_in = component, list(looked_in)
        msg = f"no weights for {component!r}; looked in: " + "; ".join(looked_in)
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class MissingDependencyError(SemgirError, ImportError):
    """An optional extra is needed for this path but is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package {package!r}; install it with "
            f"`pip install 'semgir-engine[{extra}]'`"
        )


class ResumeError(SemgirError):
    """An existing output file cannot be resumed (other format, unreadable, or refused)."""


class SystematicError(SemgirError):
    """A model or session cannot run (missing or corrupt graph, wrong shapes, out of memory, every item
    failing the same way): not one input's fault, so the run stops (exit 1) and what was written is kept."""
