"""Linked identities: accounts a scan or the intel store puts in one campaign share one rate-limit budget."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig, LinksConfig, Quota
from distillguard.gateway.limits import MemoryLimiter
from distillguard.gateway.links import LinkError, LinkGate, build_table, read_campaigns
from distillguard.intel.indicator import Indicator, IndicatorType, Records
from distillguard.intel.privacy import Keyring
from distillguard.intel.store import IntelStore

from .conftest import Env, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

MSG = [{"role": "user", "content": "hi"}]


def _campaigns(path: Path, camps: list[dict[str, Any]]) -> Path:
    path.write_bytes(orjson.dumps(camps))
    return path


def test_read_campaigns_filters_by_verdict_and_names_bad_entries(tmp_path: Path) -> None:
    p = _campaigns(
        tmp_path / "campaigns.json",
        [
            {"campaign_id": "c1", "verdict": "block", "accounts": ["a", "b", "c"]},
            {"campaign_id": "c2", "verdict": "watch", "accounts": ["d", "e"]},
            {"campaign_id": "c3", "verdict": "suspect", "accounts": ["f"]},  # one account links nothing
        ],
    )
    got = read_campaigns(p, "suspect")
    assert sorted(got.values()) == [["a", "b", "c"]]
    [bid] = got
    assert bid.startswith("scan:") and bid.endswith(":c1")
    assert sorted(map(sorted, read_campaigns(p, "watch").values())) == [["a", "b", "c"], ["d", "e"]]
    # a new scan's file (other content) gives other budget ids: c1 of two scans is not one budget
    q = _campaigns(
        tmp_path / "other.json", [{"campaign_id": "c1", "verdict": "block", "accounts": ["a", "b"]}]
    )
    assert set(read_campaigns(q)) != set(got)

    bad = _campaigns(tmp_path / "bad.json", [{"campaign_id": "c9", "verdict": "block", "accounts": "a,b"}])
    with pytest.raises(LinkError, match=r"bad\.json: campaign c9: 'accounts'"):
        read_campaigns(bad)
    with pytest.raises(LinkError, match="cannot read"):
        read_campaigns(tmp_path / "missing.json")


def test_scan_campaign_links_accounts_and_refresh_keeps_last_good(tmp_path: Path) -> None:
    p = _campaigns(
        tmp_path / "campaigns.json", [{"campaign_id": "c1", "verdict": "block", "accounts": ["a", "b"]}]
    )
    gate = LinkGate(LinksConfig(campaigns=[p], quota=Quota(rpm=5)))
    gate.reload()
    assert gate.links("a") == gate.links("b") != ()
    assert gate.links("z") == ()
    [d] = gate.descriptors("a", None)
    assert (d.kind, d.rpm, d.tpm) == ("link", 5, None)
    # the tier's own link quota wins over the default
    assert gate.descriptors("a", Quota(tpm=7))[0].tpm == 7
    # a campaigns file that turns bad: the reload fails, the table in use is the previous one
    p.write_text("{not json")
    with pytest.raises(LinkError, match="not JSON"):
        gate.reload()
    assert gate.links("a") != ()


@contextmanager
def _serve(tmp: Path, upstream: tuple[MockUpstream, str], links: dict[str, Any]) -> Iterator[Env]:
    mock, up_url = upstream
    d = gateway_config(tmp, up_url).model_dump()
    d["links"] = links
    cfg = GatewayConfig.model_validate(d)
    store, secrets_, ids = make_store(tmp, cfg)
    # a third account of the same tier, not linked to anyone
    store.create_account("bystander", tier="verified", account_id="acct_w")
    _, sw = store.create_key("acct_w")
    secrets_["bystander"] = sw
    app = Gateway(cfg, limiter=MemoryLimiter(), store=store)  # the real in-process limiter
    with serve_in_thread(app) as url:
        yield Env(url, mock, store, app.limiter, app, cfg, secrets_, ids)  # type: ignore[arg-type]


def _call(env: Env, who: str) -> Any:
    return env.client(who).chat.completions.create(model="mock-mini", messages=MSG)  # type: ignore[arg-type]


def test_two_linked_accounts_share_one_budget(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    camps = _campaigns(
        tmp_path / "campaigns.json",
        [{"campaign_id": "c7", "verdict": "suspect", "accounts": ["acct_v", "acct_u", "acct_x"]}],
    )
    # the campaign may make 3 requests a minute in all; each account alone may make 60 (unverified)
    # or is unlimited (verified)
    with _serve(tmp_path, upstream, {"campaigns": [str(camps)], "quota": {"rpm": 3}}) as env:
        _call(env, "verified")
        _call(env, "unverified")
        _call(env, "verified")
        with pytest.raises(openai.RateLimitError) as ei:
            _call(env, "unverified")  # its own budget has 59 left: the campaign's is spent
        assert "link:scan:" in str(ei.value) and "c7 rpm" in str(ei.value)
        with pytest.raises(openai.RateLimitError):
            _call(env, "verified")
        # an account outside the campaign is not held back by it
        for _ in range(4):
            _call(env, "bystander")
        rows = env.audit_rows()
        linked = [r for r in rows if r["account_id"] in ("acct_v", "acct_u")]
        assert len(linked) == 5 and all(":c7" in r["attributes"]["link.campaigns"] for r in linked)
        assert [r.get("status", 200) for r in linked] == [200, 200, 200, 429, 429]
        assert all("link.campaigns" not in r["attributes"] for r in rows if r["account_id"] == "acct_w")


def test_intel_store_links_accounts_by_digest(tmp_path: Path) -> None:
    ring = Keyring.generate(epoch=3)
    ring.save(tmp_path / "keys.json")
    camp = "campaign--1b0c6f3e-0000-4000-8000-000000000001"

    def ind(account: str, campaign: str | None) -> Indicator:
        return Indicator(
            type=IndicatorType.ACCOUNT,
            value=ring.digest("account", account, 3),
            key_epoch=3,
            confidence=80,
            source_org="identity--provider-b",
            campaign_id=campaign,
        )

    with IntelStore.open(tmp_path / "intel.db") as store:
        store.add(Records(indicators=[ind("acct_1", camp), ind("acct_2", camp), ind("acct_3", None)]))
    cfg = LinksConfig(
        intel_db=str(tmp_path / "intel.db"), keyring=tmp_path / "keys.json", quota=Quota(tpm=100)
    )
    gate = LinkGate(cfg)
    try:
        t = gate.reload()
        assert t.campaigns == 1 and t.epochs == (3,)
        assert gate.links("acct_1") == gate.links("acct_2") == (camp,)
        assert gate.links("acct_3") == ()  # an indicator without a campaign links nothing
        assert gate.links("acct_9") == ()

        # through the real limiter: the two accounts' tokens come out of one budget of 100 per minute
        async def spend() -> list[bool]:
            lim = MemoryLimiter()
            out = []
            for acc in ("acct_1", "acct_2", "acct_1"):
                d = await lim.admit(gate.descriptors(acc, None), 40)
                out.append(d.allowed)
            return out

        assert asyncio.run(spend()) == [True, True, False]
    finally:
        asyncio.run(gate.stop())


def test_intel_links_need_a_keyring(tmp_path: Path) -> None:
    with IntelStore.open(tmp_path / "intel.db"):
        pass
    with pytest.raises(LinkError, match="keyring"):
        LinkGate(LinksConfig(intel_db=str(tmp_path / "intel.db")))


def test_build_table_merges_sources(tmp_path: Path) -> None:
    a = _campaigns(tmp_path / "a.json", [{"campaign_id": "c1", "verdict": "block", "accounts": ["x", "y"]}])
    b = _campaigns(tmp_path / "b.json", [{"campaign_id": "c1", "verdict": "block", "accounts": ["y", "z"]}])
    t = build_table(LinksConfig(campaigns=[a, b]), None)
    # y is in both scans' campaigns: it draws on both budgets, x and z on one each
    assert len(t.accounts["y"]) == 2 and len(t.accounts["x"]) == len(t.accounts["z"]) == 1
    assert t.campaigns == 2


def test_background_refresh_picks_up_a_new_scan(tmp_path: Path) -> None:
    p = _campaigns(
        tmp_path / "campaigns.json", [{"campaign_id": "c1", "verdict": "block", "accounts": ["a", "b"]}]
    )

    async def go() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        gate = LinkGate(LinksConfig(campaigns=[p], refresh_s=0.05))
        await gate.start()
        try:
            before = gate.links("c")
            _campaigns(p, [{"campaign_id": "c1", "verdict": "block", "accounts": ["a", "b", "c"]}])
            for _ in range(100):  # bounded: 5 s at most
                if gate.links("c"):
                    break
                await asyncio.sleep(0.05)
            return before, gate.links("c"), gate.links("a")
        finally:
            await gate.stop()

    before, after, a = asyncio.run(go())
    assert before == () and after == a != ()
