"""Matching traffic against intel indicators: exact for addresses, ranges, ASNs, user agents and keyed
digests; LSH for keyed skeleton sketches.

All exact matching is SQL over the `exchanges` table of a scan engine (DuckDB or Spark): indicators are
registered as small Arrow tables and joined on the distinct values of the traffic first (distinct IPs,
distinct account ids), so the cost is one pass over the exchange columns whatever the indicator count.
Keyed digests are computed locally for each distinct identifier under every key epoch the indicators
use (the consortium never sees the raw identifiers; we never see theirs). Skeletons: the scan's sampled
prompt skeletons are sketched under the consortium key and banded; candidates that share a band are
verified on the whole sketch against `skeleton_threshold` (estimated Jaccard similarity).

The result is per-account columns (`intel_<kind>_*`) that the `intel` signal turns into evidence naming
the matched indicator, and per-indicator sighting counts for the store.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from distillguard.detect import minhash
from distillguard.detect.skeletons import Templates
from distillguard.intel.indicator import DIGEST_TYPES, Indicator, IndicatorType
from distillguard.intel.privacy import Keyring, decode_sketch
from distillguard.intel.skeleton import projections
from distillguard.store.engine import Engine

# Kinds of match, each its own evidence (an ASN says far less than an exact address).
KINDS = ("address", "asn", "user_agent", "identity", "skeleton")
KIND_OF = {
    IndicatorType.IPV4: "address",
    IndicatorType.IPV6: "address",
    IndicatorType.CIDR: "address",
    IndicatorType.ASN: "asn",
    IndicatorType.USER_AGENT: "user_agent",
    IndicatorType.ACCOUNT: "identity",
    IndicatorType.ORGANISATION: "identity",
    IndicatorType.PAYMENT: "identity",
    IndicatorType.DEVICE: "identity",
    IndicatorType.SKELETON: "skeleton",
}
# Exchange column each digest type is computed from.
DIGEST_COLUMN = {
    IndicatorType.ACCOUNT: "account_id",
    IndicatorType.ORGANISATION: "org_id",
    IndicatorType.PAYMENT: "payment_fp",
    IndicatorType.DEVICE: "device_fp",
}
_IPV4_NUM = (
    "CAST(split_part(client_ip, '.', 1) AS BIGINT) * 16777216 + CAST(split_part(client_ip, '.', 2) AS BIGINT)"
    " * 65536 + CAST(split_part(client_ip, '.', 3) AS BIGINT) * 256 + CAST(split_part(client_ip, '.', 4) AS BIGINT)"
)


class MatchError(ValueError):
    pass


@dataclass
class Matches:
    """What matched: per account and kind (aligned to `accounts`), and per indicator (for sightings)."""

    accounts: np.ndarray  # object: account ids the columns are aligned to
    columns: dict[str, np.ndarray]  # intel_<kind>_{share,conf,block,indicator,example}
    sightings: pa.Table  # indicator_id, n, first_seen, last_seen, accounts
    counts: dict[str, int] = field(default_factory=dict)  # matched exchanges per kind

    def aligned(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The per-account columns in the order of `ids` (accounts without traffic here: no match)."""
        pos = {a: i for i, a in enumerate(self.accounts)}
        at = np.array([pos.get(a, -1) for a in ids], dtype=np.int64)
        out = {}
        for name, col in self.columns.items():
            blank = None if col.dtype == object else 0.0
            v = np.empty(len(ids), dtype=col.dtype) if len(ids) else col[:0]
            if len(ids):
                v[:] = blank
                v[at >= 0] = col[at[at >= 0]]
            out[name] = v
        return out


class Matcher:
    """Indicators prepared for matching: effective confidence and whether each may block on its own.

    `confidence` (0-100) is the decayed confidence at scan time and `blocking` says whether the store's
    policy lets the indicator block by itself (corroborated, confident, not warninglisted); both come
    from the store (`from_store`) or are given directly in tests.
    """

    def __init__(
        self,
        indicators: Sequence[Indicator],
        confidence: Sequence[float] | np.ndarray | None = None,
        blocking: Sequence[bool] | np.ndarray | None = None,
        keyring: Keyring | None = None,
        skeleton_threshold: float = 0.5,
    ) -> None:
        n = len(indicators)
        self.indicators = list(indicators)
        self.confidence = np.asarray(
            confidence if confidence is not None else [i.confidence for i in indicators], dtype=np.float64
        ).reshape(n)
        self.blocking = np.asarray(blocking if blocking is not None else np.ones(n), dtype=bool).reshape(n)
        self.keyring = keyring
        self.skeleton_threshold = skeleton_threshold
        keyed = [i for i in indicators if i.type in DIGEST_TYPES or i.type is IndicatorType.SKELETON]
        if keyed and keyring is None:
            raise MatchError(f"{len(keyed)} indicators are keyed digests or sketches: a keyring is needed")
        if keyring is not None:
            missing = sorted({int(i.key_epoch or 0) for i in keyed} - set(keyring.keys))
            if missing:
                # Indicators under a key we do not hold can never match; say so instead of silently missing.
                raise MatchError(f"indicators use key epochs {missing}, which the keyring does not hold")
        self._by_type: dict[IndicatorType, list[int]] = {}
        for k, ind in enumerate(self.indicators):
            self._by_type.setdefault(ind.type, []).append(k)

    @classmethod
    def from_store(cls, store: object, keyring: Keyring | None, at: datetime, **kw: object) -> Matcher:
        """All active indicators of an `IntelStore`, with their decayed confidence and block policy."""
        inds = list(store.indicators(active_at=at))  # type: ignore[attr-defined]
        conf = [store.effective_confidence(i, at) for i in inds]  # type: ignore[attr-defined]
        block = [store.assess(i, at).blocks for i in inds]  # type: ignore[attr-defined]
        return cls(inds, conf, block, keyring, **kw)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.indicators)

    # -- indicator tables ------------------------------------------------------------------------------
    def _table(self, idx: list[int], values: list[object], vtype: pa.DataType) -> pa.Table:
        return pa.table(
            {
                "ind": pa.array(idx, pa.int64()),
                "value": pa.array(values, vtype),
            }
        )

    def _idx(self, *types: IndicatorType) -> list[int]:
        return [k for t in types for k in self._by_type.get(t, [])]

    # -- matching ---------------------------------------------------------------------------------------
    def match(self, engine: Engine, tpl: Templates | None = None, source: str = "exchanges") -> Matches:
        """Match the exchanges of `source` (and the scan's sampled skeletons `tpl`) against the indicators."""
        parts: list[str] = []
        ip = self._idx(IndicatorType.IPV4, IndicatorType.IPV6)
        if ip:
            engine.register_arrow(
                "dg_intel_ip", self._table(ip, [self.indicators[k].value for k in ip], pa.string())
            )
            parts.append(
                f"SELECT e.exchange_id, e.account_id, e.ts, i.ind FROM {source} e "
                "JOIN dg_intel_ip i ON e.client_ip = i.value"
            )
        cidr = self._idx(IndicatorType.CIDR)
        if cidr:
            parts.extend(self._cidr_sql(engine, cidr, source))
        asn = self._idx(IndicatorType.ASN)
        if asn:
            engine.register_arrow(
                "dg_intel_asn", self._table(asn, [int(self.indicators[k].value) for k in asn], pa.int64())
            )
            parts.append(
                f"SELECT e.exchange_id, e.account_id, e.ts, i.ind FROM {source} e "
                "JOIN dg_intel_asn i ON e.asn = i.value"
            )
        ua = self._idx(IndicatorType.USER_AGENT)
        if ua:
            engine.register_arrow(
                "dg_intel_ua", self._table(ua, [self.indicators[k].value for k in ua], pa.string())
            )
            parts.append(
                f"SELECT e.exchange_id, e.account_id, e.ts, i.ind FROM {source} e "
                "JOIN dg_intel_ua i ON e.user_agent = i.value"
            )
        for t, col in DIGEST_COLUMN.items():
            idx = self._idx(t)
            if idx:
                parts.append(self._digest_sql(engine, t, col, idx, source))
        n_acc = engine.query(f"SELECT account_id, count(*) AS n FROM {source} GROUP BY account_id")
        accounts = np.asarray(n_acc.column("account_id").to_pylist(), dtype=object)
        n_ex = np.asarray(n_acc.column("n").to_numpy(), dtype=np.float64)
        pos = {a: i for i, a in enumerate(accounts)}
        if parts:
            hits = engine.query(" UNION ALL ".join(parts))
        else:
            hits = pa.table(
                {
                    "exchange_id": pa.array([], pa.string()),
                    "account_id": pa.array([], pa.string()),
                    "ts": pa.array([], pa.timestamp("us", "UTC")),
                    "ind": pa.array([], pa.int64()),
                }
            )
        cols, counts = self._exchange_columns(hits, accounts, n_ex, pos)
        sightings = self._sightings(hits)
        if tpl is not None and self._idx(IndicatorType.SKELETON):
            skel_cols, skel_sight, n = self._skeleton_columns(tpl, pos)
            cols.update(skel_cols)
            counts["skeleton"] = n
            sightings = pa.concat_tables([sightings, skel_sight])
        return Matches(accounts=accounts, columns=cols, sightings=sightings, counts=counts)

    def _cidr_sql(self, engine: Engine, idx: list[int], source: str) -> list[str]:
        v4_lo, v4_hi, v4_i, v6 = [], [], [], []
        for k in idx:
            net = ipaddress.ip_network(self.indicators[k].value)
            if net.version == 4:
                v4_lo.append(int(net.network_address))
                v4_hi.append(int(net.broadcast_address))
                v4_i.append(k)
            else:
                v6.append((k, net))
        out = []
        if v4_i:
            engine.register_arrow(
                "dg_intel_cidr4",
                pa.table(
                    {
                        "ind": pa.array(v4_i, pa.int64()),
                        "lo": pa.array(v4_lo, pa.int64()),
                        "hi": pa.array(v4_hi, pa.int64()),
                    }
                ),
            )
            # Distinct addresses first: the range join then runs over thousands of rows, not millions.
            engine.materialize(
                "dg_intel_cidr4_hits",
                f"SELECT a.client_ip, c.ind FROM (SELECT client_ip, {_IPV4_NUM} AS ipn FROM "
                f"(SELECT DISTINCT client_ip FROM {source} WHERE client_ip LIKE '%.%.%.%' "
                "AND client_ip NOT LIKE '%:%')) a "
                "JOIN dg_intel_cidr4 c ON a.ipn BETWEEN c.lo AND c.hi",
            )
            out.append(
                f"SELECT e.exchange_id, e.account_id, e.ts, h.ind FROM {source} e "
                "JOIN dg_intel_cidr4_hits h ON e.client_ip = h.client_ip"
            )
        if v6:
            # IPv6 ranges are rare in intel: test the distinct IPv6 addresses of the traffic in Python.
            addrs = engine.query(f"SELECT DISTINCT client_ip FROM {source} WHERE client_ip LIKE '%:%'")
            pairs = [
                (a, k)
                for a in addrs.column("client_ip").to_pylist()
                for k, net in v6
                if ipaddress.ip_address(a) in net
            ]
            engine.register_arrow(
                "dg_intel_cidr6_hits",
                pa.table(
                    {
                        "client_ip": pa.array([p[0] for p in pairs], pa.string()),
                        "ind": pa.array([p[1] for p in pairs], pa.int64()),
                    }
                ),
            )
            out.append(
                f"SELECT e.exchange_id, e.account_id, e.ts, h.ind FROM {source} e "
                "JOIN dg_intel_cidr6_hits h ON e.client_ip = h.client_ip"
            )
        return out

    def _digest_sql(self, engine: Engine, t: IndicatorType, col: str, idx: list[int], source: str) -> str:
        assert self.keyring is not None
        distinct = engine.query(f"SELECT DISTINCT {col} AS v FROM {source} WHERE {col} IS NOT NULL")
        raw = distinct.column("v").to_pylist()
        by_digest: dict[tuple[int, str], list[int]] = {}
        for k in idx:
            ind = self.indicators[k]
            by_digest.setdefault((int(ind.key_epoch or 0), ind.value), []).append(k)
        vals, inds = [], []
        for epoch in sorted({e for e, _ in by_digest}):
            for v, d in zip(raw, self.keyring.digests(t, raw, epoch), strict=True):
                for k in by_digest.get((epoch, d), ()):
                    vals.append(v)
                    inds.append(k)
        name = f"dg_intel_{t.value}"
        engine.register_arrow(
            name, pa.table({"v": pa.array(vals, pa.string()), "ind": pa.array(inds, pa.int64())})
        )
        return (
            f"SELECT e.exchange_id, e.account_id, e.ts, i.ind FROM {source} e JOIN {name} i ON e.{col} = i.v"
        )

    def _kind_array(self) -> np.ndarray:
        return np.array([KINDS.index(KIND_OF[i.type]) for i in self.indicators] or [0], dtype=np.int64)

    def _exchange_columns(
        self, hits: pa.Table, accounts: np.ndarray, n_ex: np.ndarray, pos: dict[str, int]
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        n = len(accounts)
        cols = _empty_columns(n)
        counts = dict.fromkeys(KINDS, 0)
        if hits.num_rows == 0:
            return cols, counts
        ind = np.asarray(hits.column("ind").to_numpy(), dtype=np.int64)
        acc = np.array([pos[a] for a in hits.column("account_id").to_pylist()], dtype=np.int64)
        ex = np.asarray(hits.column("exchange_id").to_pylist(), dtype=object)
        kind = self._kind_array()[ind]
        conf = self.confidence[ind]
        block = np.where(self.blocking[ind], conf, 0.0)
        for k, name in enumerate(KINDS):
            sel = kind == k
            if not sel.any():
                continue
            # an exchange matched by two indicators of one kind (an address and its range) counts once
            key = np.unique(np.stack([acc[sel], _ids(ex[sel])], axis=1), axis=0)
            counts[name] = len(key)
            matched = np.bincount(key[:, 0], minlength=n).astype(np.float64)
            cols[f"intel_{name}_share"] = matched / np.maximum(n_ex, 1.0)
            _best(cols, name, acc[sel], conf[sel], block[sel], ind[sel], ex[sel], self.indicators)
        return cols, counts

    def _sightings(self, hits: pa.Table) -> pa.Table:
        if hits.num_rows == 0:
            return _empty_sightings()
        import duckdb

        con = duckdb.connect()
        try:
            con.register("h", hits)
            t = con.sql(
                "SELECT ind, count(DISTINCT exchange_id) AS n, min(ts) AS first_seen, max(ts) AS last_seen, "
                "count(DISTINCT account_id) AS accounts FROM h GROUP BY ind ORDER BY ind"
            ).to_arrow_table()
        finally:
            con.close()
        ids = [self.indicators[k].id for k in t.column("ind").to_pylist()]
        return pa.table(
            {
                "indicator_id": pa.array(ids, pa.string()),
                "n": t.column("n").cast(pa.int64()),
                "first_seen": t.column("first_seen").cast(pa.timestamp("us", "UTC")),
                "last_seen": t.column("last_seen").cast(pa.timestamp("us", "UTC")),
                "accounts": t.column("accounts").cast(pa.int64()),
            }
        )

    def _skeleton_columns(
        self, tpl: Templates, pos: dict[str, int]
    ) -> tuple[dict[str, np.ndarray], pa.Table, int]:
        assert self.keyring is not None
        n = len(pos)
        cols = {k: v for k, v in _empty_columns(n).items() if k.startswith("intel_skeleton_")}
        idx = self._idx(IndicatorType.SKELETON)
        acc_all = np.array([pos.get(a, -1) for a in tpl.account_id], dtype=np.int64)
        total = np.bincount(acc_all[acc_all >= 0], weights=tpl.cnt[acc_all >= 0], minlength=n)
        # Each account's template projections (see intel.skeleton), sketched once per distinct text.
        proj = projections(tpl)
        has = np.flatnonzero(proj != None)  # noqa: E711 - elementwise on an object array
        texts, inv = np.unique(proj[has].astype(str), return_inverse=True)
        pairs_r: list[np.ndarray] = []
        pairs_k: list[np.ndarray] = []
        for epoch in sorted({int(self.indicators[k].key_epoch or 0) for k in idx}):
            if not len(texts):
                break
            ks = np.array([k for k in idx if int(self.indicators[k].key_epoch or 0) == epoch], dtype=np.int64)
            ind_sk = np.stack([decode_sketch(self.indicators[k].value) for k in ks])
            loc_sk = self.keyring.sketch(texts.tolist(), epoch)
            cand, c = lsh_pairs(loc_sk, ind_sk, self.skeleton_threshold)
            for j, cc in zip(cand.tolist(), c.tolist(), strict=True):
                members = has[inv == j]
                pairs_r.append(members)
                pairs_k.append(np.full(len(members), ks[cc], dtype=np.int64))
        if not pairs_r or not sum(len(p) for p in pairs_r):
            return cols, _empty_sightings(), 0
        r = np.concatenate(pairs_r)
        k = np.concatenate(pairs_k)
        rk = np.unique(np.stack([r, k], axis=1), axis=0)  # a skeleton matched twice by one indicator
        r, k = rk[:, 0], rk[:, 1]
        acc = acc_all[r]
        ok = acc >= 0
        r, k, acc = r[ok], k[ok], acc[ok]
        # a sampled skeleton matched by several indicators counts once toward the share
        ur, first = np.unique(r, return_index=True)
        matched = np.bincount(acc[first], weights=tpl.cnt[ur], minlength=n)
        cols["intel_skeleton_share"] = np.where(total > 0, matched / np.maximum(total, 1.0), 0.0)
        conf = self.confidence[k]
        block = np.where(self.blocking[k], conf, 0.0)
        ex = np.full(len(r), None, dtype=object)  # sampled skeletons carry no exchange id
        _best(cols, "skeleton", acc, conf, block, k, ex, self.indicators)
        uk = np.unique(k)
        sight = pa.table(
            {
                "indicator_id": pa.array([self.indicators[j].id for j in uk], pa.string()),
                "n": pa.array([int(tpl.cnt[r[k == j]].sum()) for j in uk], pa.int64()),
                "first_seen": pa.array([None] * len(uk), pa.timestamp("us", "UTC")),
                "last_seen": pa.array([None] * len(uk), pa.timestamp("us", "UTC")),
                "accounts": pa.array([len(np.unique(acc[k == j])) for j in uk], pa.int64()),
            }
        )
        return cols, sight, int(matched.sum())


def _ids(ex: np.ndarray) -> np.ndarray:
    """Exchange ids as integers (for np.unique over pairs)."""
    _, inv = np.unique(ex.astype(str), return_inverse=True)
    return inv.astype(np.int64)


def _empty_columns(n: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for name in KINDS:
        cols[f"intel_{name}_share"] = np.zeros(n)
        cols[f"intel_{name}_conf"] = np.zeros(n)
        cols[f"intel_{name}_block"] = np.zeros(n)
        cols[f"intel_{name}_indicator"] = np.full(n, None, dtype=object)
        cols[f"intel_{name}_example"] = np.full(n, None, dtype=object)
    return cols


def _empty_sightings() -> pa.Table:
    return pa.table(
        {
            "indicator_id": pa.array([], pa.string()),
            "n": pa.array([], pa.int64()),
            "first_seen": pa.array([], pa.timestamp("us", "UTC")),
            "last_seen": pa.array([], pa.timestamp("us", "UTC")),
            "accounts": pa.array([], pa.int64()),
        }
    )


def _best(
    cols: dict[str, np.ndarray],
    name: str,
    acc: np.ndarray,
    conf: np.ndarray,
    block: np.ndarray,
    ind: np.ndarray,
    ex: np.ndarray,
    indicators: list[Indicator],
) -> None:
    """Per account: the highest confidence matched, the highest blocking confidence, and the indicator
    (and an example exchange) behind the stronger of the two, for the evidence."""
    n = len(cols[f"intel_{name}_conf"])
    np.maximum.at(cols[f"intel_{name}_conf"], acc, conf)
    np.maximum.at(cols[f"intel_{name}_block"], acc, block)
    # the representative match: blocking first, then confidence (lexsort: last key is primary)
    order = np.lexsort((-conf, -block, acc))
    a_sorted = acc[order]
    first = order[np.r_[True, a_sorted[1:] != a_sorted[:-1]]] if len(order) else order
    at = acc[first]
    cols[f"intel_{name}_indicator"] = cols[f"intel_{name}_indicator"].copy()
    cols[f"intel_{name}_indicator"][at] = [indicators[j].id for j in ind[first]]
    cols[f"intel_{name}_example"] = cols[f"intel_{name}_example"].copy()
    cols[f"intel_{name}_example"][at] = ex[first]
    assert len(cols[f"intel_{name}_indicator"]) == n


def lsh_pairs(a: np.ndarray, b: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (row of a, row of b) whose sketches share an LSH band and are at least `threshold` similar."""
    ka, kb = minhash.band_keys(a), minhash.band_keys(b)
    na, nb = len(a), len(b)
    keys = np.concatenate([ka.ravel(), kb.ravel()])
    src = np.concatenate(
        [np.repeat(np.arange(na), minhash.BANDS), na + np.repeat(np.arange(nb), minhash.BANDS)]
    )
    order = np.argsort(keys, kind="stable")
    ks, ss = keys[order], src[order]
    # Only buckets holding both sides make pairs; find them with one reduceat, then loop over those
    # alone (few: a bucket is shared only where a local skeleton resembles an indicator).
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    has_a = np.minimum.reduceat(ss, starts) < na
    has_b = np.maximum.reduceat(ss, starts) >= na
    ends = np.r_[starts[1:], len(ks)]
    ra: list[np.ndarray] = []
    rb: list[np.ndarray] = []
    for s, e in zip(starts[has_a & has_b], ends[has_a & has_b], strict=True):
        m = ss[s:e]
        la, lb = m[m < na], m[m >= na] - na
        ra.append(np.repeat(la, len(lb)))
        rb.append(np.tile(lb, len(la)))
    if not ra:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pa_, pb = np.concatenate(ra), np.concatenate(rb)
    pairs = np.unique(np.stack([pa_, pb], axis=1), axis=0)
    sim = minhash.similarity(a[pairs[:, 0]], b[pairs[:, 1]])
    keep = sim >= threshold
    return pairs[keep, 0], pairs[keep, 1]
