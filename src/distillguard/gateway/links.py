"""Linked identities: accounts that one campaign links share one rate-limit budget (a `link` descriptor).

A hydra of many quiet accounts stays under every per-account limit; once the detector or the intel
store links them into a campaign, each of their requests also draws on the campaign's budget, so the
operation as a whole is held to one account's worth (or whatever `quotas.link` / `[links] quota` says).

Two sources, rebuilt together every `refresh_s` seconds (in a thread; a rebuild that fails keeps the
previous table):

- `campaigns.json` of `distillguard scan` outputs: every campaign at or above `min_verdict` links its
  `accounts` (plain account ids: the scan ran on this provider's own logs). The budget id is
  `scan:<file digest>:<campaign_id>`, so two scans' `c0001` do not share a budget by accident.
- the intel store: active account indicators (effective confidence above 0) that name a `campaign_id`.
  Their values are keyed digests; the request's account id is digested under each epoch present (with
  the keyring, cached per account) and looked up. The budget id is the indicator's campaign id.

An account in several campaigns draws on each of their budgets. The request path is one dict lookup
(plus, with intel links, one cached HMAC per epoch the first time an account is seen).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from distillguard.gateway.background import Reloader
from distillguard.gateway.config import LinksConfig, Quota
from distillguard.gateway.hooks import Descriptor
from distillguard.intel.indicator import IndicatorType
from distillguard.intel.privacy import Keyring
from distillguard.intel.store import IntelStore

log = logging.getLogger("distillguard.gateway.links")

LEVELS = ("ok", "watch", "suspect", "block")
_ACCOUNT = IndicatorType.ACCOUNT.value
_DIGEST_CACHE_MAX = 100_000


class LinkError(ValueError):
    """A campaigns file that cannot be used; the message names the file and the entry."""


@dataclass
class LinkTable:
    """One snapshot: account id -> budget ids, and (epoch, account digest) -> budget ids."""

    accounts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    digests: dict[tuple[int, str], tuple[str, ...]] = field(default_factory=dict)
    epochs: tuple[int, ...] = ()
    loaded_at: datetime | None = None
    campaigns: int = 0


def read_campaigns(path: Path, min_verdict: str = "suspect") -> dict[str, list[str]]:
    """Budget id -> account ids of the campaigns in one scan's `campaigns.json` at or above `min_verdict`."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LinkError(f"{path}: cannot read campaigns ({e.strerror})") from None
    try:
        camps = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise LinkError(f"{path}: not JSON ({e})") from None
    if not isinstance(camps, list):
        raise LinkError(f"{path}: expected a list of campaigns, got {type(camps).__name__}")
    floor = LEVELS.index(min_verdict)
    # the file's path and content both go into the id: a new scan is a new set of budgets
    tag = hashlib.sha256(str(path.resolve()).encode() + b"\0" + raw).hexdigest()[:12]
    out: dict[str, list[str]] = {}
    for i, c in enumerate(camps):
        if not isinstance(c, dict):
            raise LinkError(f"{path}: campaign [{i}] is not an object")
        cid, accounts, verdict = c.get("campaign_id"), c.get("accounts"), c.get("verdict", "block")
        if not isinstance(cid, str) or not cid:
            raise LinkError(f"{path}: campaign [{i}] has no campaign_id")
        if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
            raise LinkError(f"{path}: campaign {cid}: 'accounts' must be a list of account ids")
        if verdict not in LEVELS:
            raise LinkError(f"{path}: campaign {cid}: unknown verdict {verdict!r}")
        if LEVELS.index(verdict) >= floor and len(accounts) > 1:  # one account links nothing
            out[f"scan:{tag}:{cid}"] = accounts
    return out


def build_table(cfg: LinksConfig, store: IntelStore | None, at: datetime | None = None) -> LinkTable:
    """Read every source once (blocking: call from a thread)."""
    at = at or datetime.now(UTC)
    acc: dict[str, set[str]] = {}
    budgets: set[str] = set()
    for p in cfg.campaigns:
        for bid, members in read_campaigns(p, cfg.min_verdict).items():
            budgets.add(bid)
            for a in members:
                acc.setdefault(a, set()).add(bid)
    dig: dict[tuple[int, str], set[str]] = {}
    if store is not None:
        for ind in store.indicators(type=IndicatorType.ACCOUNT, active_at=at):
            if ind.campaign_id and ind.key_epoch is not None:
                budgets.add(ind.campaign_id)
                dig.setdefault((ind.key_epoch, ind.value), set()).add(ind.campaign_id)
    return LinkTable(
        accounts={a: tuple(sorted(b)) for a, b in acc.items()},
        digests={k: tuple(sorted(b)) for k, b in dig.items()},
        epochs=tuple(sorted({e for e, _ in dig})),
        loaded_at=at,
        campaigns=len(budgets),
    )


class LinkGate(Reloader):
    """The current link table, its background refresh, and the per-request `link` descriptors."""

    def __init__(self, cfg: LinksConfig, store: IntelStore | None = None) -> None:
        self.cfg = cfg
        self.store = store or (IntelStore.open(cfg.intel_db) if cfg.intel_db else None)
        self.keyring = Keyring.load(cfg.keyring) if cfg.keyring else None
        if self.store is not None and self.keyring is None:
            raise LinkError("[links] intel_db needs a keyring: account indicators are keyed digests")
        self.table = LinkTable()
        self._digests: dict[tuple[str, int], str] = {}
        super().__init__("link", cfg.refresh_s, log)

    def reload(self) -> LinkTable:
        """Rebuild the table now (blocking) and swap it in whole."""
        self.table = build_table(self.cfg, self.store)
        return self.table

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def _digest(self, account_id: str, epoch: int) -> str:
        assert self.keyring is not None
        k = (account_id, epoch)
        d = self._digests.get(k)
        if d is None:
            if len(self._digests) >= _DIGEST_CACHE_MAX:
                self._digests.clear()
            d = self._digests[k] = self.keyring.digest(_ACCOUNT, account_id, epoch)
        return d

    def links(self, account_id: str) -> tuple[str, ...]:
        """The budget ids (campaigns) the account is linked into; empty when none."""
        t = self.table  # one snapshot for the whole request
        found = t.accounts.get(account_id, ())
        if t.epochs and self.keyring is not None:
            extra = [
                b
                for e in t.epochs
                if e in self.keyring.keys
                for b in t.digests.get((e, self._digest(account_id, e)), ())
            ]
            if extra:
                found = tuple(sorted({*found, *extra}))
        return found

    def descriptors(self, account_id: str, tier_quota: Quota | None) -> list[Descriptor]:
        """One `link` descriptor per campaign the account is in, with the tier's link quota or the default."""
        q = tier_quota or self.cfg.quota
        return [Descriptor("link", b, q.rpm, q.tpm, q.tpd) for b in self.links(account_id)]
