"""Private set intersection: a member learns exactly the intersection, and only its own values move."""

from __future__ import annotations

import pytest

from distillguard.intel.indicator import IndicatorType
from distillguard.intel.psi import PsiClient, PsiError, PsiServer, intersect_local, item


def test_intersection_is_exact() -> None:
    theirs = [item("ipv4", f"203.0.113.{i}") for i in range(200)] + [item("asn", "AS64500")]
    mine = [item("ipv4", f"203.0.113.{i}") for i in range(150, 255)] + [item("asn", "64500")]
    mine += [item("asn", "13335")]
    got = intersect_local(mine, PsiServer(theirs))
    assert got == sorted(set(mine) & set(theirs))
    assert item("asn", "64500") in got and item("asn", "13335") not in got


def test_messages_carry_no_raw_values() -> None:
    server = PsiServer([item("ipv4", "198.51.100.7"), item("ipv4", "198.51.100.8")])
    client = PsiClient()
    mine = [item("ipv4", "198.51.100.7"), item("ipv4", "192.0.2.55")]
    req = client.request(mine)
    ans = server.answer(req)
    for raw in (b"198.51.100.7", b"198.51.100.8", b"192.0.2.55", b"ipv4:"):
        assert raw not in req and raw not in ans
    assert client.intersection(mine, ans) == [item("ipv4", "198.51.100.7")]


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(PsiError, match="not account"):
        item(IndicatorType.ACCOUNT, "a" * 64)
    with pytest.raises(PsiError, match="truncated"):
        PsiServer([item("asn", "1")]).answer(b"\x00\x00")
    with pytest.raises(PsiError, match="empty"):
        PsiClient().request([])


def test_psi_over_http_with_the_intel_server(tmp_path) -> None:
    """A member asks our server about its values with an API key; it learns the intersection, and TLP:RED
    indicators never take part."""
    from distillguard.intel.indicator import TLP, Indicator, Records
    from distillguard.intel.psi import query
    from distillguard.intel.store import IntelStore
    from distillguard.intel.taxii import create_api_key
    from distillguard.intel.taxii.server import create_app, run_in_thread

    st = IntelStore.open(tmp_path / "s.db")
    st.add(
        Records(
            indicators=[
                Indicator(type="ipv4", value="203.0.113.9", source_org="x", confidence=80),
                Indicator(type="asn", value="64500", source_org="x", confidence=80),
                Indicator(type="ipv4", value="203.0.113.66", source_org="x", confidence=80, tlp=TLP.RED),
            ]
        )
    )
    key = create_api_key(st.engine, "member")
    mine = [
        item("ipv4", "203.0.113.9"),
        item("ipv4", "203.0.113.66"),
        item("ipv4", "192.0.2.1"),
        item("asn", "64500"),
    ]
    with run_in_thread(create_app(st.engine)) as url:
        assert query(url, mine, key) == sorted([item("asn", "64500"), item("ipv4", "203.0.113.9")])
        with pytest.raises(PsiError, match="401"):
            query(url, mine, "dgk_wrong")
    st.close()
