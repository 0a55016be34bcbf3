"""Qdrant: a server (``url``) for collections beyond one machine, or local mode inside the index folder.

Options: ``url`` (e.g. ``http://localhost:6333``; none = local mode, exact search in
``INDEX_DIR/qdrant/``), ``api_key`` (or ``$QDRANT_API_KEY``; never written to disk), ``collection``
(default ``mcip``), ``prefer_grpc``, ``timeout`` (seconds).

Point ids are the index rows, payload ``{"id": record id}``, distance ``Dot`` (the vectors are unit
length, so scores equal FAISS inner products). On a server each build uploads a new physical collection
``COLLECTION-<8 hex>`` and, once the index folder is swapped in, points the alias ``COLLECTION`` at it
and deletes the previous one: other clients of the alias switch atomically. ``add`` upserts the new rows
into the current collection; rows beyond the index folder's count (left by a crashed add) are ignored.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from mcip.errors import ConfigError, InputError, require
from mcip.index.backends.base import Backend, float32_chunks

LOCAL_DIR = "qdrant"
UPLOAD_ROWS = 1024


def _qdrant():
    return require("qdrant_client", "qdrant", "Qdrant indexes")


def connect(url: str, api_key: str | None, prefer_grpc: bool, timeout: int | None):
    """A client of a Qdrant server (tests replace this function)."""
    return _qdrant().QdrantClient(url=url, api_key=api_key, prefer_grpc=prefer_grpc, timeout=timeout)


class QdrantBackend(Backend):
    name = "qdrant"
    defaults: ClassVar[dict] = {
        "url": None,
        "api_key": None,
        "collection": "mcip",
        "prefer_grpc": False,
        "timeout": None,
    }
    secrets = ("api_key",)

    def __init__(self, **options) -> None:
        super().__init__(**options)
        if not str(self.options["collection"]).strip():
            raise ConfigError("The Qdrant collection name is empty; pass collection=NAME.")
        self.client = None
        self.limit = None  # rows this index folder knows; larger point ids are ignored
        self._lock = threading.Lock()

    @property
    def local(self) -> bool:
        return not self.options["url"]

    def _client(self, folder: Path):
        if self.local:
            return _qdrant().QdrantClient(path=str(folder / LOCAL_DIR), force_disable_check_same_thread=True)
        api_key = self.options["api_key"] or os.environ.get("QDRANT_API_KEY")
        return connect(self.options["url"], api_key, self.options["prefer_grpc"], self.options["timeout"])

    def _upload(self, client, collection: str, vectors: np.ndarray, start: int, ids: Sequence[str]) -> None:
        for lo, chunk in float32_chunks(vectors, start, UPLOAD_ROWS):
            rows = range(lo, lo + len(chunk))
            client.upload_collection(
                collection, vectors=chunk, ids=list(rows), payload=[{"id": ids[r]} for r in rows], wait=True
            )

    def build(self, folder: Path, vectors: np.ndarray, ids: Sequence[str]) -> None:
        models = _qdrant().models
        physical = f"{self.options['collection']}-{uuid.uuid4().hex[:8]}"
        client = self._client(folder)
        try:
            client.create_collection(
                physical,
                vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.DOT),
            )
            self._upload(client, physical, vectors, 0, ids)
        finally:
            client.close()
        self.state = {"physical_collection": physical}

    def append(
        self, previous: Path, folder: Path, vectors: np.ndarray, start: int, ids: Sequence[str]
    ) -> None:
        if self.local:
            shutil.copytree(previous / LOCAL_DIR, folder / LOCAL_DIR)
        client = self._client(folder)
        try:
            self._upload(client, self._physical(client), vectors, start, ids)
        finally:
            client.close()

    def _physical(self, client) -> str:
        physical = self.state.get("physical_collection")
        if not physical or not client.collection_exists(physical):
            where = self.options["url"] or "the index folder"
            raise InputError(
                f"Qdrant collection '{physical}' was not found at {where}; it was deleted or the index "
                "points at another server. Rebuild the index with mcip index build --backend qdrant."
            )
        return physical

    def commit(self, previous_state: dict | None) -> None:
        if self.local:
            return
        models = _qdrant().models
        alias, physical = self.options["collection"], self.state["physical_collection"]
        client = self._client(Path())
        try:
            aliases = {a.alias_name for a in client.get_aliases().aliases}
            if alias not in aliases and client.collection_exists(alias):
                raise ConfigError(
                    f"Qdrant already has a collection named '{alias}', and mcip needs the name for an alias "
                    f"of its current collection ({physical}); pass another collection name."
                )
            create = models.CreateAlias(collection_name=physical, alias_name=alias)
            ops = [models.CreateAliasOperation(create_alias=create)]
            if alias in aliases:
                ops.insert(0, models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
            client.update_collection_aliases(change_aliases_operations=ops)
            old = (previous_state or {}).get("physical_collection")
            if old and old != physical and client.collection_exists(old):
                client.delete_collection(old)
        finally:
            client.close()

    def open(self, folder: Path, count: int) -> None:
        self.limit = count
        if self.local and not (folder / LOCAL_DIR).is_dir():
            raise InputError(f"{folder / LOCAL_DIR} is missing; the index folder is incomplete (rebuild it).")
        self.client = self._client(folder)
        self.collection = self._physical(self.client)

    def search(
        self, queries: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        models = _qdrant().models
        only = None
        if rows is not None:  # the rows a metadata filter kept (point ids are rows)
            only = models.Filter(must=[models.HasIdCondition(has_id=[int(r) for r in rows])])
        requests = [
            models.QueryRequest(query=q.tolist(), limit=k, with_payload=False, filter=only) for q in queries
        ]
        if self.local:  # local mode keeps its state in Python objects: one query at a time
            with self._lock:
                responses = self.client.query_batch_points(self.collection, requests=requests)
        else:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, response in enumerate(responses):
            points = [p for p in response.points if self.limit is None or int(p.id) < self.limit]
            for j, point in enumerate(points[:k]):
                scores[i, j], rows[i, j] = point.score, int(point.id)
        return scores, rows

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
