"""Gateway configuration (`gateway.toml`, or a `[gateway]` table of any TOML file), typed with pydantic.

Every section has defaults, so an empty file is a valid configuration: a gateway on 127.0.0.1:8080 in
front of an upstream on 127.0.0.1:8000, three KYC tiers, keys in `gateway.db`, audit in `audit.jsonl`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distillguard.gateway.limits.config import LimitsConfig

QuotaKind = Literal["key", "account", "org", "ip", "link"]
AuditSync = Literal["per_request", "background", "off"]


class GatewayConfigError(Exception):
    """A gateway config that cannot be read or does not validate (the message names the field)."""


class UpstreamConfig(BaseModel):
    """The one OpenAI-compatible API the gateway forwards to."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field("http://127.0.0.1:8000/v1", description="Base URL, as an OpenAI SDK's base_url.")
    api_key: str | None = Field(None, description="Key sent upstream (prefer api_key_env).")
    api_key_env: str | None = Field(None, description="Environment variable holding the upstream key.")
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(300.0, gt=0, description="Longest silence between two upstream chunks.")
    write_timeout: float = Field(30.0, gt=0)
    pool_timeout: float = Field(5.0, gt=0, description="Longest wait for a free pooled connection.")
    max_connections: int = Field(1000, ge=1)
    max_keepalive: int = Field(200, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("upstream url must start with http:// or https://")
        return v.rstrip("/")

    def secret(self) -> str | None:
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or self.api_key
        return self.api_key


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(8 << 20, ge=1024, description="Larger request bodies get a 413.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs whose X-Forwarded-For is believed (the client is the rightmost untrusted hop).",
    )
    access_log: bool = Field(True, description="One JSON log line per request (no prompt text, no keys).")
    log_level: str = "info"
    # abuse limits (protocols.py, app.py): slowloris heads and bodies, oversized heads
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A request head not complete this long after it began gets a 408."
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, le=1 << 20, description="A larger request head gets a 431 (httptools parser)."
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="A request body not complete this long after its head gets a 408."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            ipaddress.ip_network(c, strict=False)  # raises ValueError naming the bad entry
        return v


class IdentityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    db: str = Field("gateway.db", description="SQLite path or SQLAlchemy URL (may be the intel database).")
    revocation_poll_s: float = Field(
        0.25, gt=0, le=0.5, description="How often each replica reads the key-change revision."
    )
    stale_after_s: float = Field(
        1.0, gt=0, description="Cache bypassed (each request reads the database) after this long unpolled."
    )

    @field_validator("stale_after_s")
    @classmethod
    def _stale(cls, v: float) -> float:
        if v > 1.0:
            raise ValueError("stale_after_s above 1 s would break 'revoked everywhere within 1 s'")
        return v


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    path: Path = Field(Path("audit.jsonl"), description="Native exchange log (`distillguard scan` reads it).")
    sync: AuditSync = Field(
        "background",
        description="When final records reach the disk (every mode writes a record before its answer, so "
        "kill -9 exactly-once holds in all three). `per_request`: each answer waits for the group commit's "
        "fdatasync (no answered exchange lost on power loss; adds one flush, 0.1-10 ms by disk, to every "
        "JSON answer and stream end). `background`: answers do not wait; a background fdatasync follows "
        "within `sync_interval_ms` (a power loss can lose the records of that last interval). `off`: "
        "flushed only at WAL rotation and shutdown (kill -9 safe only).",
    )
    sync_interval_ms: float = Field(
        10.0,
        gt=0,
        le=10_000,
        description="`background`: most milliseconds a written record waits for its fsync.",
    )
    fsync: bool | None = Field(
        None,
        description="Deprecated alias of `sync`: true = `per_request`, false = `off` (not both with `sync`).",
    )
    batch_max: int = Field(1024, ge=1, description="Most records written by one write() and one fsync.")
    durable_first_byte: bool = Field(
        False,
        description="A stream's first byte waits for its intent's fsync (power-loss safe from the first "
        "byte; adds one fsync to time-to-first-byte). Off: the final record is still durable before the "
        "last byte, and kill -9 exactly-once is unchanged.",
    )
    hash_chain: bool = Field(False, description="Each line carries the SHA-256 of the line before it.")
    wal_rotate_bytes: int = Field(4 << 20, ge=4096, description="Write-ahead log size that starts a new one.")

    @model_validator(mode="before")
    @classmethod
    def _fsync_alias(cls, data: object) -> object:
        # `fsync = true/false` (before `sync` existed) still means what it meant; with `sync` it is ambiguous
        if isinstance(data, dict) and data.get("fsync") is not None:
            legacy = "per_request" if data["fsync"] else "off"
            if "sync" in data and data["sync"] != legacy:
                raise ValueError(
                    f"audit.fsync = {str(data['fsync']).lower()} (= sync {legacy!r}) contradicts "
                    f"audit.sync = {data['sync']!r}: set only `sync`"
                )
            data = {**data, "sync": legacy}
        return data


def _country_codes(v: list[str]) -> list[str]:
    out = []
    for c in v:
        if len(c) != 2 or not c.isalpha():
            raise ValueError(f"{c!r} is not an ISO 3166-1 alpha-2 country code")
        out.append(c.upper())
    return out


class GeoConfig(BaseModel):
    """IP -> country and ASN (MaxMind DB files: GeoLite2, DB-IP Lite, or the bundled test ones).

    The client address is the one `server.trusted_proxies` yields: X-Forwarded-For is believed only
    from those proxies. See docs/gateway.md.
    """

    model_config = ConfigDict(extra="forbid")
    country_db: Path | None = Field(None, description="Country or City database (.mmdb).")
    asn_db: Path | None = Field(None, description="ASN database (.mmdb); a separate file in both sources.")
    denied_countries: list[str] = Field(
        default_factory=list, description="Countries refused on every tier (ISO alpha-2)."
    )
    allow_unknown_country: bool = Field(
        False, description="Admit an address with no country to a tier that lists jurisdictions."
    )
    hosting_asns: list[int] = Field(default_factory=list, description="Flagged `geo.hosting` in the audit.")
    vpn_asns: list[int] = Field(default_factory=list, description="Flagged `geo.vpn` in the audit.")
    refuse_hosting: bool = Field(False, description="Refuse hosting ASNs (403 `jurisdiction`).")
    refuse_vpn: bool = Field(False, description="Refuse VPN ASNs (403 `jurisdiction`).")
    cache_size: int = Field(65536, ge=0, description="Addresses whose lookup is kept in memory.")

    @field_validator("denied_countries")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        return _country_codes(v)


IntelAction = Literal["block", "throttle", "log"]


class IntelGateConfig(BaseModel):
    """Intel-store blocklists at request time (addresses, ranges, ASNs, user agents, account/org digests)."""

    model_config = ConfigDict(extra="forbid")
    db: str = Field(description="Intel store: SQLite path or SQLAlchemy URL.")
    keyring: Path | None = Field(None, description="Consortium keyring (needed for account/org digests).")
    refresh_s: float = Field(30.0, gt=0, description="How often the in-memory lists are reloaded.")
    action: IntelAction = Field(
        "block", description="On a blocking match: 403 (block), 429 + Retry-After (throttle), or record only."
    )
    throttle_retry_after_s: int = Field(60, ge=1, description="Retry-After of a throttled request.")


ADMIN_TOKEN_ENV = "DISTILLGUARD_GATEWAY_ADMIN_TOKEN"


class AdminConfig(BaseModel):
    """The admin HTTP API (`/admin/v1/`, admin.py): off unless a token hash or the token's env var is set."""

    model_config = ConfigDict(extra="forbid")
    token_sha256: str | None = Field(
        None, description="SHA-256 (hex) of the admin bearer token; the token itself is never stored."
    )
    token_env: str = Field(
        ADMIN_TOKEN_ENV, description="Environment variable holding the admin token (used when set)."
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Larger admin request bodies get a 413.")

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdefABCDEF" for c in v)):
            raise ValueError("token_sha256 must be 64 hex digits (sha256sum of the token)")
        return v.lower() if v else v

    def token_hash(self) -> str | None:
        """The hash requests are compared with (config first, then the env var's token); None: API off."""
        if self.token_sha256:
            return self.token_sha256
        tok = os.environ.get(self.token_env)
        if not tok:
            return None
        if len(tok) < 16:
            # a short admin token is guessable over the network: refuse to start rather than serve it
            raise GatewayConfigError(f"${self.token_env} is shorter than 16 characters")
        return hashlib.sha256(tok.encode()).hexdigest()


RiskLevel = Literal["ok", "watch", "suspect", "block"]
RiskAction = Literal[
    "allow",
    "throttle",
    "strip_reasoning",
    "cap_max_tokens",
    "disable_logprobs",
    "disable_n",
    "require_verification",
    "block",
]


def _default_risk_actions() -> dict[RiskLevel, list[RiskAction]]:
    return {
        "ok": [],
        "watch": [],
        "suspect": ["cap_max_tokens", "disable_logprobs", "disable_n", "strip_reasoning"],
        "block": ["block"],
    }


class RiskConfig(BaseModel):
    """Online risk (risk.py): the streaming detector's level per account drives graded actions."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    shadow: bool = Field(False, description="Record what would be done (`risk.shadow`), change nothing.")
    actions: dict[RiskLevel, list[RiskAction]] = Field(default_factory=_default_risk_actions)
    rescore_every: int = Field(10, ge=1, description="Re-score an account after this many new exchanges...")
    rescore_s: float = Field(5.0, gt=0, description="...or this many seconds after its last new exchange.")
    rescore_min_s: float = Field(
        1.0,
        ge=0,
        description="Fewest seconds between two re-scores of one account (a busy account would otherwise "
        "be re-scored every `rescore_every` exchanges: one DuckDB pass each, the gateway's largest CPU cost).",
    )
    max_tokens_cap: int = Field(1024, ge=1, description="Ceiling that `cap_max_tokens` clamps to.")
    throttle_retry_after_s: int = Field(60, ge=1, description="Retry-After of a `throttle` (429).")
    window: int = Field(2000, ge=10, description="Recent exchanges kept per account for scoring.")
    queue_max: int = Field(100_000, ge=1, description="Exchanges waiting to be learnt (more are dropped).")
    worker: Literal["process", "thread"] = Field(
        "process",
        description="Learn and score in a child process (scoring never holds the gateway's GIL, so "
        "requests do not wait on it) or in a thread of the gateway process (no extra process).",
    )
    top_reasons: int = Field(3, ge=1, description="Evidence signals named in `risk.reasons`.")
    # where the per-account state lives (risk_state.py): this process, or Redis shared by all replicas
    state: Literal["memory", "redis"] = Field(
        "memory", description="Per-account windows and verdicts in-process, or in Redis (shared by replicas)."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description='Redis for `state = "redis"`.')
    key_prefix: str = Field("dg:risk:", description="Prefix of every Redis key the risk state writes.")
    sync_s: float = Field(0.5, gt=0, description="How often a replica pulls verdicts changed elsewhere.")
    state_ttl_s: int = Field(
        7 * 86400, ge=60, description="An account's Redis window expires after this long without traffic."
    )
    redis_timeout_s: float = Field(2.0, gt=0, description="Socket timeout of the risk state's Redis calls.")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return v


class OtelExportConfig(BaseModel):
    """Audited exchanges as OpenTelemetry GenAI spans (otel_export.py): an OTLP JSON file, a collector, or both."""

    model_config = ConfigDict(extra="forbid")
    path: Path | None = Field(
        None, description="OTLP JSON lines file (one ExportTraceServiceRequest per line; `scan` reads it)."
    )
    endpoint: str | None = Field(
        None, description="OTLP/HTTP JSON traces URL of a collector, e.g. http://127.0.0.1:4318/v1/traces."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers for the endpoint.")
    include_content: bool = Field(
        False, description="Export prompts and completions (customer data): off, only ids, usage and policy."
    )
    service_name: str = Field("distillguard-gateway", description="Resource `service.name` of the spans.")
    batch_max: int = Field(512, ge=1, description="Most spans in one ExportTraceServiceRequest.")
    flush_s: float = Field(1.0, gt=0, description="Longest wait before a partial batch is exported.")
    queue_max: int = Field(100_000, ge=1, description="Exchanges waiting for export (more are dropped).")
    timeout_s: float = Field(5.0, gt=0, description="Time-out of one POST to the endpoint.")
    retries: int = Field(
        5, ge=0, description="Retries of a POST that failed retryably (429, 502, 503, 504, no answer)."
    )
    retry_initial_s: float = Field(
        0.5, gt=0, description="First back-off (doubling, with full jitter) unless Retry-After says."
    )
    retry_max_s: float = Field(30.0, ge=0, description="Longest time spent retrying one batch.")

    @field_validator("endpoint")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("endpoint must start with http:// or https://")
        return v

    @model_validator(mode="after")
    def _somewhere(self) -> OtelExportConfig:
        if self.path is None and self.endpoint is None:
            raise ValueError("[otel] needs a path, an endpoint, or both")
        return self


class LinksConfig(BaseModel):
    """Linked identities (links.py): accounts a scan or the intel store puts in one campaign share a budget."""

    model_config = ConfigDict(extra="forbid")
    campaigns: list[Path] = Field(
        default_factory=list, description="`campaigns.json` files of `distillguard scan` outputs."
    )
    min_verdict: Literal["ok", "watch", "suspect", "block"] = Field(
        "suspect", description="Scan campaigns below this verdict do not link their accounts."
    )
    intel_db: str | None = Field(
        None, description="Intel store whose account indicators with a campaign link accounts."
    )
    keyring: Path | None = Field(None, description="Consortium keyring (needed to match account digests).")
    refresh_s: float = Field(60.0, gt=0, description="How often the link table is rebuilt.")
    quota: Quota = Field(
        default_factory=lambda: Quota(rpm=60, tpm=100_000, tpd=2_000_000),
        description="A campaign's shared budget, unless the account's tier sets `quotas.link`.",
    )


WatermarkMode = Literal["off", "upstream", "lexical"]


class WatermarkConfig(BaseModel):
    """Per-account output watermarks (watermark.py, docs/watermarking.md): `[gateway.watermark]`.

    `upstream`: a self-hosted upstream (vLLM with distillguard's logits processor) marks the output; the
    gateway sends the account id and key epoch (`vllm_xargs`), never key material. `lexical`: the
    gateway itself applies the keyed synonym watermark to the response text (black-box upstreams).
    """

    model_config = ConfigDict(extra="forbid")
    mode: WatermarkMode = Field("off", description="off, upstream (vllm_xargs) or lexical (response text).")
    secret_file: Path | None = Field(
        None, description="Provider secret (hex) for lexical mode; default $DISTILLGUARD_WATERMARK_SECRET."
    )
    scheme: str = Field(
        "kgw", description="upstream: the scheme the model server applies (it holds the params)."
    )
    epoch: int = Field(0, ge=0, description="Key epoch when there is no rotation period.")
    rotation_days: float | None = Field(
        None, gt=0, description="Rotate keys every this many days: epoch = days since rotation_start / this."
    )
    rotation_start: datetime = Field(datetime(1970, 1, 1, tzinfo=UTC), description="Start of epoch 0.")
    xargs_key: str = Field("dg_watermark", description="upstream: key in the body's `vllm_xargs`.")
    header: str | None = Field(
        None, description="upstream: also send the argument as this request header (e.g. x-dg-watermark)."
    )
    routes: list[str] = Field(
        default_factory=lambda: ["/v1/chat/completions", "/v1/completions", "/v1/responses"],
        description="Routes whose responses are marked (vLLM reads vllm_xargs on all three).",
    )

    @field_validator("header")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(not (c.isalnum() or c in "-_") for c in v)):
            raise ValueError("header must be a plain header name (letters, digits, '-', '_')")
        return v.lower() if v else v

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: list[str]) -> list[str]:
        ok = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
        bad = [r for r in v if r not in ok]
        if bad:
            raise ValueError(f"routes {bad} cannot be watermarked; choose from {list(ok)}")
        return v


class Quota(BaseModel):
    """Budgets handed to the rate limiter as data (None: unlimited)."""

    model_config = ConfigDict(extra="forbid")
    rpm: int | None = Field(None, ge=0, description="Requests per minute.")
    tpm: int | None = Field(None, ge=0, description="Tokens per minute.")
    tpd: int | None = Field(None, ge=0, description="Tokens per day.")


class TierConfig(BaseModel):
    """One KYC tier: what its accounts may call and how much."""

    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=lambda: ["*"], description="Allowed models (shell globs).")
    reasoning: bool = Field(False, description="May ask for reasoning (reasoning_effort, reasoning).")
    logprobs: bool = Field(False, description="May ask for logprobs / top_logprobs.")
    max_n: int = Field(1, ge=1, description="Largest n (1: n>1 refused).")
    max_tokens: int | None = Field(None, ge=1, description="Largest max_tokens a request may ask for.")
    quotas: dict[QuotaKind, Quota] = Field(default_factory=dict)
    jurisdictions: list[str] = Field(
        default_factory=list,
        description="Allowed ISO country codes (empty: all); enforced when [geo] is configured.",
    )

    @field_validator("jurisdictions")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        return _country_codes(v)

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pat) for pat in self.models)


def _default_tiers() -> dict[str, TierConfig]:
    return {
        "unverified": TierConfig(
            models=["*mini*", "*nano*", "text-embedding-*"],
            max_tokens=4096,
            quotas={"account": Quota(rpm=60, tpm=40_000, tpd=1_000_000), "ip": Quota(rpm=120)},
        ),
        "verified": TierConfig(
            reasoning=True,
            logprobs=True,
            max_n=4,
            max_tokens=32_768,
            quotas={"account": Quota(rpm=500, tpm=400_000, tpd=20_000_000)},
        ),
        "enterprise": TierConfig(
            reasoning=True,
            logprobs=True,
            max_n=16,
            quotas={"org": Quota(rpm=10_000, tpm=10_000_000)},
        ),
    }


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    geo: GeoConfig | None = Field(None, description="Jurisdiction policy; off when absent.")
    intel: IntelGateConfig | None = Field(None, description="Intel blocklists; off when absent.")
    risk: RiskConfig | None = Field(None, description="Online risk actions; off when absent.")
    otel: OtelExportConfig | None = Field(
        None, description="OpenTelemetry GenAI span export; off when absent."
    )
    links: LinksConfig | None = Field(None, description="Linked-identity budgets; off when absent.")
    watermark: WatermarkConfig = Field(
        default_factory=WatermarkConfig, description="Per-account output watermarks; off by default."
    )
    admin: AdminConfig = Field(
        default_factory=AdminConfig, description="Admin HTTP API; off unless a token is configured."
    )
    tiers: dict[str, TierConfig] = Field(default_factory=_default_tiers)
    default_tier: str = Field("unverified", description="Tier of an account created without one.")
    default_max_tokens: int = Field(
        4096, ge=1, description="Completion tokens reserved when a request names no max_tokens and no cap."
    )

    @field_validator("tiers")
    @classmethod
    def _some_tier(cls, v: dict[str, TierConfig]) -> dict[str, TierConfig]:
        if not v:
            raise ValueError("at least one tier is needed")
        return v

    @model_validator(mode="after")
    def _known_default(self) -> GatewayConfig:
        if self.default_tier not in self.tiers:
            raise ValueError(
                f"default_tier {self.default_tier!r} is not one of the tiers {sorted(self.tiers)}"
            )
        return self


def load_gateway_config(path: Path | None) -> GatewayConfig:
    """Read `path` (a `[gateway]` table is used when the file has one); None gives the defaults."""
    if path is None:
        return GatewayConfig()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GatewayConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise GatewayConfigError(f"{path}: invalid TOML: {e}") from None
    section = data.get("gateway", data)
    try:
        return GatewayConfig.model_validate(section)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(map(str, x['loc'])) or '(root)'}: {x['msg']}" for x in e.errors())
        raise GatewayConfigError(f"{path}: {msgs}") from None
