"""The vLLM adapter through its interface: fake batches as vLLM's engine builds them (vLLM is not installed).

A fake `BatchUpdate` carries `removed`, `added` (index, params, prompt ids, live output list) and `moved`
(a, b, direction) as vLLM's does; the marked logits must equal the transformers processor's on the same
ids, and requests without `dg_watermark` must be left exactly as they were.
"""

from __future__ import annotations

import abc
import enum
import importlib
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from distillguard.forensics import vllm as dgv  # noqa: E402
from distillguard.forensics.gumbel import Gumbel  # noqa: E402
from distillguard.forensics.hf import WatermarkLogitsProcessor  # noqa: E402
from distillguard.forensics.keys import ProviderSecret  # noqa: E402
from distillguard.forensics.kgw import KGW  # noqa: E402

SECRET = ProviderSecret(bytes(range(7, 39)))
VOCAB = 257


class Move(enum.Enum):  # vLLM's MoveDirectionality, by name
    UNIDIRECTIONAL = enum.auto()
    SWAP = enum.auto()


@dataclass
class Params:  # the part of vLLM's SamplingParams the processor reads
    extra_args: dict[str, Any] | None = None


@dataclass
class Update:  # vLLM's BatchUpdate
    batch_size: int
    removed: list[int] = field(default_factory=list)
    added: list[tuple[int, Params, list[int] | None, list[int]]] = field(default_factory=list)
    moved: list[tuple[int, int, Move]] = field(default_factory=list)


def resolver(**params: dict[str, Any]) -> dgv.KeyResolver:
    return dgv.KeyResolver(SECRET, params)


def marked(account: str, scheme: str = "kgw", epoch: int = 0) -> Params:
    return Params({dgv.ARG: dgv.WatermarkArg(scheme, epoch, account).encode(), "other": 1})


def hf_bias(scheme: Any, key: Any, ids: list[int], row: Any) -> Any:
    """What the transformers processor does to one row given the whole sequence so far."""
    proc = WatermarkLogitsProcessor(scheme, key)
    return proc(torch.tensor([ids]), row.reshape(1, -1).clone())[0]


def test_arg_round_trips_and_rejects_malformed_values() -> None:
    a = dgv.WatermarkArg("kgw", 3, "acct:with:colons")
    assert dgv.WatermarkArg.parse(a.encode()) == a
    for bad in ("kgw:0", "nope:0:acct", "kgw:-1:acct", "kgw:x:acct", "kgw:0:", 17, "kgw:0:" + "a" * 300):
        with pytest.raises(ValueError):
            dgv.WatermarkArg.parse(bad)
    dgv.WatermarkBatchProcessor.validate_params(Params(None))  # no arg: fine
    dgv.WatermarkBatchProcessor.validate_params(marked("a"))
    with pytest.raises(ValueError, match="scheme"):
        dgv.WatermarkBatchProcessor.validate_params(Params({dgv.ARG: "bogus:0:a"}))


@pytest.mark.parametrize("device_bias", [None, True])
def test_batch_apply_equals_the_hf_processor_and_leaves_unmarked_rows_alone(device_bias: bool | None) -> None:
    keys = resolver(kgw={"gamma": 0.25, "delta": 2.0})
    proc = dgv.WatermarkBatchProcessor(None, "cpu", False, keys=keys, device_bias=device_bias)
    assert proc.is_argmax_invariant() is False
    outs: list[list[int]] = [[11, 12], [], [40], [7, 8, 9]]
    prompts: list[list[int] | None] = [[1, 2, 3], [5, 6], [9], None]
    params = [marked("acct-a"), Params({"other": 2}), marked("acct-b"), marked("acct-a")]
    proc.update_state(Update(4, added=[(i, params[i], prompts[i], outs[i]) for i in range(4)]))
    logits = torch.randn(4, VOCAB)
    before = logits.clone()
    got = proc.apply(logits)
    assert got is logits  # in place, as vLLM allows
    scheme = KGW(gamma=0.25, delta=2.0)
    for i, acct in ((0, "acct-a"), (2, "acct-b"), (3, "acct-a")):
        seq = [*(prompts[i] or []), *outs[i]]
        expected = hf_bias(scheme, SECRET.account_key(acct), seq, before[i])
        assert torch.equal(got[i], expected), i
        assert not torch.equal(got[i], before[i])
    assert torch.equal(got[1], before[1])  # no dg_watermark: untouched, bit for bit


@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])  # thresholds on both sides of 2^63 (signed int64 in torch)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_device_bias_is_the_numpy_bias_bit_for_bit(gamma: float, dtype: str) -> None:
    """The torch twin of the hash (int64 arithmetic on the logits' device) against the schemes' numpy bias."""
    keys = resolver(kgw={"gamma": gamma}, gumbel={"context_width": 2})
    proc = dgv.WatermarkBatchProcessor(keys=keys, device_bias=True)  # the path a GPU takes, run on the CPU
    n, vocab = 12, 5003
    rng = np.random.default_rng(int(gamma * 10))
    prompts = [rng.integers(0, vocab, 3).tolist() for _ in range(n)]
    outs: list[list[int]] = [rng.integers(0, vocab, i % 4).tolist() for i in range(n)]
    schemes = ["kgw" if i % 3 else "gumbel" for i in range(n)]
    params = [marked(f"acct-{i % 5}", schemes[i]) for i in range(n)]  # shared keys: grouped rows
    proc.update_state(Update(n, added=[(i, params[i], prompts[i], outs[i]) for i in range(n)]))
    logits = torch.randn(n, vocab).to(getattr(torch, dtype))
    before = logits.clone()
    proc.apply(logits)
    kgw, gum = KGW(gamma=gamma), Gumbel(context_width=2)
    for i in range(n):
        scheme = kgw if schemes[i] == "kgw" else gum
        expected = hf_bias(scheme, SECRET.account_key(f"acct-{i % 5}"), prompts[i] + outs[i], before[i])
        assert torch.equal(logits[i], expected), i
    green_share = float((logits[1] != before[1]).float().mean())
    assert abs(green_share - gamma) < 0.05  # the green list has the configured size


def test_running_output_lists_are_read_at_each_step_and_removed_rows_stop() -> None:
    proc = dgv.WatermarkBatchProcessor(keys=resolver())
    out: list[int] = []
    proc.update_state(Update(1, added=[(0, marked("a"), [4, 5], out)]))
    scheme, key = KGW(), SECRET.account_key("a")
    for tok in (17, 3, 99):  # vLLM appends to the same list; no update_state between steps
        row = torch.randn(1, VOCAB)
        got = proc.apply(row.clone())
        assert torch.equal(got[0], hf_bias(scheme, key, [4, 5, *out], row[0]))
        out.append(tok)
    proc.update_state(None)  # no change in the batch
    assert 0 in proc.rows
    proc.update_state(Update(0, removed=[0]))
    row = torch.randn(1, VOCAB)
    assert torch.equal(proc.apply(row.clone()), row)


def test_moves_and_swaps_follow_the_requests() -> None:
    proc = dgv.WatermarkBatchProcessor(keys=resolver())
    a_out, b_out = [1, 2], [3, 4]
    proc.update_state(Update(2, added=[(0, marked("a"), [9], a_out), (1, marked("b"), [9], b_out)]))
    proc.update_state(Update(2, moved=[(0, 1, Move.SWAP)]))
    assert proc.rows[0].key == SECRET.account_key("b") and proc.rows[1].key == SECRET.account_key("a")
    # a one-way move: row 0's request goes to row 2, row 0 is empty; then an unmarked request takes row 1
    proc.update_state(Update(3, moved=[(0, 2, Move.UNIDIRECTIONAL)]))
    assert set(proc.rows) == {1, 2} and proc.rows[2].key == SECRET.account_key("b")
    proc.update_state(Update(3, added=[(1, Params(), [1], [])]))
    assert set(proc.rows) == {2}


def test_gumbel_and_short_prompts_match_the_hf_processor() -> None:
    proc = dgv.WatermarkBatchProcessor(keys=resolver(gumbel={"context_width": 4}))
    outs: list[list[int]] = [[], [5, 6, 7, 8, 9], [1]]
    prompts = [[1, 2], [3], [4, 4, 4, 4]]  # row 0 has fewer ids than the context width
    proc.update_state(
        Update(3, added=[(i, marked(f"g{i}", "gumbel"), prompts[i], outs[i]) for i in range(3)])
    )
    logits = torch.randn(3, VOCAB)
    before = logits.clone()
    proc.apply(logits)
    g = Gumbel(context_width=4)
    for i in range(3):
        expected = hf_bias(g, SECRET.account_key(f"g{i}"), [*prompts[i], *outs[i]], before[i])
        assert torch.equal(logits[i], expected), i
        assert int(torch.isfinite(logits[i]).sum()) == 1  # one token allowed


def test_request_level_processor_both_signatures() -> None:
    keys = resolver()
    assert dgv.request_processor(Params({"x": 1}), keys) is None
    p = dgv.request_processor(marked("acct-r"), keys)
    assert p is not None
    row = torch.randn(VOCAB)
    expected = hf_bias(KGW(), SECRET.account_key("acct-r"), [8, 9, 10], row)
    assert torch.equal(p([8, 9], [10], row.clone()), expected)
    assert torch.equal(p([8, 9, 10], row.clone()), expected)  # (output_ids, logits): context from outputs
    np.testing.assert_array_equal(p([8], [10], row.numpy().copy()), expected.numpy())  # numpy rows too
    with pytest.raises(TypeError):
        p(row)


def toy_logits(ctx_last: np.ndarray) -> np.ndarray:
    """A fixed 'model': next-token logits as a function of the last token (one table row per token)."""
    table = np.random.default_rng(5).standard_normal((VOCAB, VOCAB)).astype(np.float32)
    return table[ctx_last]


@pytest.mark.parametrize("device_bias", [None, True])
def test_engine_loop_generates_what_hf_generates_and_detection_names_the_account(
    device_bias: bool | None,
) -> None:
    """Greedy decoding of four requests in one persistent batch, with joins and a swap."""
    keys = resolver(kgw={"gamma": 0.25, "delta": 4.0})
    proc = dgv.WatermarkBatchProcessor(keys=keys, device_bias=device_bias)
    prompts = {"a": [3, 14], "b": [15, 92], "c": [65, 35], "u": [89, 79]}
    accounts = {"a": "acct-a", "b": "acct-b", "c": "acct-a", "u": None}
    outputs: dict[str, list[int]] = {r: [] for r in prompts}
    row_of: dict[str, int] = {}
    steps = 60

    def add(req: str, row: int) -> tuple[int, Params, list[int], list[int]]:
        row_of[req] = row
        acct = accounts[req]
        return (row, marked(acct) if acct else Params(), prompts[req], outputs[req])

    proc.update_state(Update(3, added=[add("a", 0), add("b", 1), add("u", 2)]))
    for step in range(steps):
        if step == 10:  # c joins in a new row
            proc.update_state(Update(4, added=[add("c", 3)]))
        if step == 30:  # the engine swaps a and c in its persistent batch
            proc.update_state(Update(4, moved=[(row_of["a"], row_of["c"], Move.SWAP)]))
            row_of["a"], row_of["c"] = row_of["c"], row_of["a"]
        order = sorted(row_of, key=row_of.__getitem__)
        last = np.array([(prompts[r] + outputs[r])[-1] for r in order])
        logits = torch.from_numpy(toy_logits(last))
        proc.apply(logits)
        for r, tok in zip(order, logits.argmax(dim=1).tolist(), strict=True):
            outputs[r].append(int(tok))
    # the same decoding, one request at a time, through the transformers processor
    scheme = KGW(gamma=0.25, delta=4.0)
    for r, acct in accounts.items():
        seq = list(prompts[r])
        n = len(outputs[r])
        for _ in range(n):
            row = torch.from_numpy(toy_logits(np.array([seq[-1]])))[0]
            if acct:
                row = hf_bias(scheme, SECRET.account_key(acct), seq, row)
            seq.append(int(row.argmax()))
        assert seq[len(prompts[r]) :] == outputs[r], r
    # the marks: a's and c's outputs carry acct-a, b's carries acct-b, u's none of them
    ka, kb = SECRET.account_key("acct-a"), SECRET.account_key("acct-b")
    assert scheme.score(outputs["a"], ka).p_value < 1e-6
    assert scheme.score(outputs["b"], kb).p_value < 1e-6
    assert scheme.score(outputs["b"], ka).p_value > 1e-3


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """A stand-in `vllm.v1.sample.logits_processor` with an abstract LogitsProcessor, as vLLM's."""

    class LogitsProcessor(abc.ABC):
        @classmethod
        def validate_params(cls, sampling_params: Any) -> None:
            return None

        @abc.abstractmethod
        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None: ...

        @abc.abstractmethod
        def apply(self, logits: Any) -> Any: ...

        @abc.abstractmethod
        def is_argmax_invariant(self) -> bool: ...

        @abc.abstractmethod
        def update_state(self, batch_update: Any) -> None: ...

    names = ["vllm", "vllm.v1", "vllm.v1.sample", "vllm.v1.sample.logits_processor"]
    for n in names:
        monkeypatch.setitem(sys.modules, n, types.ModuleType(n))
    sys.modules["vllm.v1.sample.logits_processor"].LogitsProcessor = LogitsProcessor  # type: ignore[attr-defined]
    monkeypatch.setattr(dgv, "_VLLM_CLASSES", {})
    yield LogitsProcessor


def test_fqcn_loads_a_subclass_of_vllms_class_with_the_secret_from_a_file(
    fake_vllm: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what vLLM's loader does with --logits-processors distillguard.forensics.vllm:WatermarkLogitsProcessor
    fqcn = "distillguard.forensics.vllm:WatermarkLogitsProcessor"
    module_path, qualname = fqcn.split(":")
    cls = getattr(importlib.import_module(module_path), qualname)
    assert isinstance(cls, type) and issubclass(cls, fake_vllm)
    secret_file = tmp_path / "wm.secret"
    secret_file.write_text(SECRET.to_hex())
    monkeypatch.setenv(dgv.SECRET_FILE_ENV, str(secret_file))
    monkeypatch.setenv(dgv.PARAMS_ENV, '{"kgw": {"delta": 3.0}}')
    proc = cls(None, "cpu", False)  # abstract methods all implemented: it instantiates
    proc.update_state(Update(1, added=[(0, marked("acct-f"), [1, 2], [])]))
    row = torch.randn(1, VOCAB)
    got = proc.apply(row.clone())
    assert torch.equal(got[0], hf_bias(KGW(delta=3.0), SECRET.account_key("acct-f"), [1, 2], row[0]))


def test_without_vllm_the_class_name_says_so_and_nothing_imports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # an import of vllm now fails
    monkeypatch.setattr(dgv, "_VLLM_CLASSES", {})
    with pytest.raises(ImportError, match="needs vLLM"):
        _ = dgv.WatermarkLogitsProcessor
    with pytest.raises(AttributeError):
        _ = dgv.NoSuchThing
    importlib.reload(dgv)  # importing the module itself never needs vLLM


def test_a_server_without_a_secret_fails_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dgv.SECRET_FILE_ENV, raising=False)
    monkeypatch.delenv("DISTILLGUARD_WATERMARK_SECRET", raising=False)
    with pytest.raises(ValueError, match="secret"):
        dgv.WatermarkBatchProcessor(None, "cpu", False)
