"""Intel blocklists at request time: addresses, ranges, ASNs, account digests; revocation on refresh."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig, IntelGateConfig
from distillguard.gateway.geo import bundled_dbs
from distillguard.gateway.intel import IntelGate
from distillguard.intel.indicator import Indicator, IndicatorType, Records, Sighting, SightingKind
from distillguard.intel.privacy import Keyring
from distillguard.intel.store import IntelStore

from .conftest import Env, ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

MSG = [{"role": "user", "content": "hi"}]
ORG = "identity--provider-a"


def _ind(t: IndicatorType, value: str, **kw: Any) -> Indicator:
    return Indicator(type=t, value=value, confidence=90, source_org=ORG, **kw)


@pytest.fixture
def intel_db(tmp_path: Path) -> dict[str, Any]:
    """A store with blocking indicators of each kind and a warninglisted (non-blocking) address."""
    ring = Keyring.generate(epoch=1)
    ring.save(tmp_path / "keys.json")
    inds = {
        "ip": _ind(IndicatorType.IPV4, "192.0.2.66"),
        "cidr": _ind(IndicatorType.CIDR, "198.51.100.0/28"),
        "asn": _ind(IndicatorType.ASN, "AS64500"),  # 203.0.113.128/25 in the bundled geo database
        "account": _ind(IndicatorType.ACCOUNT, ring.digest("account", "acct_u", 1), key_epoch=1),
        "org_other": _ind(
            IndicatorType.ORGANISATION, ring.digest("organisation", "org_evil", 1), key_epoch=1
        ),
        # Cloudflare's published range is on a shipped warninglist: matches, never blocks alone
        "warninglisted": _ind(IndicatorType.IPV4, "173.245.48.5"),
        "ua": _ind(IndicatorType.USER_AGENT, "scraper/1.0"),
    }
    with IntelStore.open(tmp_path / "intel.db") as store:
        store.add(Records(indicators=list(inds.values())))
    return {"path": tmp_path / "intel.db", "keyring": tmp_path / "keys.json", "ids": inds, "ring": ring}


def intel_config(tmp: Path, up_url: str, intel_db: dict[str, Any], **gate: Any) -> GatewayConfig:
    d = gateway_config(tmp, up_url).model_dump()
    country, asn = bundled_dbs()
    d["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    d["geo"] = {"country_db": country, "asn_db": asn}
    d["intel"] = {"db": str(intel_db["path"]), "keyring": intel_db["keyring"], **gate}
    return GatewayConfig.model_validate(d)


@contextmanager
def _serve(
    tmp: Path, upstream: tuple[MockUpstream, str], intel_db: dict[str, Any], **gate: Any
) -> Iterator[Env]:
    mock, up_url = upstream
    cfg = intel_config(tmp, up_url, intel_db, **gate)
    store, secrets_, ids = make_store(tmp, cfg)
    limiter = ScriptedLimiter()
    app = Gateway(cfg, limiter=limiter, store=store)
    with serve_in_thread(app) as url:
        yield Env(url, mock, store, limiter, app, cfg, secrets_, ids)


@pytest.fixture
def serve(tmp_path: Path, upstream: tuple[MockUpstream, str], intel_db: dict[str, Any]) -> Callable[..., Any]:
    return lambda **gate: _serve(tmp_path, upstream, intel_db, **gate)


def _call(env: Env, ip: str, tier: str = "verified", **headers: str) -> Any:
    return env.client(tier).chat.completions.create(
        model="mock-mini",
        messages=MSG,  # type: ignore[arg-type]
        extra_headers={"X-Forwarded-For": ip, **headers},
    )


def test_tables_and_assessments(intel_db: dict[str, Any]) -> None:
    gate = IntelGate(IntelGateConfig(db=str(intel_db["path"]), keyring=intel_db["keyring"]))
    t = gate.reload()
    ids = {k: v.id for k, v in intel_db["ids"].items()}
    assert t.count == 7 and t.prefixes[4] == (28,)
    m = gate.match("198.51.100.9", None, None, None, None)
    assert m.blocking == [ids["cidr"]] and m.other == []
    assert gate.match("198.51.100.16", None, None, None, None).blocking == []  # outside the /28
    # in match order (address, ASN, user agent, digests), not id order
    assert gate.match("10.0.0.1", 64500, "scraper/1.0", None, None).blocking == [ids["asn"], ids["ua"]]
    m = gate.match("173.245.48.5", None, None, "acct_v", "org_evil")
    assert m.other == [ids["warninglisted"]] and m.blocking == [ids["org_other"]]
    assert gate.match(None, None, None, "acct_u", None).blocking == [ids["account"]]
    gate.store.close()


def test_blocking_matches_are_refused_with_the_indicator_recorded(
    serve: Callable[..., Any], intel_db: dict[str, Any]
) -> None:
    ids = {k: v.id for k, v in intel_db["ids"].items()}
    with serve() as env:
        _call(env, "192.0.2.10")  # clean address, clean account
        for ip, tier, which in (
            ("192.0.2.66", "verified", "ip"),
            ("198.51.100.3", "verified", "cidr"),
            ("203.0.113.200", "verified", "asn"),
            ("192.0.2.10", "unverified", "account"),
        ):
            with pytest.raises(openai.PermissionDeniedError) as ei:
                _call(env, ip, tier)
            assert ei.value.code == "intel_block" and ids[which] in ei.value.message
        _call(env, "173.245.48.5")  # warninglisted: admitted, recorded as a match
        rows = env.audit_rows()
        assert len(env.limiter.admits) == 2  # blocked requests never reached the limiter
    clean, *blocked, warned = rows
    assert clean.get("status", 200) == 200 and "intel.indicator" not in clean["attributes"]
    for row, which in zip(blocked, ("ip", "cidr", "asn", "account"), strict=True):
        assert row["status"] == 403 and row["attributes"]["refusal"] == "intel_block"
        assert row["attributes"]["intel.indicator"] == ids[which]
        assert row["attributes"]["intel.action"] == "block"
    assert blocked[2]["asn"] == 64500 and blocked[3]["account_id"] == "acct_u"
    assert warned.get("status", 200) == 200
    assert warned["attributes"]["intel.match"] == ids["warninglisted"]
    assert "intel.indicator" not in warned["attributes"]


def test_revocation_stops_blocking_after_refresh(serve: Callable[..., Any], intel_db: dict[str, Any]) -> None:
    ip_ind = intel_db["ids"]["ip"]
    with serve(refresh_s=0.2) as env:
        with pytest.raises(openai.PermissionDeniedError):
            _call(env, "192.0.2.66")
        with IntelStore.open(intel_db["path"]) as store:
            now = datetime.now(UTC)
            store.add_sighting(
                Sighting(
                    indicator_id=ip_ind.id,
                    kind=SightingKind.EXPIRED,
                    reporter=ORG,
                    first_seen=now,
                    last_seen=now,
                )
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                _call(env, "192.0.2.66")
                break
            except openai.PermissionDeniedError:
                assert time.monotonic() < deadline, "revoked indicator still blocks after 10 s"
                time.sleep(0.1)
        last = env.audit_rows()[-1]
        assert last.get("status", 200) == 200 and "intel.indicator" not in last["attributes"]
        assert env.app.intel is not None and env.app.intel.refresh_failures == 0


def test_throttle_action(serve: Callable[..., Any], intel_db: dict[str, Any]) -> None:
    with serve(action="throttle") as env:
        with pytest.raises(openai.RateLimitError) as ei:
            _call(env, "192.0.2.66")
        assert ei.value.code == "intel_throttle"
        assert ei.value.response.headers["retry-after"] == "60"
        (row,) = env.audit_rows()
    assert row["status"] == 429 and row["attributes"]["intel.indicator"] == intel_db["ids"]["ip"].id


def test_log_action_admits_and_records(serve: Callable[..., Any], intel_db: dict[str, Any]) -> None:
    with serve(action="log") as env:
        _call(env, "192.0.2.66", **{"User-Agent": "scraper/1.0"})
        (row,) = env.audit_rows()
    ids = intel_db["ids"]
    assert row.get("status", 200) == 200 and row["attributes"]["intel.action"] == "log"
    assert set(row["attributes"]["intel.indicator"].split(",")) == {ids["ip"].id, ids["ua"].id}
