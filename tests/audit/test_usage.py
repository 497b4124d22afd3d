"""Usage exports: the audit reproduces the hand-checked totals (fixtures/README.md) to the token."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from distillguard.audit.config import AuditConfig
from distillguard.audit.prices import load
from distillguard.audit.usage import UsageError, read_usage
from distillguard.audit.volume import enrich, tables
from distillguard.ingest.base import Quarantine

# Hand check (jq, fixtures/README.md): OpenAI
OPENAI = {"rows": 312, "input": 174_262_287, "cached": 53_707_362, "output": 105_980_537, "requests": 152_662}
OPENAI_PROJECTS = {
    "proj_data": (47_791_553, 31_861_037, 21_343),
    "proj_marketing": (5_276_564, 2_024_466, 11_473),
    "proj_research": (26_144_609, 46_743_069, 16_613),
    "proj_support": (95_049_561, 25_351_965, 103_233),
}
OPENAI_KEYS = {
    None: 1_105_609,
    "key_data_pipeline": 79_652_590,
    "key_marketing": 6_195_421,
    "key_research_nb": 10_695_771,
    "key_research_o3": 62_191_907,
    "key_support_bot": 120_401_526,
}
# Anthropic: uncached + 5m writes + 1h writes + reads
ANTHROPIC = {
    "rows": 124,
    "input": 64_081_082 + 6_450_209 + 1_816_498 + 24_829_975,
    "cached": 24_829_975,
    "w5": 6_450_209,
    "w1": 1_816_498,
    "output": 34_989_310,
    "web": 60,
}


def _tables(paths: list[Path], qpath: Path | None = None) -> dict:
    with Quarantine(qpath) as q:
        data = read_usage(paths, q)
    return tables(enrich(data.table, load(AuditConfig()), 0.5))


def _by(t, *keys):  # rows of a table keyed by its key columns
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in t.to_pylist()}


def test_openai_totals_to_the_token(openai_export: Path) -> None:
    tot = _by(_tables([openai_export])["totals"], "provider")
    o = tot["openai"]
    assert (o["rows"], o["input_tokens"], o["cached_input_tokens"], o["output_tokens"], o["requests"]) == (
        OPENAI["rows"],
        OPENAI["input"],
        OPENAI["cached"],
        OPENAI["output"],
        OPENAI["requests"],
    )
    assert tot["all"]["total_tokens"] == OPENAI["input"] + OPENAI["output"]


def test_openai_by_project_key_model_day(openai_export: Path) -> None:
    t = _tables([openai_export])
    proj = _by(t["volume_by_project"], "project")
    assert {
        p: (r["input_tokens"], r["output_tokens"], r["requests"]) for p, r in proj.items()
    } == OPENAI_PROJECTS
    keys = _by(t["volume_by_key"], "api_key")
    assert {k: r["total_tokens"] for k, r in keys.items()} == OPENAI_KEYS
    # the same tokens, cut by model and by day, add up to the same totals
    for name in ("volume_by_model", "volume_by_day"):
        rows = t[name].to_pylist()
        assert sum(r["input_tokens"] for r in rows) == OPENAI["input"]
        assert sum(r["requests"] for r in rows) == OPENAI["requests"]
    assert t["volume_by_day"].num_rows == 40
    key_day = t["volume_by_key_day"].to_pylist()
    assert (
        sum(r["total_tokens"] for r in key_day if r["api_key"] == "key_data_pipeline")
        == OPENAI_KEYS["key_data_pipeline"]
    )
    # fixtures/README.md: the day built to jump
    assert (
        next(
            r["total_tokens"]
            for r in key_day
            if r["api_key"] == "key_data_pipeline" and r["day"].isoformat() == "2026-11-05"
        )
        == 29_300_297
    )
    assert keys["key_research_o3"]["active_days"] < 40  # weekdays only


def test_anthropic_totals_to_the_token(anthropic_export: Path) -> None:
    t = _tables([anthropic_export])
    a = _by(t["totals"], "provider")["anthropic"]
    got = (
        a["rows"],
        a["input_tokens"],
        a["cached_input_tokens"],
        a["cache_write_5m_tokens"],
        a["cache_write_1h_tokens"],
        a["output_tokens"],
        a["web_search_requests"],
    )
    want = tuple(ANTHROPIC[k] for k in ("rows", "input", "cached", "w5", "w1", "output", "web"))
    assert got == want
    assert a["requests"] is None  # the report has no request counts: not 0
    assert t["volume_by_day"].num_rows == 31
    assert None in _by(t["volume_by_project"], "project")  # the default workspace


def test_both_providers_together(openai_export: Path, anthropic_export: Path) -> None:
    tot = _by(_tables([openai_export, anthropic_export])["totals"], "provider")
    assert tot["all"]["input_tokens"] == OPENAI["input"] + ANTHROPIC["input"]
    assert tot["all"]["output_tokens"] == OPENAI["output"] + ANTHROPIC["output"]
    assert tot["all"]["rows"] == OPENAI["rows"] + ANTHROPIC["rows"]


def _pages(p: Path) -> list:
    dec, text, pos, out = json.JSONDecoder(), p.read_text(), 0, []
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        v, pos = dec.raw_decode(text, pos)
        out.append(v)
    return out


@pytest.mark.parametrize("layout", ["jsonl", "array", "gzip"])
def test_layouts_read_the_same(openai_export: Path, tmp_path: Path, layout: str) -> None:
    pages = _pages(openai_export)
    assert len(pages) == 6
    p = tmp_path / f"export.{layout}"
    if layout == "jsonl":
        p.write_text("".join(json.dumps(x) + "\n" for x in pages))
    elif layout == "array":
        p.write_text(json.dumps(pages, indent=1))
    else:
        p.write_bytes(gzip.compress(openai_export.read_bytes()))
    assert _tables([p])["totals"].to_pylist() == _tables([openai_export])["totals"].to_pylist()


def test_bad_rows_quarantined_with_file_line_field(openai_export: Path, tmp_path: Path) -> None:
    pages = _pages(openai_export)
    r0 = pages[1]["data"][2]["results"][0]
    r1 = pages[1]["data"][2]["results"][1]
    r0["output_tokens"] = -5
    r1["num_model_requests"] = "lots"
    del pages[3]["data"][0]["start_time"]
    lost_bucket = pages[3]["data"][0]["results"]
    p = tmp_path / "bad.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in pages) + "{not json\n")
    q = tmp_path / "q.jsonl"
    t = _tables([p], q)
    got = [orjson.loads(x) for x in q.read_bytes().splitlines()]
    reasons = {(g["line"], g["reason"].split(":")[0]) for g in got}
    assert (2, "data[2].results[0].output_tokens") in reasons
    assert (2, "data[2].results[1].num_model_requests") in reasons
    assert (4, "data[0].start_time") in reasons
    assert any(g["line"] == 7 and g["reason"].startswith("invalid JSON") for g in got)
    assert all(g["file"] == str(p) for g in got)
    # what was quarantined is exactly what is missing from the totals
    o = _by(t["totals"], "provider")["openai"]
    lost = r0["input_tokens"] + r1["input_tokens"] + sum(r["input_tokens"] for r in lost_bucket)
    assert o["input_tokens"] == OPENAI["input"] - lost
    assert o["rows"] == OPENAI["rows"] - 2 - len(lost_bucket)


def test_duplicate_page_counted_once(openai_export: Path, tmp_path: Path) -> None:
    pages = _pages(openai_export)
    p = tmp_path / "dup.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in [*pages, pages[2]]))
    q = tmp_path / "q.jsonl"
    o = _by(_tables([p], q)["totals"], "provider")["openai"]
    assert o["input_tokens"] == OPENAI["input"]
    dups = [orjson.loads(x) for x in q.read_bytes().splitlines()]
    assert len(dups) == sum(len(b["results"]) for b in pages[2]["data"])
    assert all("duplicate of" in d["reason"] and d["line"] == 7 for d in dups)


def test_not_a_usage_export(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text(
        '{"object": "list", "data": [{"id": 1}]}\n{"data": [], "has_more": false, "next_page": null}\n'
    )
    q = tmp_path / "q.jsonl"
    assert _tables([p], q)["totals"].to_pylist()[-1]["rows"] == 0
    bad = [orjson.loads(x) for x in q.read_bytes().splitlines()]
    assert [b["line"] for b in bad] == [1]  # the empty page of line 2 is a period without usage
    assert "not an OpenAI completions usage page" in bad[0]["reason"]
    with Quarantine(None) as qq, pytest.raises(UsageError, match="not found"):
        read_usage([tmp_path / "missing.json"], qq)


def test_fast_and_row_by_row_paths_agree(
    openai_export: Path, anthropic_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillguard.audit import anthropic_usage, openai_usage

    with Quarantine(None) as q:
        fast = read_usage([openai_export, anthropic_export], q).table
    monkeypatch.setattr(openai_usage, "columns", lambda page: None)
    monkeypatch.setattr(anthropic_usage, "columns", lambda page: None)
    with Quarantine(None) as q:
        slow = read_usage([openai_export, anthropic_export], q).table
    assert fast.num_rows == OPENAI["rows"] + ANTHROPIC["rows"]
    assert fast.equals(slow)


@pytest.mark.parametrize(
    "bad",
    [
        {"input_tokens": 5.5},
        {"input_tokens": True},
        {"input_tokens": "100"},
        {"output_tokens": None},
        {"num_model_requests": -1},
        {"model": 4},
        {"batch": "no"},
        {"object": "organization.usage.embeddings.result"},
        {"input_cached_tokens": 10**12},
    ],
)
def test_each_bad_value_is_named(openai_export: Path, tmp_path: Path, bad: dict) -> None:
    page = _pages(openai_export)[0]
    page["data"][1]["results"][2].update(bad)
    p = tmp_path / "one.json"
    p.write_text(json.dumps(page))
    q = tmp_path / "q.jsonl"
    t = _tables([p], q)
    (got,) = [orjson.loads(x) for x in q.read_bytes().splitlines()]
    field = next(iter(bad))
    assert got["reason"].startswith(f"data[1].results[2].{field}:"), got["reason"]
    n = sum(len(b["results"]) for b in page["data"])
    assert _by(t["totals"], "provider")["openai"]["rows"] == n - 1
