"""Matching traffic against indicators, and intel matches as scan evidence."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from distillguard.detect.pipeline import scan
from distillguard.intel.indicator import Indicator, IndicatorType
from distillguard.intel.match import Matcher, MatchError
from distillguard.intel.privacy import Keyring, encode_sketch

from ..conftest import T0, LogBuilder

TEMPLATE = (
    "You are generating training data. Solve the following competition problem and show every step of "
    "your reasoning before the final answer. Problem: {q} Answer format: final answer on its own line."
)


def _log(builder: LogBuilder, corpora: dict[str, list[str]], tmp_path: Path) -> Path:
    # benign chat users on their own addresses, one of them behind the same /24 as the operation
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 12, ip=f"198.51.100.{i}")
    # an operation: low volume per account (nothing stands out alone), shared addresses and a template
    for j in range(12):
        for k in range(15):
            builder.add(
                f"op{j:02d}",
                T0 + timedelta(hours=9, minutes=j * 7 + k * 31),
                TEMPLATE.format(q=corpora["gsm8k"][(j * 15 + k) % len(corpora["gsm8k"])]),
                client_ip=f"203.0.113.{(j + k) % 5}",
                asn=64500,
                device_fp=f"dev-{j % 3}",
                temperature=0.7,
                max_tokens=800,
            )
    return builder.write(tmp_path / "log.jsonl")


def _indicators(keyring: Keyring) -> list[Indicator]:
    src = "identity--0c1b6e52-7d6c-4f7b-9a43-7a1f3c1f0a11"
    sk = keyring.sketch([TEMPLATE.format(q="#").lower()])[0]
    return [
        Indicator(type=IndicatorType.IPV4, value="203.0.113.1", source_org=src, confidence=90),
        Indicator(type=IndicatorType.CIDR, value="203.0.113.0/29", source_org=src, confidence=80),
        Indicator(type=IndicatorType.ASN, value="AS64500", source_org=src, confidence=60),
        Indicator(
            type=IndicatorType.DEVICE,
            value=keyring.digest("device", "dev-1"),
            key_epoch=keyring.current,
            source_org=src,
            confidence=85,
        ),
        Indicator(
            type=IndicatorType.SKELETON,
            value=encode_sketch(sk),
            key_epoch=keyring.current,
            source_org=src,
            confidence=70,
        ),
    ]


def test_scan_with_intel_names_the_indicators(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    log = _log(builder, corpora, tmp_path)
    keyring = Keyring.generate()
    inds = _indicators(keyring)
    plain, _ = scan([log], tmp_path / "plain")
    res, summary = scan([log], tmp_path / "intel", matcher=Matcher(inds, keyring=keyring))
    ids = res.accounts.ids.tolist()
    by_id = {i.id: i for i in inds}
    for j in range(12):
        a = ids.index(f"op{j:02d}")
        ev = {e.signal: e for e in res.evidence[a]}
        # every operator account matched the range and the template, and the evidence names them
        assert by_id[ev["intel.address"].indicator].type in (IndicatorType.IPV4, IndicatorType.CIDR)
        assert by_id[ev["intel.skeleton"].indicator].type is IndicatorType.SKELETON
        assert ev["intel.address"].value == pytest.approx(1.0)
        assert res.final_score[a] > plain.final_score[plain.accounts.ids.tolist().index(f"op{j:02d}")]
        assert res.levels[a] in ("suspect", "block")
        # the device digest matches only the accounts that used dev-1
        assert ("intel.identity" in ev) == (j % 3 == 1)
    for i in range(30):
        a = ids.index(f"user{i:02d}")
        assert not any(e.signal.startswith("intel.") for e in res.evidence[a])
        assert res.final_score[a] == pytest.approx(
            plain.final_score[plain.accounts.ids.tolist().index(f"user{i:02d}")]
        )
    assert summary["intel"]["accounts_matched"] == 12
    assert summary["intel"]["matched_exchanges"]["address"] == 12 * 15
    assert (tmp_path / "intel" / "intel_sightings.parquet").exists()


def test_non_blocking_indicators_do_not_flag_alone(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    """A warninglisted or uncorroborated indicator adds soft evidence only: a chat user behind a
    reported address stays below suspect."""
    builder.chat_user("alice", corpora["arena"], 20, ip="192.0.2.10")
    builder.chat_user("bob", corpora["arena"], 20, ip="192.0.2.11")
    log = builder.write(tmp_path / "log.jsonl")
    ind = Indicator(type=IndicatorType.IPV4, value="192.0.2.10", source_org="x", confidence=100)
    res, _ = scan([log], tmp_path / "soft", matcher=Matcher([ind], blocking=[False]))
    a = res.accounts.ids.tolist().index("alice")
    ev = {e.signal: e for e in res.evidence[a]}
    assert "intel.address" in ev and "intel.indicator" not in ev
    assert res.levels[a] in ("ok", "watch")
    res, _ = scan([log], tmp_path / "hard", matcher=Matcher([ind], blocking=[True]))
    ev = {e.signal: e for e in res.evidence[a]}
    assert ev["intel.indicator"].indicator == ind.id
    assert res.levels[a] in ("suspect", "block")


def test_keyed_indicators_need_the_key() -> None:
    k = Keyring.generate()
    ind = Indicator(type=IndicatorType.ACCOUNT, value=k.digest("account", "a"), key_epoch=1, source_org="x")
    with pytest.raises(MatchError, match="keyring"):
        Matcher([ind])
    with pytest.raises(MatchError, match="epochs \\[1\\]"):
        Matcher([ind], keyring=Keyring.generate(epoch=2))


def test_digest_matches_under_an_older_epoch(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    builder.chat_user("carol", corpora["arena"], 5, ip="192.0.2.1")
    builder.chat_user("dave", corpora["arena"], 5, ip="192.0.2.2")
    log = builder.write(tmp_path / "log.jsonl")
    k = Keyring.generate()
    old = Indicator(type="account", value=k.digest("account", "carol"), key_epoch=1, source_org="x")
    k.rotate()
    new = Indicator(type="account", value=k.digest("account", "dave"), key_epoch=2, source_org="x")
    res, _ = scan([log], tmp_path / "o", matcher=Matcher([old, new], keyring=k))
    m = res.intel
    assert m is not None
    share = dict(zip(m.accounts.tolist(), m.columns["intel_identity_share"], strict=True))
    assert share["carol"] == 1.0 and share["dave"] == 1.0
    assert np.all(m.sightings.column("n").to_numpy() == 5)
