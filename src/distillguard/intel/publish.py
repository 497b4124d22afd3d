"""From a scan's campaigns to shareable indicators: digests, sketches and infrastructure, never raw
prompts or raw customer identifiers.

For every campaign at or above `min_level`, the publisher emits:
- the campaign (a STIX-style id of its own, not the scan's id, with counts and MITRE ATLAS techniques);
- keyed digests of its members' account ids, and of the organisations, payment and device
  fingerprints that only campaign members used (purity: a fingerprint shared with customers outside the
  campaign is not theirs alone, and publishing it would get a legitimate customer blocked elsewhere);
- addresses, ASNs and user agents whose traffic is mostly the campaign's (`ip_purity`, `asn_purity`,
  `ua_purity`), with confidence scaled by that purity and the campaign's score;
- keyed MinHash sketches of its templates (`intel.skeleton.cluster_templates`) when the template's
  traffic is mostly the campaign's.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.detect.evidence import LEVELS
from distillguard.detect.skeletons import Templates
from distillguard.intel.indicator import (
    ATLAS_EXTRACT_MODEL,
    ATLAS_TRAIN_PROXY,
    TLP,
    Campaign,
    Indicator,
    IndicatorType,
    Organisation,
    Provenance,
    Records,
)
from distillguard.intel.match import lsh_pairs
from distillguard.intel.privacy import Keyring, encode_sketch
from distillguard.intel.skeleton import MIN_WORDS, consensus, projections


class PublishError(ValueError):
    pass


def stable_id(kind: str, *parts: str) -> str:
    """Ids that do not change when the same scan is published twice (re-publishing updates, not adds)."""
    return f"{kind}--{uuid.uuid5(uuid.NAMESPACE_URL, 'distillguard:' + '|'.join(parts))}"


def _read_scan(scan_dir: Path) -> tuple[list[dict], pa.Table | None]:
    camps_path = scan_dir / "campaigns.json"
    if not camps_path.exists():
        raise PublishError(
            f"{scan_dir} is not a scan output (no campaigns.json): run `distillguard scan` first"
        )
    camps = orjson.loads(camps_path.read_bytes())
    sk_path = scan_dir / "skeletons.parquet"
    return camps, pq.read_table(sk_path) if sk_path.exists() else None


def publish(
    scan_dir: Path,
    keyring: Keyring,
    org: Organisation,
    min_level: str = "suspect",
    tlp: TLP = TLP.AMBER,
    ip_purity: float = 0.8,
    asn_purity: float = 0.5,
    ua_purity: float = 1.0,  # a user agent is shared by everyone on the same SDK version
    fp_purity: float = 1.0,
    template_purity: float = 0.8,
    valid_days: int = 90,
    now: datetime | None = None,
    campaigns: Sequence[str] | None = None,
    accounts: Sequence[str] | None = None,
    network: bool = True,
) -> Records:
    """Shareable records for the campaigns of the scan in `scan_dir` (see the module doc).

    By default every campaign at or above `min_level`; `campaigns` names scan campaigns to publish
    instead, and `accounts` publishes an operation an analyst confirmed (any accounts of the scan, one
    campaign), whatever their scores. `network=False` shares digests and sketches only: no address, ASN
    or user agent leaves (members then match addresses by PSI, see intel.psi).
    """
    if not network:
        ip_purity = asn_purity = ua_purity = float("inf")  # no value is that pure: none is published
    if min_level not in LEVELS:
        raise PublishError(f"min_level must be one of {LEVELS}, not {min_level!r}")
    at = now or datetime.now(UTC)
    camps, sk = _read_scan(scan_dir)
    floor = LEVELS.index(min_level)
    if campaigns is not None:
        known = {c["campaign_id"] for c in camps}
        unknown = sorted(set(campaigns) - known)
        if unknown:
            raise PublishError(f"no campaign {', '.join(unknown)} in {scan_dir / 'campaigns.json'}")
        chosen = [c for c in camps if c["campaign_id"] in set(campaigns)]
    else:
        chosen = [c for c in camps if LEVELS.index(c["verdict"]) >= floor]
    if accounts is not None:
        chosen = [*chosen, _confirmed(scan_dir, sorted(set(accounts)))]
    recs = Records(organisations=[org])
    if not chosen:
        return recs
    ex_path = scan_dir / "exchanges.parquet"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        con.execute(f"CREATE VIEW ex AS SELECT * FROM read_parquet('{ex_path.as_posix()}')")
        members = pa.table(
            {
                "account_id": pa.array([a for c in chosen for a in c["accounts"]], pa.string()),
                "campaign": pa.array([c["campaign_id"] for c in chosen for _ in c["accounts"]], pa.string()),
            }
        )
        con.register("members", members)
        for c in chosen:
            recs = _campaign_records(
                con, c, sk, keyring, org, tlp, at, valid_days,
                {"ip": ip_purity, "asn": asn_purity, "ua": ua_purity, "fp": fp_purity, "tpl": template_purity},
                recs,
            )  # fmt: skip
    finally:
        con.close()
    return recs


def _confirmed(scan_dir: Path, accounts: list[str]) -> dict:
    """An analyst-confirmed operation as a campaign record of the scan's shape."""
    t = pq.read_table(scan_dir / "accounts.parquet", columns=["account_id", "n_exchanges"])
    n = dict(zip(t.column("account_id").to_pylist(), t.column("n_exchanges").to_pylist(), strict=True))
    missing = [a for a in accounts if a not in n]
    if missing:
        raise PublishError(f"{len(missing)} confirmed accounts are not in the scan, e.g. {missing[0]!r}")
    return {
        "campaign_id": "confirmed:" + hashlib.sha256("\n".join(accounts).encode()).hexdigest()[:16],
        "accounts": accounts,
        "n_accounts": len(accounts),
        "n_exchanges": sum(n[a] for a in accounts),
        "score": 1.0,  # confirmed by an analyst
        "verdict": "block",
    }


def _pure_values(con: duckdb.DuckDBPyConnection, col: str, campaign: str, purity: float) -> list[tuple]:
    """Values of `col` that the campaign used and whose traffic is at least `purity` from published
    campaigns (one operation often runs several campaigns, split by template, over the same addresses),
    attributed to the campaign that sent most of it: (value, exchanges, share, first ts, last ts)."""
    return con.execute(
        f"""
        WITH per AS (
          SELECT e.{col} AS value, m.campaign, count(*) AS n, min(e.ts) AS first_ts, max(e.ts) AS last_ts
          FROM ex e LEFT JOIN members m ON e.account_id = m.account_id
          WHERE e.{col} IS NOT NULL
          GROUP BY e.{col}, m.campaign
        ),
        v AS (
          SELECT value, sum(n) AS n, sum(n) FILTER (WHERE campaign IS NOT NULL) AS n_pub,
                 arg_max(campaign, CASE WHEN campaign IS NULL THEN -1 ELSE n END) AS top,
                 min(first_ts) FILTER (WHERE campaign IS NOT NULL) AS first_ts,
                 max(last_ts) FILTER (WHERE campaign IS NOT NULL) AS last_ts
          FROM per GROUP BY value
        )
        SELECT value, n_pub, n_pub / n AS share, first_ts, last_ts FROM v
        WHERE top = ? AND n_pub / n >= ? ORDER BY n_pub DESC, value
        """,
        [campaign, purity],
    ).fetchall()


def _campaign_records(
    con: duckdb.DuckDBPyConnection,
    c: dict,
    sk: pa.Table | None,
    keyring: Keyring,
    org: Organisation,
    tlp: TLP,
    at: datetime,
    valid_days: int,
    purity: dict[str, float],
    recs: Records,
) -> Records:
    from datetime import timedelta

    cid_local = c["campaign_id"]
    # The shared id is derived from the keyed digest of our campaign id: stable across re-publishing,
    # meaningless to anyone else.
    cdig = keyring.digest(IndicatorType.CAMPAIGN, f"{org.id}/{cid_local}")
    camp_id = stable_id("campaign", cdig)
    score = float(c["score"])
    n_acc = int(c["n_accounts"])
    first, last = con.execute(
        "SELECT min(e.ts), max(e.ts) FROM ex e JOIN members m ON e.account_id = m.account_id WHERE m.campaign = ?",
        [cid_local],
    ).fetchone() or (at, at)
    first = _utc(first) or at
    last = _utc(last) or at
    camp = Campaign(
        id=camp_id,
        name=f"distillation campaign {cdig[:10]}",
        description=f"{n_acc} accounts, {int(c['n_exchanges'])} exchanges; score {score:.2f} ({c['verdict']})",
        source_org=org.id,
        first_seen=first,
        last_seen=last,
        techniques=[ATLAS_EXTRACT_MODEL, ATLAS_TRAIN_PROXY],
        tlp=tlp,
    )
    prov = [Provenance(org=org.id, received=at, via="publish")]
    base_conf = 50 + 45 * min(max(score, 0.0), 1.0)  # 50 at score 0 (never published), 95 at 1
    valid_until = at + timedelta(days=valid_days)
    inds: list[Indicator] = []

    def add(
        kind: IndicatorType, value: str, conf: float, f: datetime, l_: datetime, name: str, **kw: object
    ) -> None:
        inds.append(
            Indicator(
                id=stable_id("indicator", camp_id, kind.value, value),
                type=kind,
                value=value,
                confidence=round(min(max(conf, 0.0), 100.0)),
                first_seen=f,
                last_seen=l_,
                valid_until=valid_until,
                tlp=tlp,
                source_org=org.id,
                campaign_id=camp_id,
                techniques=[ATLAS_EXTRACT_MODEL, ATLAS_TRAIN_PROXY],
                name=name,
                provenance=prov,
                **kw,
            )
        )

    epoch = keyring.current
    # member accounts: digests only
    for a in sorted(c["accounts"]):
        add(IndicatorType.ACCOUNT, keyring.digest(IndicatorType.ACCOUNT, a), base_conf, first, last,
            "campaign member account", key_epoch=epoch)  # fmt: skip
    # fingerprints used only by the campaign
    for col, kind in (
        ("org_id", IndicatorType.ORGANISATION),
        ("payment_fp", IndicatorType.PAYMENT),
        ("device_fp", IndicatorType.DEVICE),
    ):
        for value, _n, share, f, l_ in _pure_values(con, col, cid_local, purity["fp"]):
            add(kind, keyring.digest(kind, str(value)), base_conf * share, _utc(f) or first, _utc(l_) or last,
                f"{kind.value} used only by the campaign", key_epoch=epoch)  # fmt: skip
    # infrastructure: raw values (they identify infrastructure, not customers), when mostly the campaign's
    for value, _n, share, f, l_ in _pure_values(con, "client_ip", cid_local, purity["ip"]):
        kind = IndicatorType.IPV6 if ":" in str(value) else IndicatorType.IPV4
        add(kind, str(value), base_conf * share, _utc(f) or first, _utc(l_) or last,
            f"address carrying campaign traffic ({share:.0%} of its exchanges)")  # fmt: skip
    for value, _n, share, f, l_ in _pure_values(con, "asn", cid_local, purity["asn"]):
        add(IndicatorType.ASN, str(value), 0.7 * base_conf * share, _utc(f) or first, _utc(l_) or last,
            f"ASN carrying campaign traffic ({share:.0%} of its exchanges)")  # fmt: skip
    for value, n, share, f, l_ in _pure_values(con, "user_agent", cid_local, purity["ua"]):
        if n >= 20:  # a user agent seen a handful of times says nothing
            add(IndicatorType.USER_AGENT, str(value), 0.6 * base_conf * share, _utc(f) or first,
                _utc(l_) or last, "user agent of campaign traffic")  # fmt: skip
    # templates: only keyed sketches of them leave
    if sk is not None and sk.num_rows:
        chosen = _campaign_templates(sk, set(c["accounts"]), purity["tpl"])
        sketches: Any = keyring.sketch([t for t, _ in chosen]) if chosen else []
        for (_text, n_acc_t), sig in zip(chosen, sketches, strict=True):
            add(IndicatorType.SKELETON, encode_sketch(sig), 0.8 * base_conf, first, last,
                f"campaign prompt template ({n_acc_t} accounts)", key_epoch=epoch)  # fmt: skip
    recs.campaigns.append(camp)
    recs.indicators.extend(inds)
    return recs


def _campaign_templates(
    sk: pa.Table, accounts: set[str], purity: float, cap: int = 32
) -> list[tuple[str, int]]:
    """The campaign's templates (text, accounts using it): projections (see intel.skeleton) used by at least two
    member accounts, whose look-alikes in the rest of the traffic are under 1 - `purity` of their use
    (a template that customers also run, such as a back-office job, is not the operation's), near
    duplicates collapsed, the `cap` most used kept."""
    from distillguard.detect import minhash

    acc = np.asarray(sk.column("account_id").to_pylist(), dtype=object)
    tpl = Templates(
        account_id=acc,
        cluster=np.asarray(sk.column("cluster").to_numpy(), dtype=np.int64),
        cnt=np.asarray(sk.column("cnt").to_numpy(), dtype=np.float64),
        length=np.asarray(sk.column("length").to_numpy(), dtype=np.int64),
        skel=sk.column("skel").combine_chunks(),
    )
    proj = projections(tpl)
    mine = np.array([a in accounts for a in acc], dtype=bool)
    has = proj != None  # noqa: E711 - elementwise on an object array
    ours: dict[str, list] = {}
    for p, a, c in zip(proj[has & mine], acc[has & mine], tpl.cnt[has & mine], strict=True):
        e = ours.setdefault(p, [0.0, set()])
        e[0] += c
        e[1].add(a)
    texts = list(ours)
    if not texts:
        return []
    # Variants of one template (fillers leave a few of their common words in a projection) group
    # together; a group used by two or more member accounts is a template of the campaign, shared as
    # the words most of its variants hold.
    groups = minhash.cluster(minhash.sketch(texts), 0.5)
    w_all = np.array([ours[t][0] for t in texts])
    cand, weight, n_acc = [], [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        accs = set().union(*(ours[texts[i]][1] for i in idx))
        if len(accs) < 2:
            continue
        cand.append(consensus([texts[i] for i in idx], w_all[idx]))
        weight.append(float(w_all[idx].sum()))
        n_acc.append(len(accs))
    cand_ok = [i for i, c in enumerate(cand) if len(set(c.split()) - {"#"}) >= MIN_WORDS]
    if not cand_ok:
        return []
    cand = [cand[i] for i in cand_ok]
    weight_a = np.array([weight[i] for i in cand_ok])
    n_acc = [n_acc[i] for i in cand_ok]
    csk = minhash.sketch(cand)
    # look-alikes outside the campaign
    outside: np.ndarray = np.zeros(len(cand))
    others = proj[has & ~mine]
    if len(others):
        o_text, o_inv = np.unique(others.astype(str), return_inverse=True)
        o_w = np.bincount(o_inv, weights=tpl.cnt[has & ~mine])
        ci, oi = lsh_pairs(csk, minhash.sketch(o_text.tolist()), 0.5)
        outside = np.bincount(ci, weights=o_w[oi], minlength=len(cand)).astype(np.float64)
    pure = np.flatnonzero(weight_a / (weight_a + outside) >= purity)
    keep = pure[np.argsort(-weight_a[pure], kind="stable")][:cap].tolist()
    return [(cand[i], n_acc[i]) for i in keep]


def _utc(v: object) -> datetime | None:
    if not isinstance(v, datetime):
        return None
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
