"""User-facing errors.

Every error mcip raises on bad input is an :class:`MCIPError` whose message says what was wrong and
what to do about it. The CLI prints the message (no traceback) and exits with status 2.
"""

from __future__ import annotations


class MCIPError(Exception):
    """Base class: an error caused by the user's input, configuration or environment."""


class ConfigError(MCIPError, ValueError):
    """An invalid setting or argument (unknown name, value out of range, inconsistent options)."""


class InputError(MCIPError, ValueError):
    """Invalid data passed to a function: wrong shape, out-of-range labels, NaN or Inf values."""


class ModelLoadError(MCIPError, RuntimeError):
    """A model could not be built or its weights could not be loaded."""


class UnsupportedError(MCIPError, NotImplementedError):
    """An optional capability this model or backend does not have; the message names the alternative."""


class MissingDependencyError(MCIPError, ImportError):
    """An optional dependency is not installed; the message names the pip command that fixes it."""


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or fail with the pip command that installs it.

    Args:
        module: importable module name, e.g. ``"faiss"``.
        extra: the mcip extra that provides it, e.g. ``"index"``.
        purpose: what needs it, for the message ("FAISS indexes").
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # re-raised with the fix in the message
        raise MissingDependencyError(
            f"{purpose} need the Python package '{module}', which is not installed. "
            f"Install it with: pip install 'mcip[{extra}]'"
        ) from exc
