"""Private set intersection for low-entropy indicators (IPv4 addresses, ASNs).

A keyed digest of an IPv4 address protects it only as long as the key does; anyone holding the
consortium key can test all 2^32 addresses. For such values a member can instead learn only which of
*its* values (addresses seen in its traffic) are in another member's indicator set, and nothing else
about that set, while the other member learns only how many values were asked about. The protocol is
ECDH-based PSI (OpenMined's `openmined.psi`, optional extra `distillguard[psi]`): one round trip.

    client --(request: its values, blinded with its key)--> server
    client <--(setup: the server's values blinded with the server's key, as a Golomb-compressed set;
              response: the client's blinded values, blinded again with the server's key)-- server

Values are canonicalised first (`indicator.normalise_value`), and typed (`ipv4:198.51.100.7`,
`asn:64500`) so an address never meets an AS number.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

from distillguard.intel.indicator import IndicatorType, normalise_value

PSI_TYPES = (IndicatorType.IPV4, IndicatorType.IPV6, IndicatorType.ASN)
DEFAULT_FPR = 1e-9  # false-positive probability of the whole query


class PsiError(RuntimeError):
    pass


def _lib() -> Any:
    try:
        import private_set_intersection.python as psi
    except ImportError as exc:  # an optional extra
        raise PsiError("PSI needs the optional extra: pip install 'distillguard[psi]'") from exc
    return psi


def item(kind: IndicatorType | str, value: str) -> str:
    kind = IndicatorType(kind)
    if kind not in PSI_TYPES:
        raise PsiError(f"PSI is for {', '.join(t.value for t in PSI_TYPES)} values, not {kind.value}")
    return f"{kind.value}:{normalise_value(kind, value)}"


def _pack(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _unpack(data: bytes, n: int) -> list[bytes]:
    out, at = [], 0
    for _ in range(n):
        if at + 4 > len(data):
            raise PsiError("truncated PSI message")
        (ln,) = struct.unpack_from(">I", data, at)
        at += 4
        if at + ln > len(data):
            raise PsiError("truncated PSI message")
        out.append(data[at : at + ln])
        at += ln
    return out


class PsiServer:
    """Holds one member's set (e.g. its IPv4 and ASN indicators) and answers intersection queries."""

    def __init__(self, items: Iterable[str], fpr: float = DEFAULT_FPR, max_query: int = 1_000_000) -> None:
        self._psi = _lib()
        self.items = sorted(set(items))
        self.fpr = fpr
        self.max_query = max_query

    def answer(self, message: bytes) -> bytes:
        """One round: (client set size, request) in, (setup, response) out."""
        psi = self._psi
        size_b, req_b = _unpack(message, 2)
        (n_client,) = struct.unpack(">Q", size_b)
        if not 0 < n_client <= self.max_query:
            raise PsiError(f"a query holds 1 to {self.max_query:,} values, not {n_client:,}")
        request = psi.Request()
        try:
            request.ParseFromString(req_b)
        except Exception as exc:
            raise PsiError(f"malformed PSI request: {exc}") from exc
        # a fresh key per query: answers to two queries cannot be linked
        server = psi.server.CreateWithNewKey(True)
        setup = server.CreateSetupMessage(self.fpr, n_client, self.items)
        response = server.ProcessRequest(request)
        return _pack(setup.SerializeToString(), response.SerializeToString())


class PsiClient:
    """Asks which of its values are in a server's set."""

    def __init__(self) -> None:
        self._psi = _lib()
        self._client = self._psi.client.CreateWithNewKey(True)

    def request(self, items: Sequence[str]) -> bytes:
        if not items:
            raise PsiError("nothing to ask: the query is empty")
        req = self._client.CreateRequest(list(items))
        return _pack(struct.pack(">Q", len(items)), req.SerializeToString())

    def intersection(self, items: Sequence[str], answer: bytes) -> list[str]:
        psi = self._psi
        setup_b, resp_b = _unpack(answer, 2)
        setup, resp = psi.ServerSetup(), psi.Response()
        setup.ParseFromString(setup_b)
        resp.ParseFromString(resp_b)
        idx = self._client.GetIntersection(setup, resp)
        return sorted(items[i] for i in idx)


def intersect_local(client_items: Sequence[str], server: PsiServer) -> list[str]:
    """Both halves in one process (tests, and a member checking its own lists)."""
    c = PsiClient()
    return c.intersection(client_items, server.answer(c.request(client_items)))


# -- over HTTP: the intel server answers at /psi/v1/ ---------------------------------------------------

PSI_PATH = "psi/v1/"
MEDIA_TYPE = "application/x-distillguard-psi"
MAX_MESSAGE = 64 << 20
CACHE_SECONDS = 60.0  # the server's set is rebuilt from the store at most this often


def server_items(store: Any, at: Any) -> list[str]:
    """What the server side offers: its IPv4, IPv6 and ASN indicators in force, never TLP:RED ones."""
    from distillguard.intel.indicator import TLP

    out = []
    for t in PSI_TYPES:
        for ind in store.indicators(type=t, active_at=at):
            if ind.tlp is not TLP.RED:
                out.append(item(t, ind.value))
    return out


def psi_route(engine: Any) -> Any:
    """A Starlette route answering PSI queries from members holding any valid API key of the server."""
    import time
    from datetime import UTC, datetime

    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from distillguard.intel.store import IntelStore
    from distillguard.intel.taxii import store as taxii_store

    cache: dict[str, Any] = {"at": 0.0, "server": None}

    def current() -> PsiServer:
        if cache["server"] is None or time.monotonic() - cache["at"] > CACHE_SECONDS:
            st = IntelStore(engine)
            cache["server"] = PsiServer(server_items(st, datetime.now(UTC)))
            cache["at"] = time.monotonic()
        return cache["server"]

    async def answer(request: Request) -> Response:
        from distillguard.intel.taxii.server import _token_from

        token = _token_from(request.headers.get("authorization"))
        acc = await run_in_threadpool(taxii_store.resolve, engine, token, None, None)
        if acc.key_pk is None:
            return JSONResponse({"title": "Unauthorized", "http_status": "401"}, 401)
        body = await request.body()
        if len(body) > MAX_MESSAGE:
            return JSONResponse({"title": "Payload Too Large", "http_status": "413"}, 413)
        try:
            server = await run_in_threadpool(current)
            reply = await run_in_threadpool(server.answer, body)
        except PsiError as exc:
            return JSONResponse({"title": "Bad Request", "description": str(exc), "http_status": "400"}, 400)
        return Response(reply, media_type=MEDIA_TYPE)

    return Route("/" + PSI_PATH, answer, methods=["POST"])


def query(url: str, items: Sequence[str], key: str, timeout: float = 60.0) -> list[str]:
    """Ask a member's server which of `items` are in its set; returns the intersection (ours only)."""
    import httpx

    if not items:
        return []
    client = PsiClient()
    endpoint = url.split("/taxii2/")[0].rstrip("/") + "/" + PSI_PATH
    try:
        r = httpx.post(
            endpoint,
            content=client.request(items),
            headers={"Authorization": f"Bearer {key}", "Content-Type": MEDIA_TYPE},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise PsiError(f"POST {endpoint}: {type(exc).__name__}: {exc}") from exc
    if r.status_code != 200:
        raise PsiError(f"POST {endpoint}: HTTP {r.status_code}: {r.text[:200]}")
    return client.intersection(items, r.content)
