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
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from distillguard.detect import minhash
from distillguard.detect.skeletons import Templates
from distillguard.intel.indicator import DIGEST_TYPES, Indicator, IndicatorType
from distillguard.intel.privacy import Keyring, decode_sketch
from distillguard.intel.skeleton import projections
from distillguard.store.engine import Engine

if TYPE_CHECKING:  # the store imports nothing of matching; only its type is needed here
    from distillguard.intel.store import IntelStore

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
    def from_store(
        cls, store: IntelStore, keyring: Keyring | None, at: datetime, skeleton_threshold: float = 0.5
    ) -> Matcher:
        """All active indicators of an `IntelStore`, with their decayed confidence and block policy."""
        inds = store.indicators(active_at=at)
        assessed = store.assess_many(inds, at)
        conf = [a.confidence for a in assessed]
        block = [a.blocks for a in assessed]
        return cls(inds, conf, block, keyring, skeleton_threshold)

    def __len__(self) -> int:
        return len(self.indicators)

    def _idx(self, *types: IndicatorType) -> list[int]:
        return [k for t in types for k in self._by_type.get(t, [])]

    # -- matching ---------------------------------------------------------------------------------------
    def match(self, engine: Engine, tpl: Templates | None = None, source: str = "exchanges") -> Matches:
        """Match the exchanges of `source` (and the scan's sampled skeletons `tpl`) against the indicators.

        Matching is done on values, not rows: for each matched column, the distinct values of the traffic
        that some indicator matches (an address through its exact indicator or a range, an account id
        through its digest under any epoch) form a small table, one row per value with its strongest
        indicator; one pass over the exchanges then joins all of them and aggregates per account. An
        exchange matched by several indicators of one kind counts once.
        """
        pairs: dict[str, list[tuple[object, int]]] = {}  # column -> (value, indicator) pairs
        ip = self._idx(IndicatorType.IPV4, IndicatorType.IPV6)
        if ip or self._idx(IndicatorType.CIDR):
            pairs["client_ip"] = [(self.indicators[k].value, k) for k in ip] + self._cidr_pairs(
                engine, source
            )
        asn = self._idx(IndicatorType.ASN)
        if asn:
            pairs["asn"] = [(int(self.indicators[k].value), k) for k in asn]
        ua = self._idx(IndicatorType.USER_AGENT)
        if ua:
            pairs["user_agent"] = [(self.indicators[k].value, k) for k in ua]
        for t, col in DIGEST_COLUMN.items():
            idx = self._idx(t)
            if idx:
                pairs[col] = self._digest_pairs(engine, t, col, idx, source)
        n_acc = engine.query(f"SELECT account_id, count(*) AS n FROM {source} GROUP BY account_id")
        accounts = np.asarray(n_acc.column("account_id").to_pylist(), dtype=object)
        n_ex = np.asarray(n_acc.column("n").to_numpy(), dtype=np.float64)
        pos = {a: i for i, a in enumerate(accounts)}
        cols = _empty_columns(len(accounts))
        counts = dict.fromkeys(KINDS, 0)
        pairs = {c: p for c, p in pairs.items() if p}
        sightings = (
            self._aggregate(engine, pairs, source, cols, counts, n_ex, pos) if pairs else _empty_sightings()
        )
        if tpl is not None and self._idx(IndicatorType.SKELETON):
            skel_cols, skel_sight, n = self._skeleton_columns(tpl, pos)
            cols.update(skel_cols)
            counts["skeleton"] = n
            sightings = pa.concat_tables([sightings, skel_sight])
        return Matches(accounts=accounts, columns=cols, sightings=sightings, counts=counts)

    def _cidr_pairs(self, engine: Engine, source: str) -> list[tuple[object, int]]:
        """(address, range indicator) for every distinct address of the traffic inside a reported range."""
        v4_lo, v4_hi, v4_i, v6 = [], [], [], []
        for k in self._idx(IndicatorType.CIDR):
            net = ipaddress.ip_network(self.indicators[k].value)
            if net.version == 4:
                v4_lo.append(int(net.network_address))
                v4_hi.append(int(net.broadcast_address))
                v4_i.append(k)
            else:
                v6.append((k, net))
        out: list[tuple[object, int]] = []
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
            # Distinct addresses first: the range join runs over thousands of rows, not millions.
            hits = engine.query(
                f"SELECT a.client_ip, c.ind FROM (SELECT client_ip, {_IPV4_NUM} AS ipn FROM "
                f"(SELECT DISTINCT client_ip FROM {source} WHERE client_ip LIKE '%.%.%.%' "
                "AND client_ip NOT LIKE '%:%')) a "
                "JOIN dg_intel_cidr4 c ON a.ipn BETWEEN c.lo AND c.hi"
            )
            out.extend(zip(hits.column("client_ip").to_pylist(), hits.column("ind").to_pylist(), strict=True))
        if v6:
            # IPv6 ranges are rare in intel: test the distinct IPv6 addresses of the traffic in Python.
            addrs = engine.query(f"SELECT DISTINCT client_ip FROM {source} WHERE client_ip LIKE '%:%'")
            for a in addrs.column("client_ip").to_pylist():
                addr = ipaddress.ip_address(a)
                out.extend((a, k) for k, net in v6 if addr in net)
        return out

    def _digest_pairs(
        self, engine: Engine, t: IndicatorType, col: str, idx: list[int], source: str
    ) -> list[tuple[object, int]]:
        """(raw value, indicator) for the distinct values of `col` whose keyed digest is reported."""
        assert self.keyring is not None
        raw = engine.query(f"SELECT DISTINCT {col} AS v FROM {source} WHERE {col} IS NOT NULL").column("v")
        values = raw.to_pylist()
        by_digest: dict[tuple[int, str], list[int]] = {}
        for k in idx:
            ind = self.indicators[k]
            by_digest.setdefault((int(ind.key_epoch or 0), ind.value), []).append(k)
        out: list[tuple[object, int]] = []
        for epoch in sorted({e for e, _ in by_digest}):
            for v, d in zip(values, self.keyring.digests(t, values, epoch), strict=True):
                out.extend((v, k) for k in by_digest.get((epoch, d), ()))
        return out

    def _aggregate(
        self,
        engine: Engine,
        pairs: dict[str, list[tuple[object, int]]],
        source: str,
        cols: dict[str, np.ndarray],
        counts: dict[str, int],
        n_ex: np.ndarray,
        pos: dict[str, int],
    ) -> pa.Table:
        """One pass over the exchanges joined to the per-column value tables; returns the sightings."""
        score = np.where(self.blocking, 1000.0, 0.0) + self.confidence  # blocking first, then confidence
        kinds: dict[str, list[str]] = {}
        joins, value_cols = [], []
        for c, (col, ps) in enumerate(pairs.items()):
            best: dict[object, int] = {}
            for v, k in ps:
                if v not in best or score[k] > score[best[v]]:
                    best[v] = k
            vals = list(best)
            ks = np.array([best[v] for v in vals], dtype=np.int64)
            vtype = pa.int64() if col == "asn" else pa.string()
            engine.register_arrow(
                f"dg_m{c}",
                pa.table(
                    {
                        "value": pa.array(vals, vtype),
                        "ind": pa.array(ks, pa.int64()),
                        "conf": pa.array(self.confidence[ks], pa.float64()),
                        "blk": pa.array(np.where(self.blocking[ks], self.confidence[ks], 0.0), pa.float64()),
                        "score": pa.array(score[ks], pa.float64()),
                    }
                ),
            )
            joins.append(f"LEFT JOIN dg_m{c} m{c} ON e.{col} = m{c}.value")
            value_cols.append((c, col))
            kind = KIND_OF[self.indicators[int(ks[0])].type] if len(ks) else "address"
            kinds.setdefault(kind, []).append(f"m{c}")
        sel = ["e.account_id"]
        for kind, ms in kinds.items():
            # the strongest of this kind's joins on each row (several columns for identity)
            sc = f"greatest({', '.join(f'coalesce({m}.score, -1)' for m in ms)})"
            ind = "CASE " + " ".join(f"WHEN {m}.score = {sc} THEN {m}.ind" for m in ms) + " END"
            conf = "CASE " + " ".join(f"WHEN {m}.score = {sc} THEN {m}.conf" for m in ms) + " END"
            blk = f"greatest({', '.join(f'coalesce({m}.blk, 0)' for m in ms)})"
            any_ = " OR ".join(f"{m}.value IS NOT NULL" for m in ms)
            sel += [
                f"count(CASE WHEN {any_} THEN 1 END) AS {kind}_n",
                f"max({conf}) AS {kind}_conf",
                f"max({blk}) AS {kind}_blk",
                f"{{argmax({ind}, {sc})}} AS {kind}_ind",
                f"{{argmax(CASE WHEN {any_} THEN e.exchange_id END, {sc})}} AS {kind}_ex",
            ]
        filt = " OR ".join(f"m{c}.value IS NOT NULL" for c, _ in value_cols)
        agg = engine.query(
            f"SELECT {', '.join(sel)} FROM {source} e {' '.join(joins)} WHERE {filt} GROUP BY e.account_id"
        )
        at = np.array([pos[a] for a in agg.column("account_id").to_pylist()], dtype=np.int64)
        for kind in kinds:
            n = np.asarray(agg.column(f"{kind}_n").to_numpy(zero_copy_only=False), dtype=np.float64)
            hit = n > 0
            a = at[hit]
            counts[kind] = int(n.sum())
            share = np.zeros(len(n_ex))
            share[a] = n[hit] / np.maximum(n_ex[a], 1.0)
            cols[f"intel_{kind}_share"] = share
            cols[f"intel_{kind}_conf"][a] = np.asarray(agg.column(f"{kind}_conf").to_pylist(), dtype=float)[
                hit
            ]
            cols[f"intel_{kind}_block"][a] = np.asarray(agg.column(f"{kind}_blk").to_pylist(), dtype=float)[
                hit
            ]
            inds = np.asarray(agg.column(f"{kind}_ind").to_pylist(), dtype=object)[hit]
            cols[f"intel_{kind}_indicator"][a] = [self.indicators[int(k)].id for k in inds]
            cols[f"intel_{kind}_example"][a] = np.asarray(agg.column(f"{kind}_ex").to_pylist(), dtype=object)[
                hit
            ]
        return self._sightings(engine, pairs, value_cols, source)

    def _sightings(
        self,
        engine: Engine,
        pairs: dict[str, list[tuple[object, int]]],
        value_cols: list[tuple[int, str]],
        source: str,
    ) -> pa.Table:
        """Per indicator: exchanges, first and last time, accounts (every indicator that matched a value,
        not only the strongest)."""
        per_value: list[tuple[int, tuple]] = []
        for c, col in value_cols:
            t = engine.query(
                f"SELECT e.{col} AS value, count(*) AS n, min(e.ts) AS first_seen, max(e.ts) AS last_seen, "
                f"count(DISTINCT e.account_id) AS accounts FROM {source} e "
                f"WHERE e.{col} IN (SELECT value FROM dg_m{c}) GROUP BY e.{col}"
            )
            stats = {
                v: (n, f, l_, a)
                for v, n, f, l_, a in zip(
                    t.column("value").to_pylist(),
                    t.column("n").to_pylist(),
                    t.column("first_seen").to_pylist(),
                    t.column("last_seen").to_pylist(),
                    t.column("accounts").to_pylist(),
                    strict=True,
                )
            }
            per_value.extend((k, stats[v]) for v, k in pairs[col] if v in stats)
        agg: dict[int, list] = {}
        for k, (n, f, l_, a) in per_value:
            e = agg.setdefault(k, [0, f, l_, 0])
            e[0] += n
            e[1] = min(e[1], f)
            e[2] = max(e[2], l_)
            e[3] += a  # an upper bound when one indicator matched several values of one account
        ks = sorted(agg)
        return pa.table(
            {
                "indicator_id": pa.array([self.indicators[k].id for k in ks], pa.string()),
                "n": pa.array([agg[k][0] for k in ks], pa.int64()),
                "first_seen": pa.array([agg[k][1] for k in ks], pa.timestamp("us", "UTC")),
                "last_seen": pa.array([agg[k][2] for k in ks], pa.timestamp("us", "UTC")),
                "accounts": pa.array([agg[k][3] for k in ks], pa.int64()),
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
