"""Vector backends of an index, by name: ``faiss`` (embedded, the default) and ``qdrant`` (local or server)."""

from __future__ import annotations

from typing import Any

from mcip.index.backends.base import Backend
from mcip.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("index backend")


def _register_builtin() -> None:
    from mcip.index.backends.faiss_backend import FaissBackend
    from mcip.index.backends.qdrant_backend import QdrantBackend

    for cls in (FaissBackend, QdrantBackend):
        if cls.name not in BACKENDS:
            BACKENDS.register(cls.name)(cls)


def create_backend(name: str, **options: Any) -> Backend:
    """A backend by name with its options (unknown names and options fail with the valid ones)."""
    _register_builtin()
    return BACKENDS.get(name)(**options)


def list_index_backends() -> list[str]:
    _register_builtin()
    return BACKENDS.names()


__all__ = ["BACKENDS", "Backend", "create_backend", "list_index_backends"]
