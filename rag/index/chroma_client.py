"""A Chroma client for a data home or a server, opened the safe way.

An embedded `PersistentClient` over ``<home>/chroma`` is opened only after
`rag.index.index_health.check_local_index` found its files sound; an `HttpClient` (when
``RAG_STORE__CHROMA_URL`` is set) only after a heartbeat answered, and with a timeout on
every request (chromadb's own waits forever on a hung server). Failures become our
one-line errors (`rag.index.store_errors`). `forget_local_system` drops chromadb's per-path cache
of an embedded system whose files are about to go. Left out: the collection and what is
read and written in it (`rag.index.store`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

from rag.errors import ChromaUnavailableError, StoreError
from rag.index.index_health import check_local_index
from rag.index.store_errors import as_store_error
from rag.settings import Settings

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 60.0  # per request to a Chroma server: chromadb's HttpClient would wait forever on a hung one


def make_client(settings: Settings, check: bool = True) -> Any:
    """A Chroma client; an embedded one only after `check_local_index` (unless ``check=False``)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    url = settings.store.chroma_url
    if not url and check:
        try:
            check_local_index(settings)
        except OSError as err:
            raise StoreError(f"cannot read the index in {settings.chroma_dir}: {err}",
                             "check that the data home (RAG_HOME) is a readable folder") from None
    try:
        if url:
            _probe_server(url)
            parsed = urlparse(url)
            client = chromadb.HttpClient(host=parsed.hostname or "127.0.0.1", port=parsed.port or 8000,
                                         ssl=parsed.scheme == "https", settings=chroma_settings)
            session = getattr(getattr(client, "_server", None), "_session", None)
            if session is not None:  # chromadb creates it with timeout=None
                import httpx

                session.timeout = httpx.Timeout(HTTP_TIMEOUT_S, connect=min(5.0, HTTP_TIMEOUT_S))
            return client
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        try:
            return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
        except Exception:
            forget_local_system(settings)  # chromadb caches the half-started system: the next try must start afresh
            raise
    except StoreError:
        raise
    except (ValueError, ConnectionError, OSError) as err:
        if url:
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {url}: {err}") from None
        if isinstance(err, OSError):
            raise as_store_error(err, settings) from None  # type: ignore[misc]
        raise StoreError(f"cannot open the index in {settings.chroma_dir}: {err}",
                         "check that the data home (RAG_HOME) exists and is writable") from None
    except Exception as err:  # chromadb raises bare Exceptions for an unreachable server
        if url and "connect" in str(err).lower():
            raise ChromaUnavailableError(f"cannot reach the Chroma server at {url}") from None
        mapped = as_store_error(err, settings)  # e.g. "attempt to write a readonly database"
        if mapped is None:
            raise
        raise mapped from None


def _probe_server(url: str) -> None:
    """Fail fast (`ChromaUnavailableError`) on a server that is down or hung, before chromadb's untimed calls."""
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/api/v2/heartbeat", timeout=min(5.0, HTTP_TIMEOUT_S)).raise_for_status()
    except httpx.HTTPError as err:
        raise ChromaUnavailableError(f"cannot reach the Chroma server at {url} ({type(err).__name__}: {err})"
                                     [:300]) from None

def forget_local_system(settings: Settings) -> None:
    """Drop this process's cached Chroma system for the data home (its files are about to go)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(str(settings.chroma_dir), None)
    SharedSystemClient._identifier_to_refcount.pop(str(settings.chroma_dir), None)
    if system is not None:
        try:
            system.stop()
        except Exception:  # noqa: BLE001 - it is being discarded either way
            log.debug("could not stop the Chroma system for %s", settings.chroma_dir, exc_info=True)
