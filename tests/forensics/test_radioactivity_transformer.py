"""The transformer student (forensics/transformer_student.py): it trains, predicts in teacher ids, is read.

Tiny models and corpora, seconds on CPU. The real demonstration (SmolLM2 teacher, 5/25/100%
watermarked corpora) is benchmarks/forensics_radioactivity.py, not a unit test.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")  # the forensics extra; torch is also a dev dependency

from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.kgw import KGW
from distillguard.forensics.reading import read_suspect
from distillguard.forensics.scheme import SchemeError
from distillguard.forensics.teacher import RandomLogitsTeacher
from distillguard.forensics.transformer_student import (
    StudentConfig,
    TrainLog,
    TransformerStudent,
)

TINY = StudentConfig(layers=1, d_model=32, heads=2, seq_len=16, batch_size=16, steps=80, lr=2e-2, warmup=5)
# teacher ids far apart and far from 0: the student must map its compact ids back to these
CYCLE = np.array([1000, 2017, 30_001, 45_000, 7])


@pytest.fixture(scope="module")
def cycle_student() -> tuple[TransformerStudent, TrainLog]:
    corpus = [np.tile(CYCLE, 12)[s : s + 40] for s in range(5)]
    return TransformerStudent.fit(corpus, TINY)


def test_student_learns_a_deterministic_corpus_and_predicts_teacher_ids(
    cycle_student: tuple[TransformerStudent, TrainLog],
) -> None:
    student, log = cycle_student
    d = log.to_dict()
    assert d["vocab"] == 5 and d["corpus_tokens"] == 200 and log.steps == TINY.steps
    assert d["loss_last"] < 0.2 * d["loss_first"]  # loss goes down: from ~log(7) to near zero
    text = np.tile(CYCLE, 4)
    pred = student.top1([text])[0]
    assert pred.shape == text.shape and pred[0] == -1
    # after two tokens of the cycle, every next id is determined: the student must get them right
    assert np.mean(pred[2:] == text[2:]) > 0.95
    assert set(pred[1:].tolist()) <= set(CYCLE.tolist())


def test_long_sequences_are_read_in_overlapping_windows(
    cycle_student: tuple[TransformerStudent, TrainLog],
) -> None:
    student, _ = cycle_student
    text = np.tile(CYCLE, 20)  # 100 tokens, six times the trained context of 16
    pred = student.top1([text, text[:7]])
    assert pred[0].shape == (100,) and pred[1].shape == (7,)
    assert (pred[0][1:] >= 0).all()  # every position past the first is predicted, across windows
    assert np.mean(pred[0][2:] == text[2:]) > 0.95
    # the first window's predictions do not depend on what follows it
    assert np.array_equal(pred[0][:7], pred[1])


def test_unknown_ids_are_read_but_never_predicted(cycle_student: tuple[TransformerStudent, TrainLog]) -> None:
    student, _ = cycle_student
    text = np.array([1000, 2017, 999_999, 45_000, 123, 7])  # two ids the corpus never had
    # compact ids follow the sorted teacher ids after UNK (0) and SEP (1): 7 -> 2, 1000 -> 3, ...
    assert student.encode(text).tolist() == [3, 4, 0, 6, 0, 2]
    pred = student.top1([text])[0]
    assert set(pred[1:].tolist()) <= set(CYCLE.tolist())


def test_empty_corpus_is_an_error() -> None:
    with pytest.raises(SchemeError, match="empty corpus"):
        TransformerStudent.fit([np.zeros(0, np.int64)], TINY)


def test_reading_mode_runs_on_a_transformer_student_and_control_does_not_reject() -> None:
    secret = ProviderSecret(bytes(range(3, 35)))
    ring = KeyRing.derive(secret, [f"acct-{i}" for i in range(10)])
    scheme = KGW(gamma=0.25, delta=2.0, context_width=2)
    teacher = RandomLogitsTeacher(128, seed=0, scale=0.5)
    clean = teacher.generate(teacher.random_prompts(40, seed=1), 50, seed=2)  # never watermarked
    read = teacher.generate(
        teacher.random_prompts(20, seed=3), 50, scheme=scheme, key=secret.account_key("acct-4"), seed=4
    )
    student, log = TransformerStudent.fit([a.tokens for a in clean], TINY)
    assert log.to_dict()["loss_last"] < log.to_dict()["loss_first"]
    r = read_suspect(student, scheme, [a.tokens for a in read], prompts=[a.prompt for a in read], ring=ring)
    assert r.attribution is not None
    assert r.positions_read > 0 and r.windows_scored > 100
    assert r.p_value > 1e-3 and r.attribution.implicated == []  # it never saw a watermark


def test_vocabulary_keeps_the_most_frequent_ids() -> None:
    corpus = [np.array([5, 5, 5, 9, 9, 3, 700, 700, 700, 700])]
    cfg = StudentConfig(layers=1, d_model=8, heads=2, seq_len=4, batch_size=2, steps=1, max_vocab=2)
    student, log = TransformerStudent.fit(corpus, cfg)
    assert student.vocab_ids.tolist() == [5, 700] and log.vocab == 2
    assert student.encode(np.array([9, 700, 5, 3])).tolist() == [0, 3, 2, 0]
    pred = student.top1([np.array([9, 700, 5, 3])])[0]
    assert set(pred[1:].tolist()) <= {5, 700}  # a rare id is read as unknown, never predicted
