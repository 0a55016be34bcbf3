"""``mcip serve``: an HTTP API and a search page over one index (needs ``pip install 'mcip[serve]'``).

``create_app(index)`` builds the FastAPI application (``mcip.serve.app``); ``run_server(index_dir)``
serves it with uvicorn; ``start_in_thread(app)`` runs it in the background (``mcip.serve.server``);
``ServerSettings`` holds their connection limits (header deadline, keep-alive, connection cap).
Attributes load on first use, so ``mcip --help`` works without the serve extra.
"""

from __future__ import annotations

_EXPORTS = {
    "create_app": "mcip.serve.app",
    "run_server": "mcip.serve.server",
    "start_in_thread": "mcip.serve.server",
    "ServerSettings": "mcip.serve.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mcip.serve' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
