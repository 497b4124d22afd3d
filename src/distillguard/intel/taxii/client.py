"""Our TAXII 2.1 client (httpx), behind `distillguard intel pull` and `push`.

    for obj in pull("https://peer/api1/", "indicators", key=token):   # follows `next` paging
        ...
    statuses = push("https://peer/api1/", collection_id, objects, key=token)

`url` is an API root (`https://host/api1/`) or a discovery URL (`https://host/taxii2/`, whose default API
root is then used). `collection` is a collection id, title or alias. It speaks to our server and to
other TAXII 2.1 servers (tested against medallion). Every failure is a `TaxiiError` carrying the HTTP
status and the server's error title and description.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

MEDIA_TYPE_TAXII = "application/taxii+json;version=2.1"
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class TaxiiError(RuntimeError):
    """A TAXII request failed: `status` is the HTTP status (None when no answer came back)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.title, self.description = status, title, description


def _timestamp(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TaxiiClient:
    """A session with one TAXII 2.1 API root (a connection pool; use as a context manager)."""

    def __init__(
        self,
        url: str,
        *,
        key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        verify: bool = True,
    ) -> None:
        auth: httpx.Auth | None = None
        headers = {"Accept": MEDIA_TYPE_TAXII}
        if user is not None and (password is not None or key is not None):
            auth = httpx.BasicAuth(user, password if password is not None else key or "")
        elif key is not None:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(auth=auth, headers=headers, timeout=timeout, verify=verify)
        url = url if url.endswith("/") else url + "/"
        self.api_root = self._discover(url) if url.rstrip("/").endswith("/taxii2") else url

    def __enter__(self) -> TaxiiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # HTTP ---------------------------------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, url, **kw)
        except httpx.TimeoutException as exc:
            raise TaxiiError(f"{method} {url}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise TaxiiError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            title = description = None
            try:
                err = resp.json()
                if isinstance(err, dict):
                    title, description = err.get("title"), err.get("description")
            except ValueError:
                pass
            detail = ": ".join(str(x) for x in (title, description) if x) or resp.reason_phrase
            raise TaxiiError(
                f"{method} {url}: HTTP {resp.status_code}: {detail}",
                status=resp.status_code,
                title=title,
                description=description,
            )
        return resp

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
        ctype = resp.headers.get("content-type", "").replace(" ", "")
        if not ctype.startswith("application/taxii+json"):
            raise TaxiiError(
                f"{resp.request.url}: expected {MEDIA_TYPE_TAXII}, got {ctype or 'no Content-Type'}"
            )
        try:
            body = orjson.loads(resp.content) if resp.content else {}
        except orjson.JSONDecodeError as exc:
            raise TaxiiError(f"{resp.request.url}: the answer is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise TaxiiError(f"{resp.request.url}: the answer is not a JSON object")
        return body

    def _get(self, url: str, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], httpx.Headers]:
        resp = self._request("GET", url, params=params)
        return self._json(resp), resp.headers

    def _discover(self, url: str) -> str:
        body, _ = self._get(url)
        root = body.get("default") or next(iter(body.get("api_roots") or ()), None)
        if not root:
            raise TaxiiError(f"{url}: the server lists no api root")
        root = str(httpx.URL(url).join(root))
        return root if root.endswith("/") else root + "/"

    # resources ---------------------------------------------------------------------------------------------

    def information(self) -> dict[str, Any]:
        return self._get(self.api_root)[0]

    def collections(self) -> list[dict[str, Any]]:
        return list(self._get(self.api_root + "collections/")[0].get("collections") or ())

    def collection_id(self, collection: str) -> str:
        """A collection id from an id, a title or an alias."""
        if _UUID_RE.match(collection):
            return collection
        found = [c for c in self.collections() if collection in (c.get("id"), c.get("title"), c.get("alias"))]
        if not found:
            raise TaxiiError(f"{self.api_root}: no collection {collection!r}")
        if len(found) > 1:
            raise TaxiiError(
                f"{self.api_root}: {len(found)} collections are called {collection!r}; use the id"
            )
        return str(found[0]["id"])

    def pages(
        self,
        collection: str,
        *,
        added_after: datetime | str | None = None,
        limit: int = 1000,
        match: dict[str, str | Iterable[str]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Envelopes of `GET .../objects/`, following `next` (or, without it, X-TAXII-Date-Added-Last)."""
        url = f"{self.api_root}collections/{self.collection_id(collection)}/objects/"
        params: dict[str, Any] = {"limit": limit}
        for k, v in (match or {}).items():
            params[f"match[{k}]"] = v if isinstance(v, str) else ",".join(v)
        if added_after is not None:
            params["added_after"] = _timestamp(added_after)
        empty = 0
        while True:
            body, headers = self._get(url, params)
            yield body
            if not body.get("more"):
                return
            # a server may keep one `next` for a whole paging session (medallion does), so progress is
            # judged by objects arriving, not by the token changing
            empty = 0 if body.get("objects") else empty + 1
            if empty >= 3:
                raise TaxiiError(f"{url}: 'more' is true but pages come back empty; stopping")
            nxt = body.get("next")
            if nxt:
                # the same filters and limit again: servers (medallion) check that they did not change
                params["next"] = nxt
            else:
                last = headers.get("X-TAXII-Date-Added-Last")
                if not last or last == params.get("added_after"):
                    raise TaxiiError(f"{url}: 'more' without 'next' or a new X-TAXII-Date-Added-Last")
                params["added_after"] = last

    def pull(self, collection: str, **kw: Any) -> Iterator[dict[str, Any]]:
        """Every object (latest versions unless `match={'version': ...}`) of a collection, page by page."""
        for env in self.pages(collection, **kw):
            yield from env.get("objects") or ()

    def push(
        self, collection: str, objects: Iterable[dict[str, Any]], *, batch: int = 100, wait: float = 60.0
    ) -> list[dict[str, Any]]:
        """POST objects in envelopes of `batch`; returns one final status resource per envelope."""
        if batch <= 0:
            raise ValueError("batch must be positive")
        url = f"{self.api_root}collections/{self.collection_id(collection)}/objects/"
        headers = {"Content-Type": MEDIA_TYPE_TAXII}
        statuses = []
        chunk: list[dict[str, Any]] = []
        for obj in objects:
            chunk.append(obj)
            if len(chunk) == batch:
                statuses.append(self._post(url, chunk, headers, wait))
                chunk = []
        if chunk:
            statuses.append(self._post(url, chunk, headers, wait))
        return statuses

    def _post(
        self, url: str, objects: list[dict[str, Any]], headers: dict[str, str], wait: float
    ) -> dict[str, Any]:
        resp = self._request("POST", url, content=orjson.dumps({"objects": objects}), headers=headers)
        status = self._json(resp)
        deadline = time.monotonic() + wait
        delay = 0.1
        while status.get("status") == "pending":  # an asynchronous server: poll the status resource
            if time.monotonic() > deadline:
                raise TaxiiError(f"{url}: status {status.get('id')} still pending after {wait:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            status = self._get(f"{self.api_root}status/{status['id']}/")[0]
        return status


def pull(
    url: str,
    collection: str,
    *,
    key: str | None = None,
    user: str | None = None,
    password: str | None = None,
    added_after: datetime | str | None = None,
    limit: int = 1000,
    match: dict[str, str | Iterable[str]] | None = None,
    timeout: float = 30.0,
) -> Iterator[dict[str, Any]]:
    """Every object of a remote collection added after `added_after`, following paging."""
    with TaxiiClient(url, key=key, user=user, password=password, timeout=timeout) as c:
        yield from c.pull(collection, added_after=added_after, limit=limit, match=match)


def push(
    url: str,
    collection: str,
    objects: Iterable[dict[str, Any]],
    *,
    key: str | None = None,
    user: str | None = None,
    password: str | None = None,
    batch: int = 100,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Add objects to a remote collection in envelopes of `batch`; returns the status resources."""
    with TaxiiClient(url, key=key, user=user, password=password, timeout=timeout) as c:
        return c.push(collection, objects, batch=batch)
