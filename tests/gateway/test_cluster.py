"""The exactness bar through real gateway processes (`distillguard gateway serve`) sharing Redis.

A small version of `benchmarks/gateway_exactness.py`: 4 gateways, 200 concurrent clients on one key with
a 100k TPM limit; a probe key revoked through the admin CLI while the load runs, another once it is over
(each phase probes all 4 gateways). Under heavy machine load the run takes ~60 s (4 process starts).
Redis at
$DISTILLGUARD_TEST_REDIS (default redis://127.0.0.1:6379/0, keys under a fresh prefix, deleted after);
without Redis the test skips, except under CI (env CI set): it fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from distillguard.gateway.limits.clustercheck import ClusterSpec, run_cluster

from .conftest import Env


@pytest.mark.timeout(120)
def test_four_gateways_share_one_exact_budget_and_revocation(tmp_path: Path, redis_url: str) -> None:
    spec = ClusterSpec(
        redis_url=redis_url,
        workdir=tmp_path,
        gateways=4,
        clients=200,
        seconds=6.0,
        tpm=100_000,
        revoke_after_s=0.5,
    )
    res = run_cluster(spec)
    s = res.summary()
    # every request got an HTTP answer, spread over the 4 processes; but on an overloaded machine (request
    # latencies of seconds) a few connections fail with a ReadError, sometimes after the gateway served the
    # request (an open issue, see docs/gateway.md): tolerated up to 5 %, and accounted for below
    assert set(res.errors) <= {"ReadError", "RemoteProtocolError"}, s
    assert sum(res.errors.values()) <= max(2, res.sent // 20), s
    assert len(res.per_gateway) == 4 and min(res.per_gateway.values()) > 0, s
    assert set(res.statuses) <= {200, 429}, s
    assert res.statuses[429] > 0, "the limit must bind for the run to test anything"
    # the three counts agree: what the audit logs hold is what the mock served, and what the clients were
    # given, but for requests whose answer a failed connection lost (see the errors above)
    assert res.audit_ok == res.mock_ok and res.audit_tokens == res.mock_tokens, s
    assert res.client_ok <= res.audit_ok and res.audit_ok - res.client_ok <= res.unanswered, s
    assert res.client_tokens <= res.audit_tokens, s
    # every request the gateways read is one audit record (an unanswered one only if it was read)
    assert res.audit_records == res.sent - len(res.unanswered) + res.unanswered_in_audit, s
    assert res.audit_duplicates == 0, s
    # exactness across processes: never more than one reservation over the limit
    assert res.max_window_tokens <= spec.tpm + res.max_reservation, s
    # the refusals were the shared budget's: a request is refused only when the reservations admitted
    # (before their refunds) leave less than its own, so more than limit - one reservation was admitted
    # across the 4 processes (a per-process budget, or a spurious refusal, fails this)
    assert res.admitted_reservations > spec.tpm - res.max_reservation, s
    # revocation through the admin CLI reached every process: under load, none admitted the key more than
    # 1 s after it was revoked; idle, each refused it within 1 s
    for phase, rv in res.revocations.items():
        assert all(v > 0 for v in rv.admitted_before.values()), (phase, s)
        assert rv.late_admitted == 0, (phase, s)
        # each refusal's audit record names the revoked key (who keeps using a revoked key is evidence)
        assert rv.refused > 0 and rv.refused_attributed == rv.refused, (phase, s)
    idle = res.revocations["idle"]
    assert idle.worst_s is not None and idle.worst_s <= 1.0, s


def test_a_revoked_keys_refusal_names_the_key_in_the_audit(env: Env) -> None:
    """In process: the refusal of a revoked key is recorded with its key, account and organisation."""
    client = env.client("verified")
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "before"}])
    revoked = time.time()
    env.store.revoke_key(env.key_ids["verified"])
    deadline = time.monotonic() + 5
    while True:  # the cache is emptied at the next revision poll (0.25 s)
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "after"}])
        except openai.AuthenticationError as e:
            assert e.code == "api_key_revoked"
            break
        assert time.monotonic() < deadline, "the revoked key kept working"
        time.sleep(0.05)
    assert time.time() - revoked < 1.0
    rec = [r for r in env.audit_rows() if r.get("status") == 401][-1]
    assert rec["api_key_id"] == env.key_ids["verified"]
    assert (rec["account_id"], rec["org_id"]) == ("acct_v", "org_acme")
    assert rec["attributes"]["refusal"] == "api_key_revoked"
