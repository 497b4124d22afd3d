"""Radioactivity, open setting: n-gram students trained on partly watermarked corpora, read by reading mode.

The teacher is a tiny random-logits bigram model; students are count-based n-gram models trained on
corpora in which 0% (control), 5% and 25% of the texts are the teacher's output watermarked with one
account's key. Reading mode must name that account among several for 5% and 25%, and the control must
not reject. Everything is real: generation with `scheme.bias`, counting, prediction, scoring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.forensics.keyed_hash import fingerprints
from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.kgw import KGW
from distillguard.forensics.reading import read_suspect, reading_windows
from distillguard.forensics.scheme import SchemeError
from distillguard.forensics.student import NGramStudent
from distillguard.forensics.suspect import control_ring
from distillguard.forensics.teacher import Answer, RandomLogitsTeacher

VOCAB, LENGTH, N_CORPUS, N_READ = 256, 100, 1600, 600
SECRET = ProviderSecret(bytes(range(32)))
ACCOUNTS = [f"acct-{i}" for i in range(20)]
LEAKER = "acct-7"


@dataclass
class World:
    scheme: KGW
    ring: KeyRing
    clean: list[Answer]
    marked: list[Answer]  # training pool: the leaker's watermarked answers
    read: list[Answer]  # fresh watermarked answers, read through the suspects

    def student(self, fraction: float) -> NGramStudent:
        k = int(fraction * N_CORPUS)
        corpus = [a.tokens for a in self.marked[:k]] + [a.tokens for a in self.clean[k:]]
        return NGramStudent.fit(corpus, order=3)


@pytest.fixture(scope="module")
def world() -> World:
    # h = 2: the window space (256^3) is large enough that excluding the read texts' own windows
    # leaves most predictions scorable; a flat teacher (scale 0.5) keeps the mark strong per token
    scheme = KGW(gamma=0.25, delta=2.0, context_width=2)
    ring = KeyRing.derive(SECRET, ACCOUNTS)
    key = SECRET.account_key(LEAKER)
    teacher = RandomLogitsTeacher(VOCAB, seed=0, scale=0.5)
    clean = teacher.generate(teacher.random_prompts(N_CORPUS, seed=1), LENGTH, seed=2)
    n_marked = N_CORPUS // 4
    marked = teacher.generate(
        teacher.random_prompts(n_marked + N_READ, seed=3), LENGTH, scheme=scheme, key=key, seed=4
    )
    return World(scheme, ring, clean, marked[:n_marked], marked[n_marked:])


def _read(world: World, student: NGramStudent, ring: KeyRing | None = None):
    return read_suspect(
        student,
        world.scheme,
        [a.tokens for a in world.read],
        prompts=[a.prompt for a in world.read],
        ring=ring or world.ring,
    )


def test_teacher_output_carries_the_leakers_mark(world: World) -> None:
    r = world.scheme.score([a.tokens for a in world.read[:5]], SECRET.account_key(LEAKER))
    assert r.p_value < 1e-20
    other = world.scheme.score([a.tokens for a in world.read[:5]], SECRET.account_key("acct-8"))
    assert other.p_value > 1e-3


def test_control_student_does_not_reject(world: World) -> None:
    r = _read(world, world.student(0.0))
    assert r.attribution is not None
    assert r.windows_scored > 20_000
    assert r.p_value > 0.01
    assert r.attribution.implicated == []


@pytest.mark.parametrize("fraction, bound", [(0.05, 1e-5), (0.25, 1e-30)])
def test_watermarked_student_names_the_leaker(world: World, fraction: float, bound: float) -> None:
    r = _read(world, world.student(fraction))
    assert r.attribution is not None
    assert r.p_value < bound
    assert r.attribution.implicated == [f"{LEAKER}@0"]


def test_control_keys_never_used_do_not_reject_on_a_radioactive_student(world: World) -> None:
    r = _read(world, world.student(0.25), ring=control_ring(SECRET, 20))
    assert r.attribution is not None
    assert r.attribution.implicated == []


class _Copier:
    def top1(self, sequences):
        return [np.r_[-1, np.asarray(s)[1:]] for s in sequences]


def test_input_windows_are_excluded_else_a_clean_model_looks_radioactive(world: World) -> None:
    # a suspect that copies the text (predicts each actual next token) is what any good model does
    # often; without excluding the input's own windows it would score as the teacher's text does
    texts = [a.tokens for a in world.read]
    copies = [np.r_[-1, t[1:]] for t in texts]
    rw = reading_windows(texts, copies, world.scheme.context_width)
    key = SECRET.account_key(LEAKER)
    unfiltered = world.scheme.score(rw.windows, key, dedup=True)
    assert unfiltered.p_value < 1e-50
    assert np.isin(fingerprints(rw.windows), rw.exclude).all()
    # read through reading mode, such a copier gives no evidence at all
    copier = read_suspect(_Copier(), world.scheme, texts, ring=world.ring)
    assert copier.windows_scored == 0 and copier.p_value == 1.0


def test_ngram_student_learns_its_corpus() -> None:
    corpus = [np.array([1, 2, 3, 1, 2, 3, 1, 2, 4]), np.array([5, 2, 3])]
    st = NGramStudent.fit(corpus, order=3)
    # (1, 2) -> 3 twice, -> 4 once; (5, 2) unseen at order 3 backs off to (2) -> 3
    assert st.predict(np.array([[1, 2], [5, 2], [9, 9]])).tolist() == [3, 3, st.unigram_best]
    preds = st.top1([np.array([1, 2, 3])])[0]
    assert preds.tolist() == [-1, 2, 3]  # after (1): 2; after (1, 2): 3


def test_ngram_student_round_trips_through_npz(tmp_path: Path, world: World) -> None:
    st = world.student(0.05)
    st.save(tmp_path / "s.npz")
    back = NGramStudent.load(tmp_path / "s.npz")
    seqs = [a.tokens for a in world.read[:20]]
    for a, b in zip(st.top1(seqs), back.top1(seqs), strict=True):
        assert np.array_equal(a, b)


def test_reading_rejects_mismatched_inputs() -> None:
    with pytest.raises(SchemeError, match="text 0: 3 tokens but 2 predictions"):
        reading_windows([np.array([1, 2, 3])], [np.array([1, 2])], 1)


def _records(path: Path, answers: list[Answer]) -> Path:
    rows = [
        {"id": f"r{i}", "tokens": a.tokens.tolist(), "prompt_tokens": a.prompt.tolist()}
        for i, a in enumerate(answers)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_cli_open_setting_writes_evidence(tmp_path: Path, world: World) -> None:
    world.student(0.05).save(tmp_path / "student.npz")
    (tmp_path / "secret.hex").write_text(SECRET.to_hex())
    (tmp_path / "accounts.txt").write_text("\n".join(ACCOUNTS) + "\n")
    texts = _records(tmp_path / "texts.jsonl", world.read)
    world.student(0.0).save(tmp_path / "control.npz")
    out = tmp_path / "ev"
    args = [
        "forensics", "test", str(tmp_path / "student.npz"),
        "--texts", str(texts), "--control-model", str(tmp_path / "control.npz"),
        "--keys", str(tmp_path / "accounts.txt"), "--secret", str(tmp_path / "secret.hex"),
        "--param", "context_width=2", "--out", str(out),
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ev = json.loads((out / "evidence.json").read_text())
    assert ev["verdict"]["implicated"] == [f"{LEAKER}@0"]
    assert ev["verdict"]["controls_passed"] is True
    assert ev["tests"][0]["p_value"] < 1e-5
    assert ev["tests"][0]["tokens_scored"] > 20_000
    assert {c["name"] for c in ev["controls"]} == {"control keys", "control model"}
    assert all(c["p_value"] > 1e-3 for c in ev["controls"])
    assert any("forensics test" in c and "--param context_width=2" in c for c in ev["reproduce"])
    html = (out / "evidence.html").read_text()
    assert "acct-7@0" in html and "<script" not in html
    # no secret and no text leaks into the report
    assert SECRET.to_hex() not in html and SECRET.to_hex() not in (out / "evidence.json").read_text()
    # the scan report reads the same evidence: a results directory holding it shows the test
    from distillguard.report.forensics import load_forensics

    rep = load_forensics(out)
    assert rep is not None and len(rep.tests) == 1
    t = rep.tests[0]
    assert t.detected and t.accounts_implicated == [f"{LEAKER}@0"] and t.tokens_scored > 20_000
    assert {c.name for c in t.controls} == {"control keys", "control model"}
    assert t.command and "forensics test" in t.command


def test_cli_control_student_finds_nothing(tmp_path: Path, world: World) -> None:
    world.student(0.0).save(tmp_path / "control.npz")
    (tmp_path / "secret.hex").write_text(SECRET.to_hex())
    (tmp_path / "accounts.txt").write_text("\n".join(ACCOUNTS) + "\n")
    texts = _records(tmp_path / "texts.jsonl", world.read)
    args = [
        "forensics", "test", str(tmp_path / "control.npz"), "--texts", str(texts),
        "--keys", str(tmp_path / "accounts.txt"), "--secret", str(tmp_path / "secret.hex"),
        "--param", "context_width=2", "--out", str(tmp_path / "ev"),
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "evidence.json").read_text())
    assert ev["verdict"]["implicated"] == []
    assert ev["tests"][0]["p_value"] > 0.01


def test_cli_needs_texts_for_a_local_suspect(tmp_path: Path, world: World) -> None:
    world.student(0.0).save(tmp_path / "s.npz")
    (tmp_path / "secret.hex").write_text(SECRET.to_hex())
    (tmp_path / "accounts.txt").write_text("acct-1\n")
    res = CliRunner().invoke(
        app,
        ["forensics", "test", str(tmp_path / "s.npz"), "--keys", str(tmp_path / "accounts.txt"),
         "--secret", str(tmp_path / "secret.hex"), "--out", str(tmp_path / "ev")],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--texts" in res.output
