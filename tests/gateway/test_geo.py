"""Jurisdiction policy: country/ASN lookup from the generated databases, tier and global country rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig, GeoConfig, TierConfig
from distillguard.gateway.geo import GeoResolver, bundled_dbs
from distillguard.gateway.geo_build import TEST_HOSTING_ASNS, TEST_VPN_ASNS, build

from .conftest import Env, ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

MSG = [{"role": "user", "content": "hi"}]


def _resolver(country: Path, asn: Path, **kw: Any) -> GeoResolver:
    return GeoResolver(
        GeoConfig(
            country_db=country,
            asn_db=asn,
            hosting_asns=list(TEST_HOSTING_ASNS),
            vpn_asns=list(TEST_VPN_ASNS),
            **kw,
        )
    )


def test_lookup_bundled_databases() -> None:
    r = _resolver(*bundled_dbs())
    a = r.lookup("192.0.2.7")
    assert (a.country, a.asn, a.as_org, a.hosting, a.vpn) == (
        "XA",
        64497,
        "Example Residential ISP",
        False,
        False,
    )
    b = r.lookup("198.51.100.200")
    assert (b.country, b.asn, b.hosting) == ("XB", 64498, True)
    c = r.lookup("203.0.113.5")
    assert (c.country, c.asn, c.vpn) == ("XC", 64499, True)
    assert r.lookup("203.0.113.200").country == "XD"
    assert (r.lookup("127.0.0.1").country, r.lookup("::1").country) == ("XL", "XL")
    assert r.lookup("2001:db8:8000::1").asn == 64498
    for unknown in ("8.8.8.8", "not an address", None):
        assert r.lookup(unknown).country is None and r.lookup(unknown).asn is None
    r.close()


def test_build_reproduces_bundled(tmp_path: Path) -> None:
    pytest.importorskip("mmdb_writer")
    country, asn = build(tmp_path)
    assert max(country.stat().st_size, asn.stat().st_size) < 50_000
    built, shipped = _resolver(country, asn), _resolver(*bundled_dbs())
    for ip in ("127.0.0.1", "192.0.2.1", "198.51.100.1", "203.0.113.1", "203.0.113.129", "2001:db8::1"):
        assert built.lookup(ip) == shipped.lookup(ip)


def test_policy_rules() -> None:
    r = _resolver(*bundled_dbs(), denied_countries=["xd"], refuse_vpn=True)
    only_xa = TierConfig(jurisdictions=["xa"])
    anywhere = TierConfig()
    assert r.jurisdiction_error(r.lookup("192.0.2.1"), "t", only_xa) is None
    e = r.jurisdiction_error(r.lookup("198.51.100.1"), "t", only_xa)
    assert e is not None and e.status == 403 and e.code == "jurisdiction" and "XB" in e.message
    assert r.jurisdiction_error(r.lookup("198.51.100.1"), "t", anywhere) is None  # hosting: flagged only
    assert r.jurisdiction_error(r.lookup("203.0.113.200"), "t", anywhere) is not None  # denied country
    assert r.jurisdiction_error(r.lookup("203.0.113.1"), "t", anywhere) is not None  # VPN refused
    assert r.jurisdiction_error(r.lookup("8.8.8.8"), "t", only_xa) is not None  # unknown: fail closed
    assert r.jurisdiction_error(r.lookup("8.8.8.8"), "t", anywhere) is None


def geo_config(tmp: Path, up_url: str, **geo: Any) -> GatewayConfig:
    d = gateway_config(tmp, up_url).model_dump()
    country, asn = bundled_dbs()
    d["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    d["tiers"]["verified"]["jurisdictions"] = ["XA"]
    d["geo"] = {
        "country_db": country,
        "asn_db": asn,
        "hosting_asns": list(TEST_HOSTING_ASNS),
        "vpn_asns": list(TEST_VPN_ASNS),
        "denied_countries": ["XD"],
        **geo,
    }
    return GatewayConfig.model_validate(d)


@pytest.fixture
def geo_env(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> Iterator[Env]:
    mock, up_url = upstream
    cfg = geo_config(tmp_path, up_url)
    store, secrets_, ids = make_store(tmp_path, cfg)
    limiter = ScriptedLimiter()
    app = Gateway(cfg, limiter=limiter, store=store)
    with serve_in_thread(app) as url:
        yield Env(url, mock, store, limiter, app, cfg, secrets_, ids)


def _from(ip: str) -> dict[str, Any]:
    return {"extra_headers": {"X-Forwarded-For": ip}}


def test_tier_jurisdiction_enforced_and_recorded(geo_env: Env) -> None:
    import openai

    c = geo_env.client("verified")
    ok = c.chat.completions.create(model="mock-mini", messages=MSG, **_from("192.0.2.10"))  # type: ignore[arg-type]
    assert ok.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as ei:
        c.chat.completions.create(model="mock-mini", messages=MSG, **_from("198.51.100.7"))  # type: ignore[arg-type]
    assert ei.value.status_code == 403
    assert ei.value.code == "jurisdiction" and "jurisdiction" in ei.value.message
    assert "XB" in ei.value.message
    assert len(geo_env.limiter.admits) == 1  # refused before the limiter

    admitted, refused = geo_env.audit_rows()
    assert admitted.get("status", 200) == 200 and admitted["client_ip"] == "192.0.2.10"
    assert (admitted["country"], admitted["asn"]) == ("XA", 64497)
    assert "geo.hosting" not in admitted["attributes"]
    assert refused["status"] == 403 and refused["attributes"]["refusal"] == "jurisdiction"
    assert (refused["country"], refused["asn"]) == ("XB", 64498)
    assert refused["attributes"]["geo.hosting"] == "true"
    assert refused["attributes"]["geo.as_org"] == "Example Hosting Ltd"


def test_denied_country_on_every_tier_and_flags(geo_env: Env) -> None:
    import openai

    u = geo_env.client("unverified")  # no jurisdictions on this tier: anywhere but denied countries
    u.chat.completions.create(model="mock-mini", messages=MSG, **_from("203.0.113.5"))  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError) as ei:
        u.chat.completions.create(model="mock-mini", messages=MSG, **_from("203.0.113.200"))  # type: ignore[arg-type]
    assert ei.value.code == "jurisdiction" and "denied" in ei.value.message
    vpn, denied = geo_env.audit_rows()
    assert vpn.get("status", 200) == 200 and vpn["country"] == "XC" and vpn["attributes"]["geo.vpn"] == "true"
    assert denied["status"] == 403 and (denied["country"], denied["asn"]) == ("XD", 64500)


def test_unauthenticated_refusal_still_has_geo(geo_env: Env) -> None:
    import openai
    from openai import OpenAI

    c = OpenAI(base_url=geo_env.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="mock-mini", messages=MSG, **_from("192.0.2.99"))  # type: ignore[arg-type]
    (row,) = geo_env.audit_rows()
    assert row["status"] == 401 and row["country"] == "XA" and row["asn"] == 64497


def test_untrusted_forwarded_for_is_ignored(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    mock, up_url = upstream
    cfg = geo_config(tmp_path, up_url)
    cfg.server.trusted_proxies = []  # the peer (127.0.0.1, XL) is the client whatever the header says
    cfg.tiers["verified"].jurisdictions = ["XL"]
    store, secrets_, ids = make_store(tmp_path, cfg)
    app = Gateway(cfg, limiter=ScriptedLimiter(), store=store)
    with serve_in_thread(app) as url:
        env = Env(url, mock, store, ScriptedLimiter(), app, cfg, secrets_, ids)
        env.client().chat.completions.create(model="mock-mini", messages=MSG, **_from("198.51.100.7"))  # type: ignore[arg-type]
        (row,) = env.audit_rows()
        assert row["client_ip"] == "127.0.0.1" and row["country"] == "XL"
