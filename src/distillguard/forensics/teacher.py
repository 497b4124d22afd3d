"""Teachers that answer prompts with one account's watermark: a tiny random-logits model and a HF model.

`RandomLogitsTeacher` is a bigram language model with fixed random logits: cheap enough to produce the
hundreds of thousands of watermarked tokens a radioactivity test needs in about a second, so the unit
tests run the real bias -> sample -> train student -> read -> score loop. `hf_generate` does the same
with a transformers model (SmolLM2 in the benchmark), batched, through `hf.WatermarkLogitsProcessor`;
`cached_generate` keeps the answers in a JSONL file, so an interrupted or repeated run resumes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from distillguard.forensics.keys import WatermarkKey
from distillguard.forensics.scheme import SchemeError, WatermarkScheme

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Answer:
    """One generated answer: the prompt's ids and the new ids (no prompt)."""

    prompt: IntArray
    tokens: IntArray


class RandomLogitsTeacher:
    """A bigram model: logits of the next token are a fixed random row chosen by the previous token."""

    def __init__(self, vocab: int = 1000, seed: int = 0, scale: float = 2.0) -> None:
        if not 2 <= vocab <= 8192:
            raise SchemeError(f"vocab must be 2..8192 for a dense bigram table, got {vocab}")
        self.vocab = vocab
        self.table = np.random.default_rng(seed).normal(size=(vocab, vocab)) * scale

    def generate(
        self,
        prompts: IntArray,
        length: int,
        *,
        scheme: WatermarkScheme | None = None,
        key: WatermarkKey | None = None,
        seed: int = 1,
    ) -> list[Answer]:
        """Sample `length` new tokens after each prompt row (batch, t); with a key, watermarked.

        Sampling is the Gumbel-max trick over the (biased) logits, one vectorised step per position.
        """
        if (scheme is None) != (key is None):
            raise SchemeError("pass both a scheme and a key to watermark, or neither")
        ids = np.asarray(prompts, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise SchemeError(f"prompts must be a (batch, t >= 1) array of ids, got shape {ids.shape}")
        rng = np.random.default_rng(seed)
        out = np.empty((ids.shape[0], ids.shape[1] + length), dtype=np.int64)
        out[:, : ids.shape[1]] = ids
        t0 = ids.shape[1]
        table = self.table
        if scheme is not None and key is not None and scheme.context_width == 1:
            # the bias then depends on the previous token only, as the logits do: bias the table once
            table = scheme.bias(np.arange(self.vocab)[:, None], self.table, key)
        for t in range(t0, t0 + length):  # one step per generated position, bounded by `length`
            logits = table[out[:, t - 1]]
            if scheme is not None and key is not None and scheme.context_width != 1:
                logits = scheme.bias(out[:, :t], logits, key)
            out[:, t] = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        return [Answer(row[:t0].copy(), row[t0:].copy()) for row in out]

    def random_prompts(self, n: int, length: int = 4, seed: int = 0) -> IntArray:
        return np.random.default_rng(seed).integers(0, self.vocab, size=(n, length), dtype=np.int64)


def hf_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    scheme: WatermarkScheme | None,
    key: WatermarkKey | None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = True,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[Answer]:
    """Answer chat prompts with a transformers model, batched (left padding), watermarked with `key`.

    Prompts go through the tokenizer's chat template; returned ids exclude the prompt and padding and
    stop at the first end-of-sequence token.
    """
    import torch
    from transformers import LogitsProcessorList

    from distillguard.forensics.hf import WatermarkLogitsProcessor

    if (scheme is None) != (key is None):
        raise SchemeError("pass both a scheme and a key to watermark, or neither")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    procs = LogitsProcessorList()
    if scheme is not None and key is not None:
        procs.append(WatermarkLogitsProcessor(scheme, key))
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    answers: list[Answer] = []
    for lo in range(0, len(prompts), batch_size):  # bounded: ceil(n / batch_size) batches
        chunk = list(prompts[lo : lo + batch_size])
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in chunk
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature if do_sample else None,
                top_k=0 if do_sample else None,
                top_p=1.0 if do_sample else None,
                logits_processor=procs,
                pad_token_id=tokenizer.pad_token_id,
            )
        width = enc["input_ids"].shape[1]
        for row, mask, full in zip(enc["input_ids"], enc["attention_mask"], gen, strict=True):
            new = full[width:].numpy().astype(np.int64)
            stop = np.flatnonzero(new == eos)
            new = new[: stop[0]] if stop.size else new
            answers.append(Answer(row[mask.bool()].numpy().astype(np.int64), new))
    return answers


def cached_generate(
    generate: Any,
    prompts: Sequence[str],
    cache: Path,
    *,
    batch_size: int = 16,
    order: Sequence[int] | None = None,
    limit: int | None = None,
    deadline: float | None = None,
    log: Any = None,
) -> dict[int, Answer]:
    """Answers to `prompts`, read from the JSONL `cache` and completed batch by batch, appending.

    `generate(prompts) -> list[Answer]` answers one batch (e.g. `hf_generate` with its settings fixed).
    Each answered prompt is one line `{"i", "prompt", "tokens"}` (its index in `prompts`, ids); an
    interrupted run resumes where it stopped, and a rerun with the same prompts generates nothing.
    `order` is the order to answer in (e.g. by prompt length, so a batch pads little); generation
    stops once `limit` prompts are answered, or after the batch that passes `deadline` (a
    `time.monotonic()` value). Returns {index in prompts: answer} for every answered
    prompt. The cache must belong to the same prompt list and settings (the caller names the file so).
    """
    import orjson

    done: dict[int, Answer] = {}
    if cache.is_file():
        for line in cache.read_bytes().splitlines():  # bounded by the file
            if line.strip():
                row = orjson.loads(line)
                done[int(row["i"])] = Answer(
                    np.asarray(row["prompt"], dtype=np.int64), np.asarray(row["tokens"], dtype=np.int64)
                )
    todo = [i for i in (order if order is not None else range(len(prompts))) if i not in done]
    if limit is not None:
        todo = todo[: max(0, limit - len(done))]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("ab") as fh:
        for lo in range(0, len(todo), batch_size):  # bounded: ceil(len(todo) / batch_size) batches
            idx = todo[lo : lo + batch_size]
            answers = generate([prompts[i] for i in idx])
            for i, a in zip(idx, answers, strict=True):
                done[i] = a
                row = {"i": i, "prompt": a.prompt.tolist(), "tokens": a.tokens.tolist()}
                fh.write(orjson.dumps(row) + b"\n")
            fh.flush()  # a killed run keeps every finished batch
            if log is not None:
                log(len(done), len(prompts))
            if deadline is not None and time.monotonic() > deadline:
                break
    return done
