"""The `[audit]` table of the project config: price overrides, expected jurisdictions, risk thresholds."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ModelPrice(BaseModel):
    """US dollars per million tokens of one model (a name prefix: `gpt-4o` prices `gpt-4o-2024-08-06`)."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0, description="Uncached input tokens.")
    output: float = Field(ge=0, description="Output tokens (reasoning tokens are billed as output).")
    cached_input: float | None = Field(None, ge=0, description="Cache reads; default: the input price.")
    cache_write_5m: float | None = Field(None, ge=0, description="Anthropic 5-minute cache writes.")
    cache_write_1h: float | None = Field(None, ge=0, description="Anthropic 1-hour cache writes.")
    audio_input: float | None = Field(None, ge=0, description="Audio input tokens; default: the input price.")
    audio_output: float | None = Field(None, ge=0, description="Audio output; default: the output price.")
    reasoning: bool = Field(
        False, description="A reasoning model (hidden chain of thought billed as output)."
    )


class AuditConfig(BaseModel):
    """Defaults suit a company with no stated jurisdiction policy: only the checks that need none run."""

    model_config = ConfigDict(extra="forbid")
    prices: Path | None = Field(
        None, description="Price table (TOML, the layout of distillguard/data/prices.toml); default: shipped."
    )
    price_overrides: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Per-model prices that replace (or add to) the table's, e.g. a discount.",
    )
    batch_discount: float = Field(
        0.5, ge=0, le=1, description="Share of the list price charged for Batch API / batch-tier usage."
    )
    expected_countries: list[str] = Field(
        default_factory=list,
        description="ISO 3166-1 alpha-2 countries keys are expected to be used from; empty: no jurisdiction check.",
    )
    country_db: Path | None = Field(
        None, description="MaxMind-format country database for client IPs; default: the bundled test one."
    )
    jurisdiction_suspect_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of a key's requests from unexpected countries that makes it suspect.",
    )
    jump_ratio: float = Field(5.0, gt=1, description="Day volume / the key's trailing median that is a jump.")
    jump_suspect_ratio: float = Field(20.0, gt=1, description="A jump this large is suspect, not watch.")
    jump_z: float = Field(4.0, gt=0, description="Robust z-score (median / MAD) a jump also needs.")
    jump_window_days: int = Field(28, ge=3, description="Trailing days a key's history is taken over.")
    jump_min_history_days: int = Field(
        5, ge=2, description="Active days (any usage) in the window a key needs before its jumps count."
    )
    jump_min_tokens: int = Field(
        100_000, ge=0, description="Tokens a day needs before it can be a jump (tiny keys wobble)."
    )
    reasoning_share: float = Field(
        0.8, gt=0, le=1, description="Share of a key's output tokens on reasoning models that is heavy use."
    )
    reasoning_min_output_tokens: int = Field(
        1_000_000, ge=0, description="Output tokens on reasoning models a key needs before heavy use counts."
    )

    @field_validator("expected_countries")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        out = []
        for c in v:
            if len(c) != 2 or not c.isalpha():
                raise ValueError(f"{c!r} is not an ISO 3166-1 alpha-2 country code")
            out.append(c.upper())
        return out
