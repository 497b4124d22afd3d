"""`distillguard forensics test SUSPECT`: was SUSPECT trained on our watermarked outputs, and whose?

SUSPECT is an http(s) endpoint (closed setting: `remote.sequential_test` on its answers to our
prompts), or a local model (open setting: `reading.read_suspect` over our watermarked texts): a
transformers directory, a GGUF file, `smollm2`, or an n-gram student `.npz` (`student.NGramStudent`).
Controls run with every test: the same evidence against control keys (derived for accounts that never
received watermarked output, so no mark of theirs can be present), and, when given, the same texts read
through a control model known not to have seen our outputs. Both must not reject; the report says so.
"""

from __future__ import annotations

import gzip
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import typer

from distillguard import __version__
from distillguard.forensics.attribution import Correction, attribute
from distillguard.forensics.detect import Record
from distillguard.forensics.keys import KeyRing, ProviderSecret
from distillguard.forensics.reading import read_suspect
from distillguard.forensics.remote import ChatEndpoint, IdsCodec, SequentialResult, TextCodec, sequential_test
from distillguard.forensics.scheme import SchemeError, WatermarkScheme
from distillguard.forensics.student import NGramStudent, Predictor

CONTROL_PREFIX = "__control__/"


def suspect_kind(suspect: str) -> str:
    """'endpoint', 'ngram' or 'transformers' for a SUSPECT argument."""
    if suspect.startswith(("http://", "https://")):
        return "endpoint"
    if suspect.endswith(".npz"):
        return "ngram"
    if suspect == "smollm2" or suspect.endswith(".gguf") or Path(suspect).is_dir():
        return "transformers"
    raise SchemeError(
        f"suspect {suspect!r}: expected an http(s) endpoint, a model directory, a .gguf file, "
        "'smollm2' or an n-gram student .npz"
    )


def control_ring(secret: ProviderSecret, n: int, epochs: Sequence[int] = (0,)) -> KeyRing:
    """Keys of accounts that never received watermarked output: their marks cannot be present."""
    return KeyRing.derive(secret, [f"{CONTROL_PREFIX}{i}" for i in range(n)], epochs)


def read_prompts(path: Path) -> list[str]:
    """Prompts from JSONL (`prompt`, `text`, `question`, `instruction` or `turns[0]`), .gz allowed, or text lines."""
    if not path.is_file():
        raise SchemeError(f"prompts file not found: {path}")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    out: list[str] = []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if not line.lstrip().startswith("{"):
            out.append(line)
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise SchemeError(f"{path}: line {n}: not JSON: {exc}") from exc
        text = next(
            (row[k] for k in ("prompt", "text", "question", "instruction") if isinstance(row.get(k), str)),
            None,
        )
        if text is None and isinstance(row.get("turns"), list) and row["turns"]:
            text = row["turns"][0]
            if isinstance(text, dict):  # arena-hard: turns are {"content": ...}
                text = text.get("content")
        if not isinstance(text, str):
            raise SchemeError(
                f"{path}: line {n}: no prompt field (prompt, text, question, instruction, turns)"
            )
        out.append(text)
    if not out:
        raise SchemeError(f"{path}: no prompts")
    return out


@dataclass
class OpenOutcome:
    test: dict[str, Any]
    controls: list[dict[str, Any]]
    implicated: list[str]


def _row(name: str, setting: str, p: float, scored: int, keys: int, implicated: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "setting": setting,
        "p_value": p,
        "tokens_scored": scored,
        "keys_tested": keys,
        "implicated": implicated,
    }


def _prompts(records: list[Record]) -> list[np.ndarray] | None:
    """The records' prompt ids when every record has them (the suspect then reads prompt + text)."""
    out = [r.prompt_tokens for r in records if r.prompt_tokens is not None]
    return out if len(out) == len(records) else None


def run_open(
    predictor: Predictor,
    scheme: WatermarkScheme,
    records: list[Record],
    ring: KeyRing,
    controls: KeyRing,
    *,
    control_predictor: Predictor | None = None,
    alpha: float = 1e-3,
    correction: Correction = "holm",
) -> OpenOutcome:
    """Reading mode over watermarked records, then the controls.

    Controls: control keys on the suspect, and the same texts read through `control_predictor` (a
    model known not to have trained on our outputs). Unwatermarked texts read through the suspect are
    NOT a control: a radioactive suspect prefers green continuations in any context, so they can
    (rightly) reject too.
    """
    texts = [r.tokens for r in records]
    prompts = _prompts(records)
    main = read_suspect(
        predictor, scheme, texts, prompts=prompts, ring=ring, alpha=alpha, correction=correction
    )
    assert main.attribution is not None
    test = _row(
        "reading mode", "open", main.p_value, main.windows_scored, len(ring), main.attribution.implicated
    )
    test["details"] = main.to_dict()
    out_controls = []
    if len(controls):
        c = read_suspect(
            predictor, scheme, texts, prompts=prompts, ring=controls, alpha=alpha, correction=correction
        )
        assert c.attribution is not None
        row = _row(
            "control keys", "open", c.p_value, c.windows_scored, len(controls), c.attribution.implicated
        )
        row["passed"] = not c.attribution.implicated
        out_controls.append(row)
    if control_predictor is not None:
        # the same texts through a model known not to have learned from them: validates the filters
        c = read_suspect(
            control_predictor, scheme, texts, prompts=prompts, ring=ring, alpha=alpha, correction=correction
        )
        assert c.attribution is not None
        row = _row("control model", "open", c.p_value, c.windows_scored, len(ring), c.attribution.implicated)
        row["passed"] = not c.attribution.implicated
        out_controls.append(row)
    return OpenOutcome(test, out_controls, main.attribution.implicated)


def run_closed(
    endpoint: ChatEndpoint,
    prompts: list[str],
    codec: TextCodec,
    scheme: WatermarkScheme,
    ring: KeyRing,
    controls: KeyRing,
    *,
    alpha: float = 1e-3,
    budget: int = 100,
) -> tuple[OpenOutcome, SequentialResult]:
    """The sequential closed-setting test, then control keys scored on the same answers."""
    seq = sequential_test(endpoint.ask, prompts, codec, scheme, ring, alpha=alpha, budget=budget)
    test = _row(
        "sequential query test", "closed", seq.family_p_value, seq.tokens_scored, len(ring), seq.implicated
    )
    test["details"] = seq.to_dict()
    out_controls = []
    if len(controls) and seq.answers:
        a = attribute(scheme, seq.answers, controls, alpha=alpha, exclude=seq.excluded, dedup=True)
        row = _row(
            "control keys (fixed sample)", "closed", a.family_p_value, a.n_scored, len(controls), a.implicated
        )
        row["passed"] = not a.implicated
        out_controls.append(row)
    return OpenOutcome(test, out_controls, seq.implicated), seq


def load_predictor(suspect: str, *, batch_size: int = 8) -> tuple[Predictor, Any]:
    """The suspect as a reading-mode predictor, and its tokenizer (None for an n-gram student)."""
    kind = suspect_kind(suspect)
    if kind == "ngram":
        return NGramStudent.load(Path(suspect)), None
    try:
        from distillguard.forensics.hf import HFPredictor, load_causal_lm
    except ImportError as exc:
        raise SchemeError("a transformers suspect needs: pip install 'distillguard[forensics]'") from exc
    model, tok = load_causal_lm(suspect)
    return HFPredictor(model, batch_size=batch_size), tok


def codec_for(tokenizer_spec: str | None, fallback: Any = None) -> TextCodec:
    """`ids` (space-separated ids), a tokenizer spec for `tokenizers.load_tokenizer`, or the fallback."""
    from distillguard.forensics.remote import HFCodec

    if tokenizer_spec == "ids":
        return IdsCodec()
    if tokenizer_spec is not None:
        from distillguard.forensics.tokenizers import load_tokenizer

        return HFCodec(load_tokenizer(tokenizer_spec))
    if fallback is not None:
        return HFCodec(fallback)
    raise SchemeError("texts need a tokenizer: pass --tokenizer (ids, smollm2, a .gguf or a directory)")


def build_evidence(
    *,
    suspect: str,
    scheme: WatermarkScheme,
    outcome: OpenOutcome,
    alpha: float,
    keys_tested: int,
    inputs: dict[str, str],
    argv: list[str],
) -> dict[str, Any]:
    """The evidence document (see `evidence.py`): verdict, tests, controls, inputs, reproduce commands."""
    controls_ok = all(c.get("passed", True) for c in outcome.controls)
    p = float(outcome.test["p_value"])
    if outcome.implicated and controls_ok:
        summary = (
            f"{suspect} carries the watermark of {', '.join(outcome.implicated)} "
            f"(family-wise p = {p:.3g} <= α = {alpha:g}); all controls passed."
        )
    elif outcome.implicated:
        summary = f"the test rejected (p = {p:.3g}) but a control also rejected: do not rely on this result."
    else:
        summary = f"no account's watermark was found in {suspect} at α = {alpha:g} (p = {p:.3g})."
    return {
        "suspect": suspect,
        "scheme": repr(scheme),
        "alpha": alpha,
        "keys_tested": keys_tested,
        "verdict": {
            "summary": summary,
            "implicated": outcome.implicated,
            "controls_passed": controls_ok,
        },
        "tests": [outcome.test],
        "controls": outcome.controls,
        "inputs": inputs,
        "reproduce": [
            f"pip install 'distillguard[forensics]=={__version__}'",
            "distillguard " + " ".join(shlex.quote(a) for a in argv),
        ],
        "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def reproduce_argv(suspect: str, options: dict[str, Any]) -> list[str]:
    """`forensics test` arguments that rerun this test: every option given, in a stable order.

    Built from the parsed options rather than `sys.argv`, so the command is complete even when the
    test was started from Python or with defaults; the secret file is named, never its content.
    """
    args = ["forensics", "test", suspect]
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            args += [flag, str(v)]
    return args


def test_cmd(
    suspect: str = typer.Argument(
        ..., help="http(s) endpoint, model directory, .gguf, 'smollm2' or n-gram .npz."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for evidence.json and evidence.html."),
    texts: Path | None = typer.Option(
        None,
        "--texts",
        help="Open setting: texts to read through the suspect (JSONL: tokens or text, + prompt). "
        "In-domain text that does not carry the mark (e.g. the prompts) gives the stronger test; the "
        "watermarked answers themselves are valid but conservative (their own windows are excluded).",
    ),
    control_model: str | None = typer.Option(
        None, "--control-model", help="Open setting: a model known not to have seen our outputs (a control)."
    ),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="Closed setting: prompts to query the endpoint with."
    ),
    keys: Path = typer.Option(..., "--keys", help="Account ids to test, one a line."),
    secret: Path | None = typer.Option(
        None, "--secret", help="Provider secret file (default: env DISTILLGUARD_WATERMARK_SECRET)."
    ),
    epochs: str = typer.Option("0", "--epochs", help="Key epochs to test, comma-separated."),
    scheme_name: str = typer.Option("kgw", "--scheme", "-s", help="Watermark scheme (kgw, gumbel)."),
    param: list[str] = typer.Option([], "--param", "-p", help="Scheme parameter NAME=VALUE (repeatable)."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="ids, smollm2, a .gguf or a directory (default: the suspect's own)."
    ),
    alpha: float = typer.Option(1e-3, "--alpha", help="Family-wise significance level."),
    correction: str = typer.Option("holm", "--correction", help="holm or bonferroni (open setting)."),
    control_keys: int = typer.Option(20, "--control-keys", help="Control keys never used to watermark."),
    budget: int = typer.Option(100, "--budget", help="Closed setting: at most this many queries."),
    max_tokens: int = typer.Option(200, "--max-tokens", help="Closed setting: max_tokens per answer."),
    model: str = typer.Option(
        "default", "--model", help="Closed setting: the model name sent to the endpoint."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Open setting: texts per forward pass."),
) -> None:
    """Test SUSPECT for radioactivity: did it learn from our watermarked outputs, and from which account?"""
    from rich.console import Console

    from distillguard.forensics.cli import _params
    from distillguard.forensics.detect import read_records
    from distillguard.forensics.evidence import file_digest, write_evidence
    from distillguard.forensics.keys import WatermarkKeyError
    from distillguard.forensics.scheme import get_scheme
    from distillguard.report.errors import fail

    console = Console(stderr=True, soft_wrap=True)
    if correction not in ("holm", "bonferroni"):
        fail(f"--correction must be holm or bonferroni, got {correction!r}")
    if not 0.0 < alpha < 1.0:
        fail(f"--alpha must lie in (0, 1), got {alpha}")
    if not keys.is_file():
        fail(f"keys file not found: {keys}")
    try:
        eps = [int(e) for e in epochs.split(",") if e.strip()]
    except ValueError:
        fail(f"--epochs must be integers, comma-separated, got {epochs!r}")
    try:
        kind = suspect_kind(suspect)
        scheme = get_scheme(scheme_name, **_params(param))
        sec = ProviderSecret.load(secret)
        accounts = [a.strip() for a in keys.read_text(encoding="utf-8").splitlines() if a.strip()]
        if not accounts:
            fail(f"{keys}: no account ids")
        ring = KeyRing.derive(sec, accounts, eps)
        ctrl = control_ring(sec, control_keys, eps)
        inputs = {"keys": file_digest(keys)}
        if kind == "endpoint":
            if prompts is None:
                fail("an endpoint suspect is tested by querying it: pass --prompts FILE")
            inputs["prompts"] = file_digest(prompts)
            codec = codec_for(tokenizer)
            endpoint = ChatEndpoint(suspect, model=model, max_tokens=max_tokens)
            try:
                outcome, _ = run_closed(
                    endpoint, read_prompts(prompts), codec, scheme, ring, ctrl, alpha=alpha, budget=budget
                )
            finally:
                endpoint.close()
        else:
            if texts is None:
                fail("a local suspect is tested in reading mode: pass --texts FILE of watermarked records")
            predictor, own_tok = load_predictor(suspect, batch_size=batch_size)
            encode = None
            if tokenizer is not None or own_tok is not None:
                encode = codec_for(tokenizer, own_tok).encode
            records = read_records(texts, encode)
            inputs["texts"] = file_digest(texts)
            ctrl_pred = None
            if control_model is not None:
                ctrl_pred, _ = load_predictor(control_model, batch_size=batch_size)
            outcome = run_open(
                predictor,
                scheme,
                records,
                ring,
                ctrl,
                control_predictor=ctrl_pred,
                alpha=alpha,
                correction=correction,  # type: ignore[arg-type]
            )
    except (SchemeError, WatermarkKeyError) as exc:
        fail(str(exc))
    ev = build_evidence(
        suspect=suspect,
        scheme=scheme,
        outcome=outcome,
        alpha=alpha,
        keys_tested=len(ring),
        inputs=inputs,
        argv=reproduce_argv(
            suspect,
            {
                "texts": texts,
                "control_model": control_model,
                "prompts": prompts,
                "keys": keys,
                "secret": secret,
                "epochs": epochs,
                "scheme": scheme_name,
                "param": param,
                "tokenizer": tokenizer,
                "alpha": alpha,
                "correction": correction,
                "control_keys": control_keys,
                "budget": budget if kind == "endpoint" else None,
                "max_tokens": max_tokens if kind == "endpoint" else None,
                "model": model if kind == "endpoint" else None,
                "out": out,
            },
        ),
    )
    jpath, hpath = write_evidence(out, ev)
    console.print(ev["verdict"]["summary"])
    for c in outcome.controls:
        console.print(
            f"control {c['name']}: p = {c['p_value']:.3g} ({'passed' if c['passed'] else 'FAILED'})"
        )
    console.print(f"evidence: {jpath}, {hpath}")
    if outcome.implicated and not ev["verdict"]["controls_passed"]:
        raise typer.Exit(4)
