"""The spend estimate: a dated list-price table (distillguard/data/prices.toml), overridable in config."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from distillguard.audit.config import AuditConfig, ModelPrice


class PriceError(ValueError):
    """A price table that cannot be read; the message names the file and the model at fault."""


@dataclass(frozen=True)
class PriceTable:
    models: dict[str, ModelPrice]
    as_of: str
    source: str

    def find(self, model: str | None) -> tuple[str, ModelPrice] | None:
        """The entry for `model`: the longest table name that is the model name or a prefix of it ending
        at a `-`, `.`, `:` or `@` (so `o1` prices `o1-2024-12-17` but not `o10`)."""
        if not model:
            return None
        m = model.lower()
        for name in sorted(self.models, key=len, reverse=True):
            n = name.lower()
            if m == n or (m.startswith(n) and m[len(n)] in "-.:@"):
                return name, self.models[name]
        return None


def default_path() -> Path:
    return Path(str(resources.files("distillguard") / "data" / "prices.toml"))


def load(cfg: AuditConfig) -> PriceTable:
    """The table of `cfg.prices` (default: the shipped one) with `cfg.price_overrides` applied."""
    path = cfg.prices or default_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PriceError(f"price table {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise PriceError(f"{path}: invalid TOML: {e}") from None
    raw = data.get("models")
    if not isinstance(raw, dict):
        raise PriceError(f"{path}: no [models.NAME] tables")
    models: dict[str, ModelPrice] = {}
    for name, entry in raw.items():
        try:
            models[name] = ModelPrice.model_validate(entry)
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise PriceError(f"{path}: models.{name}: {msgs}") from None
    models.update(cfg.price_overrides)
    meta = data.get("meta", {})
    as_of = str(meta.get("as_of", "undated"))
    src = str(path) + (" + config overrides" if cfg.price_overrides else "")
    return PriceTable(models, as_of, src)


def row_costs(t: pa.Table, prices: PriceTable, batch_discount: float) -> tuple[np.ndarray, np.ndarray]:
    """(estimated USD per usage row, NaN where the model is not in the table; reasoning-model mask)."""
    models = t.column("model").to_pylist()
    n = len(models)
    # Prices per distinct model, then broadcast to rows: a few dozen models over many rows.
    distinct = sorted({m for m in models if m is not None})
    idx = {m: i for i, m in enumerate(distinct)}
    fields = (
        "input",
        "cached_input",
        "cache_write_5m",
        "cache_write_1h",
        "audio_input",
        "output",
        "audio_output",
    )
    table = np.full((len(distinct) + 1, len(fields)), np.nan)  # last row: model unknown
    reasoning = np.zeros(len(distinct) + 1, dtype=bool)
    for m, i in idx.items():
        hit = prices.find(m)
        if hit is None:
            continue
        p = hit[1]
        table[i] = [
            p.input,
            p.input if p.cached_input is None else p.cached_input,
            p.input if p.cache_write_5m is None else p.cache_write_5m,
            p.input if p.cache_write_1h is None else p.cache_write_1h,
            p.input if p.audio_input is None else p.audio_input,
            p.output,
            p.output if p.audio_output is None else p.audio_output,
        ]
        reasoning[i] = p.reasoning
    at = np.array(
        [idx.get(m, len(distinct)) if m is not None else len(distinct) for m in models], dtype=np.int64
    )
    pr = table[at] if n else np.zeros((0, len(fields)))

    def col(name: str) -> np.ndarray:
        return np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    inp, cached, w5, w1 = (
        col("input_tokens"),
        col("cached_input_tokens"),
        col("cache_write_5m_tokens"),
        col("cache_write_1h_tokens"),
    )
    a_in, out, a_out = col("input_audio_tokens"), col("output_tokens"), col("output_audio_tokens")
    # input_tokens includes cached, cache-write and audio tokens; output_tokens includes audio output
    text_in = np.maximum(inp - cached - w5 - w1 - a_in, 0)
    text_out = np.maximum(out - a_out, 0)
    usd = (
        text_in * pr[:, 0]
        + cached * pr[:, 1]
        + w5 * pr[:, 2]
        + w1 * pr[:, 3]
        + a_in * pr[:, 4]
        + text_out * pr[:, 5]
        + a_out * pr[:, 6]
    ) / 1e6
    batch = np.asarray(t.column("batch").fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    usd = np.where(batch, usd * batch_discount, usd)
    return usd, reasoning[at] if n else np.zeros(0, dtype=bool)
