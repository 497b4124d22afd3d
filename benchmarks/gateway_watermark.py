"""What the gateway's watermark hook adds per response (µs), in-process, on real model answers.

    .venv/bin/python benchmarks/gateway_watermark.py [--repeat 20]

Texts: the 100 SmolLM2 answers of `../shared/data/watermark/markllm_kgw_smollm2.json` (~1 k characters
each), joined into responses of about 1 k, 4 k and 16 k characters. For each size:

- lexical JSON: `LexicalMarker.mark_json` on a parsed chat completion plus the `orjson.dumps` of the
  marked body (the gateway parses the upstream's body anyway; the re-serialisation is extra);
- lexical SSE: `mark_event` on every chunk (4 characters each, about one token) plus each chunk's
  re-serialisation, and the final flush;
- upstream mode: `WatermarkHook.prepare` (strip, add `vllm_xargs`, header) plus the body's re-serialisation,
  per request (independent of the response size).

Reported as µs per response and µs per 1,000 characters (median of `--repeat` runs, one thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from distillguard.forensics.keys import ProviderSecret  # noqa: E402
from distillguard.forensics.lexical import LexicalWatermarker  # noqa: E402
from distillguard.gateway.config import WatermarkConfig  # noqa: E402
from distillguard.gateway.watermark import LexicalMarker, WatermarkHook  # noqa: E402

FIXTURE = ROOT.parent / "shared" / "data" / "watermark" / "markllm_kgw_smollm2.json"


def texts_of_size(answers: list[str], size: int) -> str:
    out, n, i = [], 0, 0
    while n < size:
        a = answers[i % len(answers)]
        out.append(a)
        n += len(a) + 2
        i += 1
    return "\n\n".join(out)[:size]


def best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):  # bounded
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    answers = [r["text"] for r in json.loads(FIXTURE.read_text())["records"]]
    wm = LexicalWatermarker(ProviderSecret(bytes(range(32))).account_key("acct-bench"))
    rows = []
    for size in (1_000, 4_000, 16_000):
        text = texts_of_size(answers, size)
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": size // 4, "total_tokens": size // 4 + 10},
        }
        raw = orjson.dumps(body)

        def json_mode(raw: bytes = raw) -> None:
            obj = orjson.loads(raw)  # what the gateway already does: not the hook's cost, subtracted below
            LexicalMarker("/v1/chat/completions", wm).mark_json(obj)
            orjson.dumps(obj)

        def parse_only(raw: bytes = raw) -> None:
            orjson.loads(raw)

        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        events = [
            {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
            for p in pieces
        ]  # fmt: skip

        def sse_mode(events: list[dict[str, Any]] = events) -> None:
            m = LexicalMarker("/v1/chat/completions", wm)
            for ev in events:
                e = {**ev, "choices": [{**ev["choices"][0], "delta": dict(ev["choices"][0]["delta"])}]}
                m.mark_event(e)
                orjson.dumps(e)
            m.mark_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})

        def sse_copy_only(events: list[dict[str, Any]] = events) -> None:
            for ev in events:  # the copies sse_mode makes so each run starts from the upstream's events
                {**ev, "choices": [{**ev["choices"][0], "delta": dict(ev["choices"][0]["delta"])}]}

        j = best_of(json_mode, args.repeat) - best_of(parse_only, args.repeat)
        s = best_of(sse_mode, args.repeat) - best_of(sse_copy_only, args.repeat)
        assert wm.apply(text) != text
        rows.append((len(text), j, s, len(pieces)))
    hook = WatermarkHook(WatermarkConfig(mode="upstream", header="x-dg-watermark"))

    def upstream_mode() -> None:
        for _ in range(1000):
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "vllm_xargs": {"a": 1}}
            hook.prepare("/v1/chat/completions", "acct-bench", body, {"attributes": {}})
            orjson.dumps(body)

    up = best_of(upstream_mode, max(3, args.repeat // 4)) / 1000
    print(f"{'chars':>7} {'JSON us':>9} {'JSON us/1k':>11} {'SSE us':>9} {'SSE us/1k':>10} {'chunks':>7}")
    for n, j, s, k in rows:
        print(f"{n:>7} {j:>9.0f} {j * 1000 / n:>11.1f} {s:>9.0f} {s * 1000 / n:>10.1f} {k:>7}")
    print(f"upstream mode (prepare + body re-serialisation): {up:.2f} us per request")


if __name__ == "__main__":
    main()
