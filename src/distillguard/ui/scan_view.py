"""What the console shows of a scan: the review queue, a subject's evidence, example exchanges.

Reads the files `distillguard scan` writes (accounts.parquet, campaigns.json, exchanges.parquet).
Prompt text leaves this module only through `reveal`, which the app calls after auditing the request.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq


class ScanViewError(ValueError):
    pass


@dataclass
class Subject:
    """A flagged account or campaign in the queue."""

    id: str
    kind: str  # account | campaign
    score: float
    verdict: str
    campaign_id: str | None
    n_exchanges: int
    evidence: list[dict[str, Any]]
    accounts: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> str:
        pos = sorted((e for e in self.evidence if e["weight"] > 0), key=lambda e: -e["weight"])[:3]
        return "; ".join(f"{e['signal']}={e['value']:.3g}" for e in pos)


@dataclass(frozen=True)
class Example:
    exchange_id: str
    ts: str
    model: str
    chars: int


class ScanView:
    """The flagged subjects of one scan directory, at or above `min_score`, highest score first."""

    def __init__(self, scan_dir: Path, min_score: float) -> None:
        acc_path = scan_dir / "accounts.parquet"
        if not acc_path.exists():
            raise ScanViewError(
                f"{scan_dir} holds no scan (accounts.parquet missing); run `distillguard scan`"
            )
        self.scan_dir = scan_dir
        self.min_score = min_score
        self.exchanges = scan_dir / "exchanges.parquet"
        cols = ["account_id", "score", "verdict", "campaign_id", "n_exchanges", "evidence"]
        t = pq.read_table(acc_path, columns=cols).to_pydict()
        self.accounts: dict[str, Subject] = {}
        for i, aid in enumerate(t["account_id"]):
            score = float(t["score"][i])
            if score < min_score:
                continue
            try:
                ev = orjson.loads(t["evidence"][i] or "[]")
            except orjson.JSONDecodeError as e:
                raise ScanViewError(f"{acc_path}: account {aid}: evidence is not JSON ({e})") from None
            self.accounts[aid] = Subject(
                aid, "account", score, t["verdict"][i], t["campaign_id"][i], int(t["n_exchanges"][i]), ev
            )
        self.campaigns: dict[str, Subject] = {}
        camp_path = scan_dir / "campaigns.json"
        for c in orjson.loads(camp_path.read_bytes()) if camp_path.exists() else []:
            if float(c["score"]) >= min_score:
                self.campaigns[c["campaign_id"]] = Subject(
                    c["campaign_id"], "campaign", float(c["score"]), c["verdict"], c["campaign_id"],
                    int(c["n_exchanges"]), list(c.get("evidence") or []), list(c["accounts"]),
                )  # fmt: skip

    def queue(
        self,
        kind: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        query: str = "",
        hide: Collection[str] = (),
    ) -> tuple[list[Subject], int]:
        """One page of the flagged `kind`, highest score first, and how many match in all.

        `query` keeps ids containing it (case-insensitive); `hide` drops ids (e.g. those already decided).
        """
        src = self.accounts if kind == "account" else self.campaigns
        q = query.strip().lower()
        rows = [s for s in src.values() if (not q or q in s.id.lower()) and s.id not in hide]
        rows.sort(key=lambda s: (-s.score, s.id))
        end = None if limit is None else offset + limit
        return rows[offset:end], len(rows)

    def subject(self, kind: str, sid: str) -> Subject | None:
        if kind not in ("account", "campaign"):
            return None
        return (self.accounts if kind == "account" else self.campaigns).get(sid)

    def examples(self, s: Subject, limit: int = 5) -> list[Example]:
        """Example exchanges: those the evidence cites, then the account's first ones (masked: sizes only)."""
        if not self.exchanges.exists():
            return []
        cited = [x for e in s.evidence for x in e.get("examples", [])][:limit]
        accounts = s.accounts or [s.id]
        con = duckdb.connect()
        try:
            rows = con.execute(
                "SELECT exchange_id, CAST(ts AS VARCHAR), model, length(coalesce(prompt, '')) "
                "FROM read_parquet(?) WHERE exchange_id IN (SELECT unnest(?::VARCHAR[])) "
                "OR (account_id IN (SELECT unnest(?::VARCHAR[])) AND exchange_id IN ("
                "  SELECT exchange_id FROM read_parquet(?) WHERE account_id IN (SELECT unnest(?::VARCHAR[])) "
                "  ORDER BY ts LIMIT ?)) ORDER BY ts LIMIT ?",
                [str(self.exchanges), cited, accounts, str(self.exchanges), accounts, limit, limit],
            ).fetchall()
        finally:
            con.close()
        return [Example(r[0], r[1], r[2] or "", int(r[3])) for r in rows]

    def reveal(self, s: Subject, exchange_id: str) -> str | None:
        """The prompt of `exchange_id` when it belongs to subject `s` (else None: no reading across subjects)."""
        if not self.exchanges.exists():
            return None
        accounts = s.accounts or [s.id]
        con = duckdb.connect()
        try:
            row = con.execute(
                "SELECT prompt FROM read_parquet(?) WHERE exchange_id = ? "
                "AND account_id IN (SELECT unnest(?::VARCHAR[])) LIMIT 1",
                [str(self.exchanges), exchange_id, accounts],
            ).fetchone()
        finally:
            con.close()
        return None if row is None else str(row[0] or "")
