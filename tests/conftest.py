"""Shared test helpers: small, deterministic exchange logs built from the real prompt corpora."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "prompts"
FALLBACK = [
    "How can I improve my time management skills?",
    "Write a haiku about autumn leaves falling in the park.",
    "Explain the difference between TCP and UDP for a beginner.",
    "What are good vegetarian sources of protein for athletes?",
    "Summarize the plot of Pride and Prejudice in three sentences.",
]
T0 = datetime(2026, 11, 1, tzinfo=UTC)
ORCA = (
    "You are an AI assistant. User will you give you a task. Your goal is to complete the task as "
    "faithfully as you can. While performing the task think step-by-step and justify your steps."
)


def _load(name: str, field: str) -> list[str]:
    p = SHARED / name
    if not p.exists():
        return FALLBACK
    return [orjson.loads(line)[field] for line in p.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def corpora() -> dict[str, list[str]]:
    return {"arena": _load("arena_hard_v0.1.jsonl", "prompt"), "gsm8k": _load("gsm8k_test.jsonl", "question")}


class LogBuilder:
    """Builds exchange dicts (native format) for hand-made personas."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.rows: list[dict[str, Any]] = []
        self._n = 0

    def add(self, account: str, t: datetime, prompt: str, **kw: Any) -> dict[str, Any]:
        self._n += 1
        msgs = [*kw.pop("history", []), {"role": "user", "content": prompt}]
        row = {
            "exchange_id": f"ex{self._n}",
            "ts": t.isoformat(),
            "account_id": account,
            "model": kw.pop("model", "acme-large-2"),
            "messages": msgs,
            "response_text": kw.pop("response", "Here is a detailed answer. " * 20),
            "completion_tokens": kw.pop("completion_tokens", 120),
            **kw,
        }
        self.rows.append(row)
        return row

    def chat_user(self, account: str, prompts: list[str], n: int, ip: str) -> None:
        """A person: daytime, bursty, follow-ups that reuse the previous answer's words."""
        day = T0 + timedelta(hours=8 + self.rng.random() * 2)
        t = day
        for _ in range(n):
            t += timedelta(seconds=self.rng.expovariate(1 / 600) if self.rng.random() < 0.7 else 3600 * 2)
            p = self.rng.choice(prompts)
            if self.rng.random() < 0.4:
                words = p.split()
                topic = " ".join(self.rng.sample(words, min(4, len(words))))
                ans = f"About {topic}: there are several options, each with trade-offs worth comparing."
                ask = self.rng.choice(
                    ["Why", "Really? Explain", "Go deeper on", "Shorter please:", "Compare"]
                )
                self.add(
                    account,
                    t,
                    f"{ask} {topic}?",
                    history=[{"role": "user", "content": p}, {"role": "assistant", "content": ans}],
                    client_ip=ip,
                    temperature=0.7,
                    max_tokens=800,
                )
            else:
                self.add(account, t, p, client_ip=ip, temperature=0.7, max_tokens=800)

    def orca_harvester(
        self, account: str, prompts: list[str], n: int, ips: list[str], start: datetime = T0
    ) -> None:
        """Automated: steady rate round the clock, Orca system prompt, fixed large max_tokens."""
        gap = 86400 / n
        for i in range(n):
            t = start + timedelta(seconds=i * gap + self.rng.random() * gap * 0.2)
            self.add(
                account,
                t,
                self.rng.choice(prompts),
                system_prompt=ORCA,
                client_ip=self.rng.choice(ips),
                max_tokens=4096,
                temperature=0.7,
                response="Step 1: ... Step 2: ... " * 80,
                completion_tokens=900,
            )

    def write(self, path: Path) -> Path:
        self.rows.sort(key=lambda r: r["ts"])
        with open(path, "wb") as f:
            for r in self.rows:
                f.write(orjson.dumps(r) + b"\n")
        return path


@pytest.fixture
def builder() -> Iterator[LogBuilder]:
    yield LogBuilder(seed=1)


def _need_browser(what: str) -> None:
    import os

    if os.environ.get("CI"):
        pytest.fail(f"{what} is needed in CI")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's `chromium` (never `playwright install`, which downloads a browser)."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _need_browser("Chromium (apt-get install chromium)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Any]:
    """One headless Chromium for the whole run: Playwright's sync API allows one instance at a time."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need_browser("playwright (pip install playwright)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium)
        try:
            yield b
        finally:
            b.close()
