"""The teacher's answer cache (`teacher.cached_generate`): resumes, never regenerates, honours limit and order."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from distillguard.forensics.teacher import Answer, cached_generate

PROMPTS = [f"prompt {i}" for i in range(10)]


class CountingTeacher:
    """Answers a prompt with its number repeated; records every batch it was asked for."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, prompts: list[str]) -> list[Answer]:
        self.batches.append(list(prompts))
        return [Answer(np.array([7, int(p.split()[1])]), np.full(3, int(p.split()[1]))) for p in prompts]


def test_a_rerun_reads_the_cache_and_generates_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "answers.jsonl"
    first = CountingTeacher()
    done = cached_generate(first, PROMPTS, cache, batch_size=4)
    assert [len(b) for b in first.batches] == [4, 4, 2]
    again = CountingTeacher()
    back = cached_generate(again, PROMPTS, cache, batch_size=4)
    assert again.batches == []
    assert sorted(back) == list(range(10))
    for i in range(10):
        assert np.array_equal(back[i].tokens, done[i].tokens) and np.array_equal(back[i].prompt, [7, i])


def test_limit_and_order_then_resume_where_it_stopped(tmp_path: Path) -> None:
    cache = tmp_path / "answers.jsonl"
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    t = CountingTeacher()
    done = cached_generate(t, PROMPTS, cache, batch_size=3, order=order, limit=5)
    assert sorted(done) == [5, 6, 7, 8, 9]  # the first five in the given order (a whole batch at most)
    assert t.batches == [["prompt 9", "prompt 8", "prompt 7"], ["prompt 6", "prompt 5"]]
    t2 = CountingTeacher()
    done = cached_generate(t2, PROMPTS, cache, batch_size=3, order=order, limit=7)
    assert t2.batches == [["prompt 4", "prompt 3"]] and sorted(done) == list(range(3, 10))


def test_deadline_stops_after_the_batch_that_passes_it(tmp_path: Path) -> None:
    t = CountingTeacher()
    done = cached_generate(t, PROMPTS, tmp_path / "a.jsonl", batch_size=2, deadline=time.monotonic() - 1)
    assert len(t.batches) == 1 and sorted(done) == [0, 1]  # that batch is kept in the cache
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 2
