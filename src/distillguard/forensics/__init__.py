"""Forensics: keyed per-account output watermarks and their detection (issue 5).

`scheme` holds the protocol every watermark scheme follows and the registry (`get_scheme`); `keys`
derives per-account keys from the provider secret; `kgw` and `gumbel` are the schemes; `markllm` is
the compatible detector for MarkLLM / lm-watermarking KGW; `attribution` tests many account keys.
Importing this package (and `scheme`, `detect`) never imports torch.
"""

from distillguard.forensics.keys import KeyRing, ProviderSecret, WatermarkKey
from distillguard.forensics.scheme import (
    ScoreResult,
    WatermarkScheme,
    get_scheme,
    register_scheme,
    scheme_names,
)

__all__ = [
    "KeyRing",
    "ProviderSecret",
    "ScoreResult",
    "WatermarkKey",
    "WatermarkScheme",
    "get_scheme",
    "register_scheme",
    "scheme_names",
]
