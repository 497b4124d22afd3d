"""Full logs: detection signals as plain-words risks, and keys used from unexpected jurisdictions."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from distillguard.audit.config import AuditConfig
from distillguard.audit.logs import jurisdictions
from distillguard.audit.report import write_csv, write_json
from distillguard.audit.run import run_audit
from distillguard.config import Config
from distillguard.exchange import Exchange
from distillguard.ingest import get_adapter
from distillguard.ingest.otel import to_otlp_line
from distillguard.store.parquet import ingest

# The bundled test geo database (distillguard/gateway/geo_build.py): 192.0.2.0/24 -> XA,
# 198.51.100.0/24 -> XB, 203.0.113.128/25 -> XD.
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _ex(i: int, key: str, ip: str, country: str | None = None) -> Exchange:
    return Exchange(
        exchange_id=f"ex-{key}-{i}",
        ts=T0 + timedelta(seconds=37 * i),
        account_id="acct_acme",
        api_key_id=key,
        client_ip=ip,
        country=country,
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"Summarise ticket {i} for the support queue."}],
        response_text="Done.",
        prompt_tokens=20,
        completion_tokens=5,
    )


@pytest.fixture
def geo_log(tmp_path: Path) -> Path:
    """key_home: only XA. key_leak: 12 of 100 from XB (suspect). key_travel: 1 of 100 from XD (watch).
    key_tagged: IPs in XB but the log says XA (the log's own country wins)."""
    exs = [_ex(i, "key_home", f"192.0.2.{i % 200 + 1}") for i in range(100)]
    exs += [_ex(i, "key_leak", f"198.51.100.{i}" if i < 12 else f"192.0.2.{i}") for i in range(100)]
    exs += [_ex(i, "key_travel", "203.0.113.200" if i == 0 else "192.0.2.9") for i in range(100)]
    exs += [_ex(i, "key_tagged", "198.51.100.77", country="XA") for i in range(50)]
    p = tmp_path / "spans.otlp.jsonl"
    p.write_bytes(b"".join(to_otlp_line(exs[i : i + 50]) for i in range(0, len(exs), 50)))
    assert get_adapter("otel").sniff([p.read_bytes().splitlines()[0]])
    return p


def _country_db() -> Path:
    from distillguard.gateway.geo import bundled_dbs

    return bundled_dbs()[0]


def test_unexpected_jurisdictions(geo_log: Path, tmp_path: Path) -> None:
    pq = tmp_path / "ex.parquet"
    ingest([geo_log], pq)
    cfg = Config(audit=AuditConfig(expected_countries=["xa"]))
    risks, table = jurisdictions(pq, cfg, _country_db())
    got = {r.subject: (r.level, r.evidence["unexpected"]) for r in risks}
    assert got == {"key key_leak": ("suspect", {"XB": 12}), "key key_travel": ("watch", {"XD": 1})}
    leak = next(r for r in risks if r.subject == "key key_leak")
    assert "12 of its 100 requests" in leak.summary and "XB" in leak.summary
    assert set(leak.evidence["examples"]) <= {f"ex-key_leak-{i}" for i in range(12)}
    rows = {(r["key"], r["country"]): r for r in table}
    assert rows[("key_tagged", "XA")]["requests"] == 50 and ("key_tagged", "XB") not in rows
    assert rows[("key_home", "XA")]["expected"] is True
    # without a policy nothing is flagged, but the table still says where each key was used from
    risks, table = jurisdictions(pq, Config(), _country_db())
    assert risks == [] and rows.keys() == {(r["key"], r["country"]) for r in table}


@pytest.fixture(scope="module")
def sim_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, str], Path, Path]:
    from distillguard.simulate import SimConfig, simulate

    d = tmp_path_factory.mktemp("sim")
    cfg = SimConfig(
        accounts=60,
        days=1,
        seed=5,
        volume=0.1,
        strategies=("self_instruct", "reasoning_coercion", "capability_sweep"),
    )
    simulate(cfg, d / "day.otlp.jsonl", "otlp", d / "labels.csv", workers=1)
    with open(d / "labels.csv") as f:
        labels = {r["account_id"]: r["strategy"] for r in csv.DictReader(f)}
    fixture = Path(__file__).parent / "fixtures" / "anthropic_usage.jsonl"
    rep = run_audit([fixture], [d / "day.otlp.jsonl"], Config(), scan_dir=d / "scan")
    return rep, labels, d / "scan", d / "day.otlp.jsonl"


def test_detection_patterns_from_full_logs(sim_audit: tuple) -> None:
    rep, labels, scan_dir, _ = sim_audit
    kinds: dict[str, set[str]] = {}
    for r in rep.risks:
        if r.subject.startswith("account "):
            kinds.setdefault(r.subject.split()[1], set()).add(r.kind)
    with open(scan_dir / "accounts.csv") as f:
        flagged_by_scan = {r["account_id"] for r in csv.DictReader(f) if r["verdict"] != "ok"}
    assert set(kinds) == flagged_by_scan  # every flagged account is reported, nothing else
    benign = {
        a
        for a, s in labels.items()
        if s in {"chat", "developer", "back_office", "tutoring", "power_user", "eval_harness"}
    }
    assert not set(kinds) & benign
    by_strategy: dict[str, set[str]] = {}
    for a, k in kinds.items():
        by_strategy.setdefault(labels[a], set()).update(k)
    assert "bulk_generation" in by_strategy["self_instruct"]
    assert "step_by_step" in by_strategy["reasoning_coercion"]
    assert "benchmark_sweep" in by_strategy["capability_sweep"]
    assert rep.meta["logs"]["exchanges"] > 1000
    assert rep.worst() == "suspect" and rep.fails("suspect")


def test_report_never_copies_prompts(sim_audit: tuple, tmp_path: Path) -> None:
    rep, _, _, log = sim_audit
    write_json(rep, tmp_path / "j")
    write_csv(rep, tmp_path / "c")
    out = b"".join(p.read_bytes() for p in [*(tmp_path / "j").iterdir(), *(tmp_path / "c").iterdir()])
    prompts = set()
    for line in log.read_bytes().splitlines()[:20]:
        for rs in orjson.loads(line)["resourceSpans"]:
            for sp in rs["scopeSpans"][0]["spans"]:
                for a in sp["attributes"]:
                    if a["key"] == "gen_ai.input.messages":
                        for m in orjson.loads(a["value"]["stringValue"]):
                            for part in m.get("parts", []):
                                if len(part.get("content", "")) >= 40:
                                    prompts.add(part["content"][:40])
    assert len(prompts) > 20
    assert not [p for p in prompts if p.encode() in out]


def test_cli_with_logs(geo_log: Path, anthropic_export: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from distillguard.cli import app

    cfg = tmp_path / "dg.toml"
    cfg.write_text('[audit]\nexpected_countries = ["XA"]\n')
    args = [
        "audit",
        str(anthropic_export),
        "--logs",
        str(geo_log),
        "--config",
        str(cfg),
        "--csv",
        str(tmp_path / "c"),
    ]
    r = CliRunner().invoke(app, [*args, "--fail-on", "suspect"])
    assert r.exit_code == 1, r.output
    assert "Key countries" in r.output
    with open(tmp_path / "c" / "risks.csv") as f:
        risks = {(x["kind"], x["subject"], x["level"]) for x in csv.DictReader(f)}
    assert ("jurisdiction", "key key_leak", "suspect") in risks
    with open(tmp_path / "c" / "key_countries.csv") as f:
        rows = {(x["key"], x["country"]): x for x in csv.DictReader(f)}
    assert rows[("key_leak", "XB")]["requests"] == "12" and rows[("key_leak", "XB")]["expected"] == "False"
    # the same logs with XB allowed too: only the one request from XD remains, a watch
    cfg.write_text('[audit]\nexpected_countries = ["XA", "XB"]\n')
    assert CliRunner().invoke(app, [*args, "--fail-on", "suspect"]).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--fail-on", "watch"]).exit_code == 1
