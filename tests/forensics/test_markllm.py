"""The MarkLLM / lm-watermarking compatible KGW detector, against MarkLLM's own scores.

Needs torch (the `dev` extra pins torch==2.13.0, a CPU build): skipped where it is missing, except
under CI, where a missing torch is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CI"):
    import torch
else:
    torch = pytest.importorskip("torch")

from distillguard.forensics.markllm import MarkLLMKGW
from distillguard.forensics.scheme import get_scheme

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "../shared/data/watermark/markllm_kgw_smollm2.json"
IDS = Path(__file__).parent / "data" / "markllm_kgw_smollm2_ids.json"


@pytest.fixture(scope="module")
def fixture() -> tuple[list[dict[str, object]], list[list[int]]]:
    if not FIXTURE.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"missing {FIXTURE}")
        pytest.skip(f"missing {FIXTURE}")
    records = json.loads(FIXTURE.read_text())["records"]
    ids = json.loads(IDS.read_text())["ids"]
    assert [len(i) for i in ids] == [r["n_tokens"] for r in records]
    return records, ids


@pytest.fixture(scope="module")
def scheme() -> MarkLLMKGW:
    torch.set_num_threads(1)
    s = get_scheme("markllm-kgw")
    assert isinstance(s, MarkLLMKGW)
    return s


def test_reproduces_markllm_z_scores(fixture, scheme) -> None:  # type: ignore[no-untyped-def]
    records, ids = fixture
    batch = scheme.score_each([np.asarray(i) for i in ids], dedup=False)
    ref = np.array([r["markllm_z"] for r in records])
    assert np.abs(batch.z - ref).max() < 1e-6
    marked = np.array([bool(r["watermarked"]) for r in records])
    # and the exact p-values separate the two halves of the fixture
    assert (batch.p_value[marked] < 1e-6).mean() >= 0.95
    assert batch.p_value[~marked].min() > 1e-4
    # one text through `score` agrees with the batch path
    assert scheme.score(np.asarray(ids[0]), dedup=False).z == pytest.approx(ref[0], abs=1e-9)


def _reference_green(tokens: list[int], seeding: str, vocab: int = 49_152, gamma: float = 0.25) -> list[bool]:
    """Green flags the way the reference tools compute them: one randperm per token, in a loop."""
    hash_key = 15485863
    g = torch.Generator(device="cpu")
    g.manual_seed(hash_key)
    prf = torch.randperm(vocab, generator=g)
    flags = []
    for i in range(1, len(tokens)):
        prev = tokens[i - 1]
        seed = hash_key * prev if seeding == "simple_1" else (hash_key * int(prf[prev % vocab])) % vocab
        g.manual_seed(seed)
        green = torch.randperm(vocab, generator=g)[: int(vocab * gamma)]
        flags.append(bool((green == tokens[i]).any()))
    return flags


@pytest.mark.parametrize("seeding", ["markllm", "simple_1"])
def test_vectorised_flags_equal_reference_loop(seeding: str) -> None:
    toks = np.random.default_rng(11).integers(0, 49_152, size=25).tolist()
    toks[5:9] = [toks[4]] * 4  # repeats exercise the cache
    s = MarkLLMKGW(seeding=seeding)  # type: ignore[arg-type]
    r = s.score(np.asarray(toks), dedup=False)
    assert r.green[1:].tolist() == _reference_green(toks, seeding)
    assert r.n_scored == 24 and np.isnan(r.token_scores[0])


def test_simple_1_seeding_is_a_different_scheme(fixture) -> None:  # type: ignore[no-untyped-def]
    records, ids = fixture
    marked = [np.asarray(i) for i, r in zip(ids, records, strict=True) if r["watermarked"]][:5]
    s1 = get_scheme("lm-watermarking-kgw")
    assert isinstance(s1, MarkLLMKGW) and s1.seeding == "simple_1"
    assert max(s1.score_each(marked, dedup=False).z) < 4.0


def test_bias_adds_delta_to_the_green_list(scheme) -> None:  # type: ignore[no-untyped-def]
    ids = np.array([[17, 4242], [3, 99]])
    out = scheme.bias(ids, np.zeros((2, 49_152)), None)
    for row in range(2):
        flags = scheme.score(np.array([ids[row, -1], 0]), dedup=False)  # context = last id
        green = out[row] == scheme.delta
        assert green.sum() == 12_288
        assert bool(green[0]) == bool(flags.green[1])


@pytest.mark.parametrize("seeding", ["markllm", "simple_1"])
def test_green_list_table_on_disk_equals_in_memory(tmp_path: Path, seeding: str) -> None:
    vocab = 1000
    toks = [np.random.default_rng(i).integers(0, vocab, size=120) for i in range(4)]
    mem = MarkLLMKGW(vocab_size=vocab, seeding=seeding)  # type: ignore[arg-type]
    disk = MarkLLMKGW(vocab_size=vocab, seeding=seeding, table_dir=tmp_path)  # type: ignore[arg-type]
    ref = mem.score_each(toks, dedup=False)
    got = disk.score_each(toks, dedup=False)
    assert got.statistic.tolist() == ref.statistic.tolist()
    assert 0 < disk.green_lists.built < vocab  # only the rows met were built
    # a second process with the same table builds only what the first did not
    again = MarkLLMKGW(vocab_size=vocab, seeding=seeding, table_dir=tmp_path)  # type: ignore[arg-type]
    assert again.score_each(toks, dedup=False).statistic.tolist() == ref.statistic.tolist()
    assert again.green_lists.built == 0
    assert again.build_table() == vocab - disk.green_lists.built
    fresh = MarkLLMKGW(vocab_size=vocab, seeding=seeding, table_dir=tmp_path)  # type: ignore[arg-type]
    other = [np.random.default_rng(99).integers(0, vocab, size=300)]
    assert fresh.score_each(other, dedup=False).z.tolist() == mem.score_each(other, dedup=False).z.tolist()
    assert fresh.green_lists.built == 0
