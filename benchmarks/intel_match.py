"""Intel matching throughput: 1M exchanges against 100k indicators (issue 3's bar).

    python benchmarks/intel_match.py            # 1M bench log, 100k indicators, 3 runs
    python benchmarks/intel_match.py --runs 5

Indicators: 40k IPv4 addresses, 20k IPv4 CIDRs (/16 to /29), 5k IPv6 addresses, 5k ASNs, 2k user
agents, 18k keyed digests (accounts, organisations, payment and device fingerprints) and 10k keyed
skeleton sketches. A tenth of the addresses, digests and ASNs are drawn from the traffic, so joins have
hits to produce; the rest are random. The exact matches (everything but sketches) are timed over the
Parquet of the 1M bench log, and reported as exchanges/s (bar: >= 100,000 on 2 cores); the LSH match of
sampled skeletons against the 10k sketches is timed and reported on its own. The row features and the
skeleton sample it needs are computed first and not timed (the scan computes them anyway).
Results: bench-out/intel-match.json. Exits 1 when the exact-match bar fails.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import sys
import time
from pathlib import Path

import orjson

import data

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out"
MIN_RATE = 100_000


def indicators(con: object, keyring: object, seed: int = 1) -> list:
    from distillguard.intel.indicator import Indicator, IndicatorType

    rng = random.Random(seed)
    q = con.query  # type: ignore[attr-defined]

    def col(sql: str) -> list:
        return [v for v in q(sql).column(0).to_pylist() if v is not None]

    ips = col("SELECT DISTINCT client_ip FROM exchanges WHERE client_ip LIKE '%.%'")
    asns = col("SELECT DISTINCT asn FROM exchanges")
    accts = col("SELECT DISTINCT account_id FROM exchanges")
    uas = col("SELECT DISTINCT user_agent FROM exchanges")
    src = "identity--00000000-0000-4000-8000-000000000001"
    out = []

    def add(t: IndicatorType, v: str, **kw: object) -> None:
        out.append(Indicator(type=t, value=v, source_org=src, **kw))  # type: ignore[arg-type]

    for i in range(40_000):
        v = rng.choice(ips) if i % 10 == 0 else str(ipaddress.IPv4Address(rng.getrandbits(32)))
        add(IndicatorType.IPV4, v)
    for _ in range(20_000):
        plen = rng.randint(16, 29)
        add(IndicatorType.CIDR, str(ipaddress.ip_network((rng.getrandbits(32), plen), strict=False)))
    for _ in range(5_000):
        add(IndicatorType.IPV6, str(ipaddress.IPv6Address(rng.getrandbits(128))))
    for i in range(5_000):
        add(IndicatorType.ASN, str(rng.choice(asns) if i % 10 == 0 and asns else rng.randint(1, 400_000)))
    for i in range(2_000):
        add(
            IndicatorType.USER_AGENT,
            rng.choice(uas) if i % 100 == 0 and uas else f"scraper/{i}.{rng.random():.6f}",
        )
    kinds = [IndicatorType.ACCOUNT, IndicatorType.ORGANISATION, IndicatorType.PAYMENT, IndicatorType.DEVICE]
    for i in range(18_000):
        t = kinds[i % 4]
        raw = (
            rng.choice(accts) if t is IndicatorType.ACCOUNT and i % 10 == 0 else f"x-{rng.getrandbits(64):x}"
        )
        add(t, keyring.digest(t, raw), key_epoch=keyring.current)  # type: ignore[attr-defined]
    from distillguard.intel.privacy import encode_sketch

    words = [
        "solve",
        "explain",
        "write",
        "grade",
        "summarize",
        "translate",
        "the",
        "a",
        "of",
        "to",
        "and",
        "step",
        "by",
        "reasoning",
        "answer",
    ]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(12, 40))) for _ in range(10_000)]
    for sk in keyring.sketch(texts):  # type: ignore[attr-defined]
        add(IndicatorType.SKELETON, encode_sketch(sk), key_epoch=keyring.current)  # type: ignore[attr-defined]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from distillguard.detect import features, skeletons
    from distillguard.detect.signals.base import signals
    from distillguard.intel.match import Matcher
    from distillguard.intel.privacy import Keyring
    from distillguard.store.engine import DuckDBEngine
    from distillguard.store.parquet import ingest

    log = data.bench_log(1_000_000)
    pq_path = OUT / "intel" / "exchanges.parquet"
    pq_path.parent.mkdir(parents=True, exist_ok=True)
    if not pq_path.exists():
        print(f"ingesting {log.name} ...", flush=True)
        ingest([log], pq_path, quarantine_path=pq_path.with_name("quarantine.jsonl"))
    engine = DuckDBEngine()
    engine.register_parquet("exchanges", pq_path)
    n = engine.query("SELECT count(*) FROM exchanges").column(0)[0].as_py()
    keyring = Keyring({1: bytes(32)})
    inds = indicators(engine, keyring)
    print(
        f"{n:,} exchanges, {len(inds):,} indicators; computing row features and skeleton sample ...",
        flush=True,
    )
    features.materialize_rows(engine, [c() for c in signals().values()])
    tpl = skeletons.templates(engine)
    # a tenth of the sketches are templates the traffic really runs (so LSH has hits to verify)
    from distillguard.intel.indicator import Indicator, IndicatorType
    from distillguard.intel.privacy import encode_sketch
    from distillguard.intel.skeleton import projections

    proj = sorted({p for p in projections(tpl).tolist() if p})
    random_sk = [i for i in inds if i.type == "skeleton"]
    real = [
        Indicator(
            type=IndicatorType.SKELETON,
            value=encode_sketch(sk),
            key_epoch=1,
            source_org=random_sk[0].source_org,
        )
        for sk in keyring.sketch(proj[:: max(1, len(proj) // 1000)][:1000])
    ]
    exact = Matcher([i for i in inds if i.type != "skeleton"], keyring=keyring)
    lsh = Matcher(random_sk[len(real) :] + real, keyring=keyring)
    runs = []
    for r in range(args.runs):
        t0 = time.perf_counter()
        m = exact.match(engine)
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = lsh.match(engine, tpl)
        t_lsh = time.perf_counter() - t0
        runs.append(
            {
                "exact_s": t_exact,
                "exact_rate": n / t_exact,
                "matched": m.counts,
                "lsh_s": t_lsh,
                "skeletons": len(tpl.cluster),
                "skeleton_matches": s.counts.get("skeleton", 0),
            }
        )
        print(
            f"  run {r + 1}/{args.runs}: exact {t_exact:.2f}s ({n / t_exact:,.0f} exchanges/s, matched "
            f"{sum(m.counts.values()):,}); LSH {t_lsh:.2f}s over {len(tpl.cluster):,} sampled skeletons",
            flush=True,
        )
    rate = statistics.median(x["exact_rate"] for x in runs)
    lsh_s = statistics.median(x["lsh_s"] for x in runs)
    ok = rate >= MIN_RATE
    print(f"exact matching: median {rate:,.0f} exchanges/s (bar >= {MIN_RATE:,}): {'PASS' if ok else 'FAIL'}")
    print(
        f"LSH skeleton matching: median {lsh_s:.2f}s for {len(tpl.cluster):,} sampled skeletons x 10k sketches"
    )
    (OUT / "intel-match.json").write_bytes(
        orjson.dumps(
            {"exchanges": n, "indicators": len(inds), "runs": runs, "pass": ok}, option=orjson.OPT_INDENT_2
        )
    )
    engine.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
