"""OpenTelemetry GenAI span export: gateway traffic -> OTLP JSON file / collector -> the OTel ingest adapter."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from distillguard.exchange import validate
from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig, OtelExportConfig
from distillguard.gateway.otel_export import export_line, retry_after_s
from distillguard.ingest.otel import OtelGenAI

from .conftest import Env, ScriptedLimiter, gateway_config, make_store
from .mock_upstream import MockUpstream, serve_in_thread

SECRET_PROMPT = "my private launch plan for project heron"


@contextmanager
def _serve(tmp: Path, upstream: tuple[MockUpstream, str], otel: dict[str, Any]) -> Iterator[Env]:
    mock, up_url = upstream
    d = gateway_config(tmp, up_url).model_dump()
    d["otel"] = {"flush_s": 0.05, **otel}
    cfg = GatewayConfig.model_validate(d)
    store, secrets_, ids = make_store(tmp, cfg)
    limiter = ScriptedLimiter()
    app = Gateway(cfg, limiter=limiter, store=store)
    with serve_in_thread(app) as url:  # leaving it shuts the gateway down, which flushes the export
        yield Env(url, mock, store, limiter, app, cfg, secrets_, ids)


def _traffic(env: Env) -> None:
    v, u = env.client("verified"), env.client("unverified")
    v.chat.completions.create(model="mock-think", messages=[{"role": "user", "content": SECRET_PROMPT}])
    for _ in v.chat.completions.create(
        model="mock-mini", messages=[{"role": "user", "content": "stream it"}], stream=True
    ):
        pass
    u.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    with pytest.raises(openai.PermissionDeniedError):  # refused by the tier: audited, so exported too
        u.chat.completions.create(model="big-model", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=env.url + "/v1", api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="mock-mini", messages=[{"role": "user", "content": "x"}])


def _read_spans(path: Path) -> list[Any]:
    recs = list(OtelGenAI().records(path))
    assert all(r.error is None for r in recs), [r.error for r in recs if r.error]
    return [validate(r.data) for r in recs if r.data is not None]


def _key(d: dict[str, Any]) -> tuple[Any, ...]:
    d = validate(d).model_dump()  # the audit's native lines leave defaults out
    return (
        d["exchange_id"],
        d["account_id"],
        d.get("api_key_id"),
        d["model"],
        d["endpoint"],
        d.get("prompt_tokens"),
        d.get("completion_tokens"),
        d["status"],
    )


def test_round_trip_file_has_same_accounts_models_tokens_and_no_content(
    tmp_path: Path, upstream: tuple[MockUpstream, str]
) -> None:
    spans_path = tmp_path / "spans" / "gateway.otlp.jsonl"
    with _serve(tmp_path, upstream, {"path": str(spans_path)}) as env:
        _traffic(env)
    audit = env.audit_rows()
    assert len(audit) == 5
    assert OtelGenAI().sniff([spans_path.read_bytes().splitlines()[0]])  # `scan` detects the format
    spans = _read_spans(spans_path)
    got = sorted(_key(ex.model_dump()) for ex in spans)
    assert got == sorted(_key(r) for r in audit)
    assert {ex.account_id for ex in spans} == {"acct_v", "acct_u", "anonymous"}
    assert sum(ex.prompt_tokens or 0 for ex in spans) == sum(r.get("prompt_tokens") or 0 for r in audit) > 0
    by_id = {ex.exchange_id: ex for ex in spans}
    for r in audit:
        ex = by_id[r["exchange_id"]]
        # policy attributes travel (tier, refusal), and the timing
        for k in ("tier", "refusal"):
            assert ex.attributes.get(k) == r["attributes"].get(k)
        assert ex.latency_ms == pytest.approx(r["latency_ms"], abs=1e-3)
        # prompts and completions are customer data: not exported unless configured
        assert ex.messages == [] and ex.system_prompt is None
        assert ex.response_text is None and ex.reasoning_text is None
    assert SECRET_PROMPT.encode() not in spans_path.read_bytes()
    assert b"Let me think" not in spans_path.read_bytes()


def test_content_is_exported_only_when_configured(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    spans_path = tmp_path / "spans.jsonl"
    with _serve(tmp_path, upstream, {"path": str(spans_path), "include_content": True}) as env:
        env.client("verified").chat.completions.create(
            model="mock-think", messages=[{"role": "user", "content": SECRET_PROMPT}]
        )
    [ex] = _read_spans(spans_path)
    [row] = env.audit_rows()
    assert ex.messages == row["messages"] and ex.prompt() == SECRET_PROMPT
    assert ex.response_text == row["response_text"] and ex.reasoning_text == "Let me think."


class _Collector:
    """A tiny OTLP/HTTP receiver on 127.0.0.1: stores each POST body; answers `status`."""

    def __init__(self, status: int = 200, first: list[tuple[int, str | None]] | None = None) -> None:
        self.bodies: list[tuple[str, str | None, bytes]] = []
        self.status = status
        self.first = list(first or [])  # (status, Retry-After) answered to the first POSTs, in order
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib's handler name
                n = int(self.headers.get("content-length") or 0)
                outer.bodies.append((self.path, self.headers.get("content-type"), self.rfile.read(n)))
                status, retry_after = outer.first.pop(0) if outer.first else (outer.status, None)
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("retry-after", retry_after)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Collector:
        self.thread.start()
        return self

    def __exit__(self, *a: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_posts_otlp_http_json_to_a_collector(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    with _Collector() as col:
        with _serve(tmp_path, upstream, {"endpoint": col.url, "headers": {"x-tenant": "t1"}}) as env:
            _traffic(env)
        audit = env.audit_rows()
        assert col.bodies and all(p == "/v1/traces" and ct == "application/json" for p, ct, _ in col.bodies)
        # what the collector got is what the file exporter would have written: the adapter reads it
        received = tmp_path / "received.jsonl"
        received.write_bytes(b"".join(b + b"\n" for _, _, b in col.bodies))
        spans = _read_spans(received)
        assert sorted(_key(ex.model_dump()) for ex in spans) == sorted(_key(r) for r in audit)
        assert env.app.otel is not None and env.app.otel.exported == 5 and env.app.otel.post_failures == 0


def test_collector_errors_are_counted_and_traffic_is_unaffected(
    tmp_path: Path, upstream: tuple[MockUpstream, str]
) -> None:
    with _Collector(status=503) as col:
        with _serve(tmp_path, upstream, {"endpoint": col.url}) as env:
            r = env.client("verified").chat.completions.create(
                model="mock-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert r.choices[0].message.content
        assert env.app.otel is not None
        assert col.bodies and env.app.otel.post_failures >= 1 and env.app.otel.exported == 0


def test_retryable_failures_are_retried_with_the_same_request(
    tmp_path: Path, upstream: tuple[MockUpstream, str]
) -> None:
    # 503 with Retry-After 0, then 429 without it (jittered back-off from retry_initial_s), then accepted
    with _Collector(first=[(503, "0"), (429, None)]) as col:
        cfg = {"endpoint": col.url, "retry_initial_s": 0.05, "flush_s": 0.2}
        with _serve(tmp_path, upstream, cfg) as env:
            r = env.client("verified").chat.completions.create(
                model="mock-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert r.choices[0].message.content
            deadline = time.monotonic() + 10
            while len(col.bodies) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        otel = env.app.otel
        assert otel is not None
        assert len(col.bodies) == 3 and len({b for _, _, b in col.bodies}) == 1  # one batch, sent 3 times
        assert (otel.post_retries, otel.post_failures, otel.exported) == (2, 0, 1)


def test_non_retryable_failures_are_not_retried(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    with _Collector(status=400) as col:
        cfg = {"endpoint": col.url, "retry_initial_s": 0.05, "flush_s": 0.2}
        with _serve(tmp_path, upstream, cfg) as env:
            env.client("verified").chat.completions.create(
                model="mock-mini", messages=[{"role": "user", "content": "hi"}]
            )
        otel = env.app.otel
        assert otel is not None
        assert len(col.bodies) == 1 and (otel.post_retries, otel.post_failures, otel.exported) == (0, 1, 0)


def test_shutdown_does_not_wait_out_a_back_off(tmp_path: Path, upstream: tuple[MockUpstream, str]) -> None:
    with _Collector(status=503) as col:
        cfg = {"endpoint": col.url, "retry_initial_s": 60.0, "retries": 3, "flush_s": 0.2}
        with _serve(tmp_path, upstream, cfg) as env:
            env.client("verified").chat.completions.create(
                model="mock-mini", messages=[{"role": "user", "content": "hi"}]
            )
            deadline = time.monotonic() + 10
            while not col.bodies and time.monotonic() < deadline:
                time.sleep(0.05)
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 10  # not the 60 s back-off
        otel = env.app.otel
        assert otel is not None and otel.post_failures == 1 and otel.exported == 0
        assert len(col.bodies) <= 2  # the first try and at most one last try at shutdown


def test_retry_after_header_forms() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Sun, 29 Nov 2026 10:00:30 GMT", now=1795946400.0) == pytest.approx(30.0)
    assert retry_after_s("Sun, 29 Nov 2026 09:00:00 GMT", now=1795946400.0) == 0.0


def test_export_line_skips_unmappable_records_and_config_needs_a_destination() -> None:
    cfg = OtelExportConfig(path=Path("unused.jsonl"))
    line, bad = export_line([{"exchange_id": "x"}], cfg)  # no ts, no account: not an exchange
    assert line is None and bad == 1
    with pytest.raises(ValueError, match="path, an endpoint"):
        OtelExportConfig()
    with pytest.raises(ValueError, match="http"):
        OtelExportConfig(endpoint="ftp://collector")
    assert (
        orjson.loads(
            export_line(
                [{"exchange_id": "y", "ts": "2026-01-01T00:00:00Z", "account_id": "a", "model": "m"}], cfg
            )[0]
            or b"null"
        )["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]
        == "chat m"
    )
