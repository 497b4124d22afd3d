"""Detection over a file of texts: load records, score each one and the pool, attribute to accounts.

Input is JSONL (one record a line) or a JSON document with a `records` list (as the MarkLLM fixture).
A record carries `tokens` (ids) or `text` (then a tokenizer is needed), and optionally `prompt_tokens`
or `prompt`, whose windows are excluded from scoring. Only ids, counts and p-values leave this module:
prompts and texts are customer data and are never logged or copied into the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from distillguard.forensics.attribution import Correction, attribute
from distillguard.forensics.keys import KeyRing, WatermarkKey
from distillguard.forensics.scheme import SchemeError, WatermarkScheme


@dataclass(frozen=True)
class Record:
    """One text to test: its id, token ids and (optionally) its prompt's token ids."""

    id: str
    tokens: np.ndarray
    prompt_tokens: np.ndarray | None = None


def read_records(path: Path, encode: Callable[[list[str]], list[list[int]]] | None = None) -> list[Record]:
    """Records from JSONL or a JSON `{"records": [...]}`; `encode` turns texts into ids when needed."""
    if not path.is_file():
        raise SchemeError(f"input file not found: {path}")
    raw = path.read_bytes()
    try:
        if raw.lstrip()[:1] == b"{" and b"\n{" not in raw.strip():
            doc = orjson.loads(raw)
            rows = doc["records"] if isinstance(doc, dict) and "records" in doc else [doc]
        else:
            rows = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    except (orjson.JSONDecodeError, KeyError) as exc:
        raise SchemeError(f"{path}: not JSONL nor a JSON document with `records`: {exc}") from exc
    need_text = [i for i, r in enumerate(rows) if "tokens" not in r]
    texts: dict[int, list[int]] = {}
    prompts: dict[int, list[int]] = {}
    if need_text or any("prompt" in r and "prompt_tokens" not in r for r in rows):
        if encode is None:
            first = need_text[0] if need_text else 0
            raise SchemeError(f"{path}: record {first + 1} has text, not `tokens`: pass a tokenizer")
        for i in need_text:
            if not isinstance(rows[i].get("text"), str):
                raise SchemeError(f"{path}: record {i + 1} has neither `tokens` nor a string `text`")
        texts = dict(zip(need_text, encode([rows[i]["text"] for i in need_text]), strict=True))
        with_prompt = [
            i for i, r in enumerate(rows) if isinstance(r.get("prompt"), str) and "prompt_tokens" not in r
        ]
        prompts = dict(zip(with_prompt, encode([rows[i]["prompt"] for i in with_prompt]), strict=True))
    out = []
    for i, r in enumerate(rows):
        toks = r["tokens"] if "tokens" in r else texts[i]
        ptoks = r.get("prompt_tokens", prompts.get(i))
        try:
            arr = np.asarray(toks, dtype=np.int64)
            parr = None if ptoks is None else np.asarray(ptoks, dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise SchemeError(f"{path}: record {i + 1}: token ids must be integers") from exc
        if arr.ndim != 1:
            raise SchemeError(f"{path}: record {i + 1}: `tokens` must be a flat list of ids")
        out.append(Record(str(r.get("id", i + 1)), arr, parr))
    return out


def _exclusion(scheme: WatermarkScheme, rec: Record) -> np.ndarray | None:
    windows = getattr(scheme, "windows", None)
    if rec.prompt_tokens is None or windows is None:
        return None
    fp: np.ndarray = windows(rec.prompt_tokens)
    return fp


def detect_records(
    records: list[Record],
    scheme: WatermarkScheme,
    *,
    ring: KeyRing | None = None,
    key: WatermarkKey | None = None,
    alpha: float = 1e-3,
    correction: Correction = "holm",
    dedup: bool = True,
    exclude_prompt: bool = True,
) -> dict[str, Any]:
    """Score each record and the pooled sample; with a ring, name implicated accounts (FWER-controlled).

    Without a ring, `key` (or the scheme's own key, e.g. MarkLLM's hash key) is tested alone.
    """
    if not records:
        raise SchemeError("no records to score")
    per: list[dict[str, Any]] = []
    excl = [(_exclusion(scheme, r) if exclude_prompt else None) for r in records]
    pooled_ex = [e for e in excl if e is not None and e.size]
    pool_exclude = np.concatenate(pooled_ex) if pooled_ex else None
    tokens = [r.tokens for r in records]
    result: dict[str, Any] = {
        "scheme": repr(scheme),
        "alpha": alpha,
        "records": len(records),
        "tokens": int(sum(t.size for t in tokens)),
        "dedup": dedup,
        "prompt_windows_excluded": exclude_prompt,
    }
    if ring is not None:
        for rec, ex in zip(records, excl, strict=True):  # one vectorised many-key pass per record
            a = attribute(
                scheme, rec.tokens, ring, alpha=alpha, correction=correction, exclude=ex, dedup=dedup
            )
            per.append(
                {
                    "id": rec.id,
                    "tokens_scored": a.n_scored,
                    "p_value": a.family_p_value,
                    "best_key": a.best,
                    "implicated": a.implicated,
                }
            )
        pooled = attribute(
            scheme, tokens, ring, alpha=alpha, correction=correction, exclude=pool_exclude, dedup=dedup
        )
        result["pooled"] = pooled.to_dict()
        result["keys_tested"] = len(ring)
        result["implicated"] = pooled.implicated
    else:
        for rec, ex in zip(records, excl, strict=True):
            r = scheme.score(rec.tokens, key, exclude=ex, dedup=dedup)  # type: ignore[arg-type]
            per.append(
                {
                    "id": rec.id,
                    "tokens_scored": r.n_scored,
                    "p_value": r.p_value,
                    "z": r.z,
                    "detected": r.p_value <= alpha,
                }
            )
        pooled_r = scheme.score(tokens, key, exclude=pool_exclude, dedup=dedup)  # type: ignore[arg-type]
        result["pooled"] = {"tokens_scored": pooled_r.n_scored, "p_value": pooled_r.p_value, "z": pooled_r.z}
        result["keys_tested"] = 1
    result["per_record"] = per
    result["detected_records"] = int(sum(p["p_value"] <= alpha for p in per))
    return result
