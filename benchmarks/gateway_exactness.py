"""Gateway exactness bar (issue 4), end to end through real `distillguard gateway serve` processes.

    .venv/bin/python benchmarks/gateway_exactness.py                  # 4 gateways, 1,000 clients, 100k TPM, 45 s
    .venv/bin/python benchmarks/gateway_exactness.py --seconds 75     # long enough for the window to slide
    .venv/bin/python benchmarks/gateway_exactness.py --identity-db postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/gateway_exactness.py --redis redis://host:6379/0 --gateways 8 --clients 2000

A counting mock upstream and N gateway processes (one Redis, one identity database, an audit log each);
C concurrent clients (asyncio, one coroutine each, until the deadline) on ONE key with a TPM limit; a
second key probed on every gateway and revoked midway through the admin CLI
(`distillguard gateway revoke-key`). See `distillguard.gateway.limits.clustercheck` for what is counted.

Bars checked (exit 1 when one fails):
- the most real usage admitted in any 60 s window <= limit + one request's reservation;
- the clients', the audit logs' and the mock's counts of admitted requests and tokens agree, and every
  request sent is one audit record;
- a key revoked while the gateways idle is refused by every gateway within 1 s (arrival of its first
  refused request after `revoked_at`); a key revoked under load is refused by every gateway; no request
  arriving later than 1 s after a revocation is admitted. (Under a load that queues requests for seconds,
  the first refusal's arrival also waits in the queue: reported as `revocation.load.gateway_ms`.)

Prints a JSON summary (and writes it with --out).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson

from distillguard.gateway.limits.clustercheck import ClusterSpec, run_cluster


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--identity-db", default=None, help="SQLAlchemy URL (default: a SQLite file)")
    ap.add_argument("--gateways", type=int, default=4)
    ap.add_argument("--clients", type=int, default=1_000)
    ap.add_argument("--seconds", type=float, default=45.0, help="load duration (< 60: one TPM window)")
    ap.add_argument("--tpm", type=int, default=100_000)
    ap.add_argument("--revoke-after", type=float, default=3.0, help="seconds into the run")
    ap.add_argument("--no-fsync", action="store_true", help="audit without fsync (kill -9 safe only)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep configs, logs and audit logs here")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    a = ap.parse_args()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="dg-exactness-"))
    spec = ClusterSpec(
        redis_url=a.redis,
        workdir=workdir,
        gateways=a.gateways,
        clients=a.clients,
        seconds=a.seconds,
        tpm=a.tpm,
        revoke_after_s=a.revoke_after,
        identity_db=a.identity_db,
        fsync=not a.no_fsync,
    )
    res = run_cluster(spec)
    s = res.summary()
    load, idle = res.revocations["load"], res.revocations["idle"]
    checks = {
        "exact: max 60 s window <= limit + one reservation": res.exact,
        "limit reached (refusals happened)": res.statuses[429] > 0,
        "transport errors (keep-alive races) <= 1%": sum(res.errors.values()) <= res.sent // 100,
        "admitted: audit == mock, clients == audit but for lost answers": res.audit_ok == res.mock_ok
        and res.client_ok <= res.audit_ok
        and res.audit_ok - res.client_ok <= res.unanswered,
        "tokens: audit == mock": res.audit_tokens == res.mock_tokens,
        "every request read is one audit record": res.audit_records
        == res.sent - len(res.unanswered) + res.unanswered_in_audit
        and res.audit_duplicates == 0,
        "revoked key refused by every gateway within 1 s (idle)": idle.worst_s is not None
        and idle.worst_s <= 1.0,
        "no request admitted > 1 s after a revocation (under load, idle)": load.late_admitted == 0
        and idle.late_admitted == 0,
        "every gateway refused the key revoked under load": all(
            v is not None for v in load.gateway_s.values()
        ),
    }
    s["checks"] = checks
    s["workdir"] = str(workdir)
    out = orjson.dumps(s, option=orjson.OPT_INDENT_2).decode()
    print(out)
    if a.out:
        a.out.write_text(out + "\n")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}", file=sys.stderr)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
