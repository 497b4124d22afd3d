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
