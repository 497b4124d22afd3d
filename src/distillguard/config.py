"""Typed configuration, loaded from one TOML file (`distillguard.toml` or `--config`).

Every section has defaults, so an empty file (or none) is a valid configuration.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distillguard.audit.config import AuditConfig
from distillguard.detect.evidence import LEVELS


class ScoringConfig(BaseModel):
    """The combiner: score = sigmoid(bias + sum of weight * strength), see docs/scoring.md."""

    model_config = ConfigDict(extra="forbid")
    bias: float = -6.0
    weights: dict[str, float] = Field(
        default_factory=lambda: {
            # recipe evidence ("hard"): generator fingerprints and sampling tricks
            # a recipe in a quarter of the traffic is "suspect" on its own (-6 + 6.5 = 0.5 log-odds)
            "fingerprint.self_instruct": 6.5,
            "fingerprint.evol_instruct": 6.5,
            "fingerprint.trace_coercion": 6.5,
            "fingerprint.orca_system": 5.0,
            "fingerprint.persona_synthesis": 6.5,
            "fingerprint.code_instruct": 6.5,
            "fingerprint.math_augment": 6.5,
            # a person may ask once for a dialogue between a user and an AI; a recipe asks all day
            "fingerprint.self_chat": 5.0,
            "fingerprint.rubric_judge": 1.0,
            "shape.multi_sample": 3.0,
            "shape.temperature_sweep": 2.0,
            # soft: evaluation teams also try a new model on release day (and compare it: mitigated)
            "release.fast_adoption": 3.0,
            # threat intel (issue 3): an indicator that may block on its own is hard evidence; every
            # match is also soft evidence, weighted by how much an address or an ASN says about one account
            "intel.indicator": 8.5,
            "intel.address": 2.0,
            "intel.identity": 3.0,
            "intel.skeleton": 2.5,
            "intel.asn": 0.75,
            "intel.user_agent": 0.5,
            # behavioural evidence ("soft"): explained away by benign behaviour
            "cot.elicitation": 2.0,
            "cot.reasoning_effort": 1.0,
            "open_loop.single_turn": 1.0,
            "coverage.capability_focus": 1.5,
            "coverage.breadth": 1.0,
            "shape.max_tokens": 2.0,
            "shape.logprobs": 1.0,
            "shape.tool_variety": 1.5,
            "timing.regular": 2.0,
            "timing.round_the_clock": 1.5,
            "network.rotation": 2.0,
            "volume.vs_peers": 1.0,
            "volume.vs_history": 1.0,
            "skeleton.reuse": 0.5,
            "campaign.coordination": 1.5,
            # mitigating evidence (negative)
            "open_loop.follow_ups": -3.0,
            "open_loop.grades_own_answers": -3.0,
            "skeleton.narrow_templates": -1.0,
            "shape.model_comparison": -2.0,
            "shape.deterministic_replay": -2.5,
            "timing.single_session": -1.5,
        }
    )
    hard: list[str] = Field(
        default_factory=lambda: [
            "fingerprint.self_instruct",
            "fingerprint.evol_instruct",
            "fingerprint.trace_coercion",
            "fingerprint.orca_system",
            "fingerprint.persona_synthesis",
            "fingerprint.code_instruct",
            "fingerprint.math_augment",
            "fingerprint.self_chat",
            "shape.multi_sample",
            "shape.temperature_sweep",
            "campaign.coordination",
            "intel.indicator",
        ],
        description="Findings that benign behaviour cannot explain away (mitigations never cancel them).",
    )
    calibration: Path | None = Field(
        None, description="Benign calibration JSON (`distillguard calibrate`); default: the packaged one."
    )
    levels: dict[str, float] = Field(
        default_factory=lambda: {"watch": 0.2, "suspect": 0.5, "block": 0.9},
        description="Lowest score of each level above `ok`.",
    )

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: dict[str, float]) -> dict[str, float]:
        want = list(LEVELS[1:])
        if sorted(v) != sorted(want):
            raise ValueError(f"levels must give exactly {want}")
        if not v["watch"] <= v["suspect"] <= v["block"]:
            raise ValueError("levels must satisfy watch <= suspect <= block")
        return v


class ScanConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str = "duckdb"
    skeleton_sample: int = Field(64, ge=8, description="Distinct prompt skeletons sketched per account.")
    skeleton_budget: int = Field(
        1_000_000,
        ge=1,
        description="Sampled skeletons per scan: past it (accounts x skeleton_sample) the per-account "
        "sample shrinks to fit, never below 16, so memory stays bounded on logs with many accounts.",
    )
    skeleton_threshold: float = Field(0.4, gt=0, le=1, description="Jaccard similarity that links skeletons.")
    campaign_max_key_accounts: int = Field(
        200, description="An IP or template shared by more accounts than this is too common to link them."
    )
    campaign_min_link_types: int = Field(
        2, description="Independent kinds of shared evidence that link two accounts."
    )
    campaign_inherit_floor: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Own score an account needs before its campaign's score is applied to it: membership "
        "amplifies evidence, it does not create it (a shared cloud NAT or public benchmark is not guilt).",
    )
    campaign_job_inherit_floor: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The same floor for a member that runs the campaign's job: linked to it by a shared "
        "prompt template, frame or recipe as well as infrastructure, or by the same client program on the "
        "campaign's topics with nothing mitigating in its own traffic; the campaign's score is its own "
        "evidence measured over the pooled exchanges.",
    )
    examples: int = Field(3, description="Example exchange ids kept per finding.")
    slice_min_exchanges: int = Field(
        20,
        ge=0,
        description="Exchanges an account's client slice (its requests with one request configuration) "
        "needs before it is scored on its own; 0 turns client slices off.",
    )
    slice_max_share: float = Field(
        0.9,
        gt=0,
        le=1,
        description="A slice with more of its account's exchanges than this is the account itself (not rescored).",
    )


class PublishConfig(BaseModel):
    """What `distillguard intel publish` shares of a campaign (see distillguard.intel.publish)."""

    model_config = ConfigDict(extra="forbid")
    min_level: str = Field("suspect", description="Campaigns at or above this level are published.")
    tlp: str = Field("amber", description="TLP 2.0 marking: clear, green, amber, amber+strict or red.")
    ip_purity: float = Field(
        0.8, ge=0, le=1, description="Share of an address's traffic that must be the campaign's."
    )
    asn_purity: float = Field(0.5, ge=0, le=1)
    ua_purity: float = Field(1.0, ge=0, le=1)
    fp_purity: float = Field(1.0, ge=0, le=1, description="Organisations, payment and device fingerprints.")
    template_purity: float = Field(0.8, ge=0, le=1)
    valid_days: int = Field(90, ge=1, description="Indicators expire this many days after publishing.")


class IntelConfig(BaseModel):
    """The threat-intel exchange: where indicators live, our identity, the consortium key."""

    model_config = ConfigDict(extra="forbid")
    db: str = Field("intel.db", description="Indicator store: an SQLite path or a PostgreSQL URL.")
    keyring: Path = Field(
        Path("consortium.keys"), description="Consortium keyring (`distillguard intel keygen`)."
    )
    org: str = Field("local", description="Our organisation's name, as other members see it.")
    skeleton_threshold: float = Field(
        0.5, gt=0, le=1, description="Estimated Jaccard similarity at which a template sketch matches."
    )
    block_confidence: float = Field(
        50, ge=0, le=100, description="Decayed confidence an indicator needs to block on its own."
    )
    publish: PublishConfig = Field(default_factory=PublishConfig)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scan: ScanConfig = Field(default_factory=ScanConfig)
    intel: IntelConfig = Field(default_factory=IntelConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)


class ConfigError(Exception):
    pass


# Tables of the same file that other commands own and validate with their own models: one TOML file
# can configure the scan, the gateway and the review console. Typos elsewhere are still refused.
OWNED_ELSEWHERE = ("gateway", "ui")


def load(path: Path | None = None) -> Config:
    """Load a TOML config; `None` looks for ./distillguard.toml and falls back to the defaults."""
    if path is None:
        path = Path("distillguard.toml")
        if not path.exists():
            return Config()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    for table in OWNED_ELSEWHERE:
        data.pop(table, None)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise ConfigError(f"{path}: {msgs}") from None
