"""A TAXII 2.1 server (Starlette, pure ASGI) over the intel database.

    app = create_app("sqlite:///intel.db", title="ACME distillguard feed")
    uvicorn.run(app, host="127.0.0.1", port=9000)          # or serve(...)

Endpoints (TAXII 2.1 §4, §5): discovery `/taxii2/`, `/<root>/`, `/<root>/status/<id>/`, `/<root>/collections/`,
`/<root>/collections/<id>/`, `.../manifest/`, `.../objects/` (GET, POST), `.../objects/<id>/` (GET, DELETE),
`.../objects/<id>/versions/`. Every request needs an API key, as the password of HTTP Basic (any user name)
or as `Authorization: Bearer <key>`; rights are per collection. Database work runs in the thread pool so
the event loop never blocks on it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from distillguard.intel.db import open_db

from . import store
from .store import MEDIA_TYPE_TAXII, Filters, Page

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000


class TaxiiHTTPError(Exception):
    """Answered as a TAXII error message (§3.6.1)."""

    def __init__(self, status: int, title: str, description: str = "", headers: dict[str, str] | None = None):
        super().__init__(title)
        self.status, self.title, self.description, self.headers = status, title, description, headers


def _error_response(
    status: int, title: str, description: str = "", headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"title": title, "http_status": str(status)}
    if description:
        body["description"] = description
    return Response(orjson.dumps(body), status_code=status, media_type=MEDIA_TYPE_TAXII, headers=headers)


def _taxii_response(
    body: bytes | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(raw, status_code=status, media_type=MEDIA_TYPE_TAXII, headers=headers)


# --- media types ------------------------------------------------------------------------------------------


def _media_ranges(header: str) -> Iterator[tuple[str, dict[str, str]]]:
    for part in header.split(","):
        bits = [b.strip() for b in part.split(";")]
        params = {}
        for p in bits[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        yield bits[0].lower(), params


def _accepts_taxii(header: str | None) -> bool:
    """Accept allows TAXII 2.1 JSON: `application/taxii+json` with version 2.1 or none, or a wildcard."""
    if not header:
        return True  # RFC 9110: no Accept means anything goes
    for mt, params in _media_ranges(header):
        if params.get("q") in ("0", "0.0", "0.00", "0.000"):
            continue
        if mt == "application/taxii+json" and params.get("version", "2.1") == "2.1":
            return True
        if mt in ("*/*", "application/*"):
            return True
    return False


def _is_taxii_content(header: str | None) -> bool:
    if not header:
        return False
    mt, params = next(_media_ranges(header))
    return mt == "application/taxii+json" and params.get("version", "2.1") == "2.1"


# --- the application --------------------------------------------------------------------------------------


class _Server:
    def __init__(self, engine: Engine, title: str, description: str | None, contact: str | None) -> None:
        self.engine, self.title, self.description, self.contact = engine, title, description, contact

    # helpers ----------------------------------------------------------------------------------------------

    async def _access(
        self, request: Request, *, read: bool = False, write: bool = False
    ) -> tuple[int, store.RootInfo | None, store.CollectionInfo | None]:
        """Authenticate (401), check Accept (406), find the api root and collection the path names (404)
        and the key's rights on it (403). The key itself is never logged."""
        root_name = request.path_params.get("api_root")
        cid = request.path_params.get("collection_id")
        token = _token_from(request.headers.get("authorization"))
        acc = await run_in_threadpool(store.resolve, self.engine, token, root_name, cid)
        if acc.key_pk is None:
            raise TaxiiHTTPError(
                401,
                "Unauthorized",
                "a valid API key is needed (HTTP Basic password, or Authorization: Bearer)",
                {"WWW-Authenticate": 'Basic realm="distillguard TAXII"'},
            )
        if not _accepts_taxii(request.headers.get("accept")):
            raise TaxiiHTTPError(406, "Not Acceptable", f"this server only answers in {MEDIA_TYPE_TAXII}")
        if root_name is not None and acc.root is None:
            raise TaxiiHTTPError(404, "Not Found", f"no api root {root_name!r}")
        coll = acc.collection
        if cid is not None:
            if coll is None:
                raise TaxiiHTTPError(404, "Not Found", f"no collection {cid} in api root {root_name!r}")
            if not (coll.can_read or coll.can_write):
                raise TaxiiHTTPError(403, "Forbidden", f"this key has no rights on collection {cid}")
            if read and not coll.can_read:
                raise TaxiiHTTPError(403, "Forbidden", f"this key may not read collection {cid}")
            if write and not coll.can_write:
                raise TaxiiHTTPError(403, "Forbidden", f"this key may not write collection {cid}")
        return acc.key_pk, acc.root, coll

    async def _in_root(self, request: Request) -> tuple[int, store.RootInfo]:
        key_pk, root, _ = await self._access(request)
        assert root is not None  # routes with {api_root} only
        return key_pk, root

    async def _in_collection(
        self, request: Request, *, read: bool = False, write: bool = False
    ) -> tuple[int, store.RootInfo, store.CollectionInfo]:
        key_pk, root, coll = await self._access(request, read=read, write=write)
        assert root is not None and coll is not None  # routes with {collection_id} only
        return key_pk, root, coll

    # server information (§4) --------------------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        await self._access(request)
        names, default = await run_in_threadpool(store.discovery, self.engine)
        base = str(request.base_url)
        body: dict[str, Any] = {"title": self.title}
        if self.description:
            body["description"] = self.description
        if self.contact:
            body["contact"] = self.contact
        if names:
            body["default"] = f"{base}{default or names[0]}/"
            body["api_roots"] = [f"{base}{n}/" for n in names]
        return _taxii_response(body)

    async def api_root(self, request: Request) -> Response:
        _, root = await self._in_root(request)
        return _taxii_response(root.resource())

    async def status(self, request: Request) -> Response:
        key_pk, root = await self._in_root(request)
        sid = request.path_params["status_id"]
        body = await run_in_threadpool(store.get_status, self.engine, root.pk, sid, key_pk)
        if body is None:
            raise TaxiiHTTPError(404, "Not Found", f"no status {sid}")
        return _taxii_response(body)

    # collections (§5) -------------------------------------------------------------------------------------

    async def collections(self, request: Request) -> Response:
        key_pk, root = await self._in_root(request)
        colls = await run_in_threadpool(store.list_collections, self.engine, root.pk, key_pk)
        return _taxii_response({"collections": [c.resource() for c in colls]} if colls else {})

    async def collection(self, request: Request) -> Response:
        _, _, coll = await self._in_collection(request)
        return _taxii_response(coll.resource())

    async def manifest(self, request: Request) -> Response:
        _, _, coll = await self._in_collection(request, read=True)
        f, limit, after = _filters(request, id_and_type=True)
        page = await run_in_threadpool(
            store.query_page, self.engine, coll.pk, f, limit, after, with_body=False
        )
        if not page.rows:
            return _taxii_response(b"{}")
        body: dict[str, Any] = {"more": page.more}
        if page.more:
            body["next"] = store.encode_next(page.rows[-1].date_added_us, f)
        body["objects"] = [
            {
                "id": r.object_id,
                "date_added": store.us_to_timestamp(r.date_added_us),
                "version": r.version,
                "media_type": f"application/stix+json;version={r.spec_version}",
            }
            for r in page.rows
        ]
        return _taxii_response(body, headers=_date_headers(page))

    async def objects(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._add_objects(request)
        _, _, coll = await self._in_collection(request, read=True)
        f, limit, after = _filters(request, id_and_type=True)
        page = await run_in_threadpool(store.query_page, self.engine, coll.pk, f, limit, after)
        return _taxii_response(_envelope(page, f), headers=_date_headers(page))

    async def _add_objects(self, request: Request) -> Response:
        key_pk, root, coll = await self._in_collection(request, write=True)
        if not _is_taxii_content(request.headers.get("content-type")):
            raise TaxiiHTTPError(
                415, "Unsupported Media Type", f"POST a TAXII envelope as {MEDIA_TYPE_TAXII}"
            )
        body = await _read_body(request, root.max_content_length)
        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise TaxiiHTTPError(400, "Bad Request", f"the body is not JSON: {exc}") from exc
        if not isinstance(envelope, dict) or not isinstance(envelope.get("objects"), list):
            raise TaxiiHTTPError(
                422, "Unprocessable Entity", "the body must be an envelope: {'objects': [...]}"
            )
        status = await run_in_threadpool(
            store.ingest, self.engine, coll.pk, envelope["objects"], api_root_pk=root.pk, key_pk=key_pk
        )
        return _taxii_response(status, status=202)

    async def object(self, request: Request) -> Response:
        oid = request.path_params["object_id"]
        if request.method == "DELETE":
            _, _, coll = await self._in_collection(request, read=True, write=True)
            f, _, _ = _filters(request, id_and_type=False, default_version="all")
            n = await run_in_threadpool(store.delete_object, self.engine, coll.pk, oid, f)
            if not n:
                raise TaxiiHTTPError(404, "Not Found", f"no object {oid} (with those filters)")
            return Response(status_code=200, media_type=MEDIA_TYPE_TAXII)
        _, _, coll = await self._in_collection(request, read=True)
        f, limit, after = _filters(request, id_and_type=False, object_id=oid)
        page = await run_in_threadpool(store.query_page, self.engine, coll.pk, f, limit, after)
        if not page.rows and not await run_in_threadpool(store.object_exists, self.engine, coll.pk, oid):
            raise TaxiiHTTPError(404, "Not Found", f"no object {oid} in collection {coll.id}")
        return _taxii_response(_envelope(page, f), headers=_date_headers(page))

    async def versions(self, request: Request) -> Response:
        oid = request.path_params["object_id"]
        _, _, coll = await self._in_collection(request, read=True)
        f, limit, after = _filters(request, id_and_type=False, object_id=oid, default_version="all")
        # every version, whatever match[version] says; `next` stays bound to the filters as sent
        every = dataclasses.replace(f, versions=("all",), version_us=())
        page = await run_in_threadpool(
            store.query_page, self.engine, coll.pk, every, limit, after, with_body=False
        )
        if not page.rows:
            if not await run_in_threadpool(store.object_exists, self.engine, coll.pk, oid):
                raise TaxiiHTTPError(404, "Not Found", f"no object {oid} in collection {coll.id}")
            return _taxii_response(b"{}")
        body: dict[str, Any] = {"more": page.more}
        if page.more:
            body["next"] = store.encode_next(page.rows[-1].date_added_us, f)
        body["versions"] = [r.version for r in page.rows]
        return _taxii_response(body, headers=_date_headers(page))


def _token_from(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        # the user name is informational; the password is the key
        return decoded.partition(":")[2] or None
    if scheme in ("bearer", "token"):  # taxii2-client's TokenAuth sends "Token <key>"
        return value.strip() or None
    return None


def _multi(request: Request, name: str) -> tuple[str, ...]:
    vals: list[str] = []
    for raw in request.query_params.getlist(name):
        vals.extend(v.strip() for v in raw.split(",") if v.strip())
    return tuple(vals)


def _filters(
    request: Request, *, id_and_type: bool, object_id: str | None = None, default_version: str = "last"
) -> tuple[Filters, int, int | None]:
    """Filters, page size and the `next` cursor of a request; 400 on anything malformed."""
    q = request.query_params
    versions = _multi(request, "match[version]") or (default_version,)
    version_us: list[int] = []
    for v in versions:
        if v not in ("first", "last", "all"):
            try:
                version_us.append(store.timestamp_to_us(v))
            except ValueError as exc:
                raise TaxiiHTTPError(
                    400, "Bad Request", f"match[version]: {v!r} is not first, last, all or a timestamp"
                ) from exc
    added_after = None
    if q.get("added_after"):
        try:
            added_after = store.timestamp_to_us(q["added_after"])
        except ValueError as exc:
            raise TaxiiHTTPError(
                400, "Bad Request", f"added_after: {q['added_after']!r} is not a timestamp"
            ) from exc
    ids = (object_id,) if object_id else (_multi(request, "match[id]") if id_and_type else ())
    f = Filters(
        ids=ids,
        types=_multi(request, "match[type]") if id_and_type else (),
        versions=versions,
        spec_versions=_multi(request, "match[spec_version]"),
        added_after_us=added_after,
        version_us=tuple(version_us),
    )
    limit = DEFAULT_PAGE_SIZE
    if q.get("limit"):
        try:
            limit = int(q["limit"])
        except ValueError:
            limit = 0
        if limit <= 0:
            raise TaxiiHTTPError(400, "Bad Request", "limit must be a positive integer")
        limit = min(limit, MAX_PAGE_SIZE)
    after = None
    if q.get("next"):
        try:
            after = store.decode_next(q["next"], f)
        except ValueError as exc:
            raise TaxiiHTTPError(400, "Bad Request", str(exc)) from exc
    return f, limit, after


def _envelope(page: Page, f: Filters) -> bytes:
    """The envelope, spliced from the stored JSON so objects are never parsed on the way out."""
    if not page.rows:
        return b"{}"
    head = (
        b'{"more":true,"next":' + orjson.dumps(store.encode_next(page.rows[-1].date_added_us, f))
        if page.more
        else b'{"more":false'
    )
    return head + b',"objects":[' + b",".join(r.body for r in page.rows) + b"]}"


def _date_headers(page: Page) -> dict[str, str] | None:
    if not page.rows:
        return None
    return {
        "X-TAXII-Date-Added-First": store.us_to_timestamp(page.rows[0].date_added_us),
        "X-TAXII-Date-Added-Last": store.us_to_timestamp(page.rows[-1].date_added_us),
    }


async def _read_body(request: Request, max_length: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_length:
                raise TaxiiHTTPError(
                    413, "Payload Too Large", f"the api root takes at most {max_length} bytes"
                )
        except ValueError as exc:
            raise TaxiiHTTPError(400, "Bad Request", "malformed Content-Length") from exc
    chunks, size = [], 0
    async for chunk in request.stream():  # bounded even without a Content-Length (chunked uploads)
        size += len(chunk)
        if size > max_length:
            raise TaxiiHTTPError(413, "Payload Too Large", f"the api root takes at most {max_length} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _on_taxii_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TaxiiHTTPError)
    return _error_response(exc.status, exc.title, exc.description, exc.headers)


async def _on_http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


async def _on_crash(_request: Request, exc: Exception) -> Response:
    # the type and first line only: never request headers (keys), never whole statements with parameters
    log.error(
        "TAXII request failed: %s: %s", type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else ""
    )
    return _error_response(500, "Internal Server Error", "the server failed on this request")


def create_app(
    engine_or_url: Engine | str,
    title: str = "distillguard TAXII 2.1",
    *,
    description: str | None = None,
    contact: str | None = None,
) -> Starlette:
    """The TAXII 2.1 app over an intel database (a URL or path is opened and migrated; an engine is used as is)."""
    engine = engine_or_url if isinstance(engine_or_url, Engine) else open_db(engine_or_url)
    s = _Server(engine, title, description, contact)
    routes: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("/taxii2/", s.discovery, ["GET"]),
        ("/{api_root}/", s.api_root, ["GET"]),
        ("/{api_root}/status/{status_id}/", s.status, ["GET"]),
        ("/{api_root}/collections/", s.collections, ["GET"]),
        ("/{api_root}/collections/{collection_id}/", s.collection, ["GET"]),
        ("/{api_root}/collections/{collection_id}/manifest/", s.manifest, ["GET"]),
        ("/{api_root}/collections/{collection_id}/objects/", s.objects, ["GET", "POST"]),
        ("/{api_root}/collections/{collection_id}/objects/{object_id}/", s.object, ["GET", "DELETE"]),
        ("/{api_root}/collections/{collection_id}/objects/{object_id}/versions/", s.versions, ["GET"]),
    ]
    # every path also without its trailing slash: taxii2-client polls `.../status/<id>` without one, and a
    # redirect would cost a round trip
    table = [Route(p, fn, methods=m) for p, fn, m in routes] + [
        Route(p.rstrip("/"), fn, methods=m) for p, fn, m in routes
    ]
    # private set intersection for low-entropy indicators (addresses, ASNs), next to TAXII
    from distillguard.intel.psi import psi_route

    table.insert(0, psi_route(engine))
    app = Starlette(
        routes=table,
        exception_handlers={
            TaxiiHTTPError: _on_taxii_error,
            HTTPException: _on_http_error,
            Exception: _on_crash,
        },
    )
    app.state.engine = engine
    return app


# --- running it -------------------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket with TCP_NODELAY (inherited by accepted connections): without it a response's
    header and body writes meet the client's delayed ACK and every request costs ~40 ms more."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def serve(
    target: Engine | str, host: str = "127.0.0.1", port: int = 9000, *, title: str = "distillguard TAXII 2.1"
) -> None:
    """Run the server in the foreground until interrupted (`distillguard intel serve`)."""
    import uvicorn

    sock = _listen(host, port)
    config = uvicorn.Config(
        create_app(target, title=title), log_level="info", access_log=False, lifespan="off"
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def run_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread; yields the base URL (`http://host:port/`)."""
    import uvicorn

    sock = _listen(host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the TAXII server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
