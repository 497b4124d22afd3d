from __future__ import annotations

import ipaddress
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from distillguard.intel.indicator import Indicator, IndicatorType
from distillguard.intel.privacy import Keyring
from distillguard.intel.warninglist import WarninglistError, Warninglists, _Ranges, parse


def ind(kind: str, value: str, **kw: object) -> Indicator:
    return Indicator(type=kind, value=value, source_org="org-a", **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def default() -> Warninglists:
    return Warninglists.load_default()


def test_default_lists_load_and_say_where_they_come_from(default: Warninglists) -> None:
    assert len(default) >= 5
    for wl in default.lists:
        assert len(wl) > 0
        assert wl.description, f"{wl.name} must say where its entries come from"


def test_cloud_asn_hits(default: Warninglists) -> None:
    assert default.hit(ind("asn", "AS16509")) == "Cloud provider networks (sample, by ASN)"
    assert default.hit(ind("asn", "8075")) is not None
    assert default.hit(ind("asn", "AS13335")) == "Public VPN exits (sample, by ASN)"
    assert default.hit(ind("asn", "AS3")) == "University networks (sample, by ASN)"
    assert default.hit(ind("asn", "AS64500")) is None  # documentation ASN


def test_cidr_hits_addresses_and_overlapping_networks(default: Warninglists) -> None:
    assert default.hit(ind("ipv4", "104.16.5.5")) == "Cloudflare published ranges (sample)"
    assert default.hit(ind("ipv6", "2606:4700::1111")) is not None
    assert default.hit(ind("cidr", "104.0.0.0/8")) is not None  # contains a listed range
    assert default.hit(ind("cidr", "104.16.5.0/24")) is not None  # inside a listed range
    assert default.hit(ind("ipv4", "192.0.2.10")) is None
    assert default.hit(ind("cidr", "192.0.2.0/24")) is None
    # a CIDR list never applies to ASNs, an ASN list never to addresses
    assert default.hit(ind("ipv4", "16.50.9.1")) is None


def test_user_agent_substring_is_case_insensitive(default: Warninglists) -> None:
    assert default.hit(ind("user-agent", "LiteLLM/1.40.0")) is not None
    assert default.hit(ind("user-agent", "python-requests/2.31")) is None


def test_keyed_indicators_never_hit(default: Warninglists) -> None:
    k = Keyring.generate()
    acct = ind("account", k.digest("account", "alice"), key_epoch=1)
    assert default.hit(acct) is None


def test_misp_format_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "lists" / "corp").mkdir(parents=True)
    (tmp_path / "lists" / "corp" / "list.json").write_text(
        json.dumps(
            {
                "name": "Corp NAT",
                "type": "cidr",
                "description": "egress of a corporate proxy",
                "matching_attributes": ["ip-src", "ip-dst"],
                "version": 3,
                "list": ["198.51.100.0/25", "2001:db8::/48", "not-a-network", "203.0.113.7"],
            }
        )
    )
    (tmp_path / "lists" / "ua.json").write_text(
        json.dumps(
            {
                "name": "Gateway UAs",
                "type": "string",
                "matching_attributes": ["user-agent"],
                "list": [{"value": "GatewayBot/1.0", "comment": "newer MISP entry form"}],
            }
        )
    )
    (tmp_path / "lists" / "hosts.json").write_text(
        json.dumps({"name": "hosts", "type": "hostname", "list": ["example.com"]})
    )
    (tmp_path / "lists" / "re.json").write_text(
        json.dumps({"name": "re", "type": "regex", "matching_attributes": ["user-agent"], "list": ["^curl/"]})
    )
    with caplog.at_level(logging.WARNING):
        wls = Warninglists.load([tmp_path / "lists"])  # a directory: every json below it
    assert "not-a-network" in caplog.text  # bad lines are skipped, and said so
    assert {w.name for w in wls.lists} == {"Corp NAT", "Gateway UAs", "hosts", "re"}
    assert wls.hit(ind("ipv4", "198.51.100.100")) == "Corp NAT"
    assert wls.hit(ind("ipv4", "198.51.100.200")) is None
    assert wls.hit(ind("ipv4", "203.0.113.7")) == "Corp NAT"  # a bare address is a /32
    assert wls.hit(ind("cidr", "2001:db8::/32")) == "Corp NAT"
    assert wls.hit(ind("user-agent", "GatewayBot/1.0")) == "Gateway UAs"
    assert wls.hit(ind("user-agent", "GatewayBot/1.0 extra")) is None  # `string` is exact
    assert wls.hit(ind("user-agent", "curl/8.0")) == "re"
    merged = Warninglists.load_default().extend(wls)
    assert merged.hit(ind("ipv4", "198.51.100.1")) == "Corp NAT"


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"type": "cidr", "list": []}, "missing field 'name'"),
        ({"name": "x", "type": "ranges", "list": []}, "type 'ranges'"),
        ({"name": "x", "type": "cidr", "list": "10.0.0.0/8"}, "'list' must be an array"),
        ({"name": "x", "type": "regex", "list": ["("]}, "does not compile"),
        ([], "JSON object"),
    ],
)
def test_malformed_lists_are_named(doc: object, match: str) -> None:
    with pytest.raises(WarninglistError, match=match):
        parse(doc, "bad.json")


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(WarninglistError, match=r"x\.json is not valid JSON"):
        Warninglists.load([tmp_path / "x.json"])
    with pytest.raises(WarninglistError, match="cannot read"):
        Warninglists.load([tmp_path / "missing.json"])


def test_ranges_overlap_agrees_with_ipaddress() -> None:
    rng = np.random.default_rng(7)
    nets = [
        ipaddress.ip_network((int(rng.integers(0, 2**32)), int(rng.integers(8, 33))), strict=False)
        for _ in range(300)
    ]
    ranges = _Ranges.of(nets)
    assert all(a < b for a, b in zip(ranges.starts, ranges.starts[1:], strict=False))  # merged, sorted
    for _ in range(2000):
        q = ipaddress.ip_network((int(rng.integers(0, 2**32)), int(rng.integers(4, 33))), strict=False)
        want = any(q.overlaps(n) for n in nets)
        assert ranges.overlaps(int(q.network_address), int(q.broadcast_address)) == want, q


def test_adjacent_ranges_merge() -> None:
    r = _Ranges.of([ipaddress.ip_network("10.0.0.0/25"), ipaddress.ip_network("10.0.0.128/25")])
    assert len(r.starts) == 1
    assert r.overlaps(int(ipaddress.ip_address("10.0.0.200")), int(ipaddress.ip_address("10.0.0.200")))


def test_hits_in_bulk(default: Warninglists) -> None:
    inds = [ind("ipv4", f"104.16.0.{k}") for k in range(50)] + [
        ind("ipv4", f"192.0.2.{k}") for k in range(50)
    ]
    hits = default.hits(inds)
    assert sum(h is not None for h in hits) == 50
    assert default.hit_value(IndicatorType.ASN, "16509") is not None
