"""Streaming scoring for the gateway: state per account, `learn_one` / `score_one` in River's shape.

The online scorer uses exactly the batch signals: it keeps each account's recent exchanges (a bounded
window) and, when a score is asked for and the account has changed enough since its last score,
re-runs the same feature SQL and the same combiner over that window in an in-process DuckDB. Scores
are cached between refreshes, so `score_one` costs a dictionary lookup on most calls; the refresh
schedule is dense for new accounts (each of the first 20 exchanges) and then every `refresh_every`.

The window is kept as the Arrow table of its last score plus the rows learnt since: a re-score converts
only the new rows (converting a 2,000-row window from Python values every time was a quarter of a
score's CPU) and appends them to the table, dropping what fell out of the window, without a copy.

Peer-relative signals (volume) need a population: the scorer keeps a running median of the accounts it
has seen, or uses `peer_per_day` / `peer_tok_per_day` when given (for example from the last batch scan).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from distillguard.config import Config
from distillguard.detect import features, scoring, skeletons, slices
from distillguard.detect.evidence import Verdict
from distillguard.detect.signals import release
from distillguard.detect.signals.base import Signal, signals
from distillguard.exchange import Exchange, rows_to_batch, to_values, values_to_batch
from distillguard.store.engine import DuckDBEngine

# chunks of an account's window table before they are merged into one (each re-score appends one)
_MAX_CHUNKS = 32


@dataclass
class _AccountState:
    table: pa.Table | None = None  # the window as of its last score
    pending: list[list[Any]] = field(default_factory=list)  # rows learnt since (`to_values` form)
    seen: int = 0
    scored_at: int = -1
    verdict: Verdict | None = None
    tok_sum: float = 0.0
    days: set[Any] = field(default_factory=set)


class OnlineScorer:
    """Per-account streaming risk scores from the batch signals.

    >>> scorer = OnlineScorer()
    >>> scorer.learn_one(exchange)            # doctest: +SKIP
    >>> scorer.score_one(exchange.account_id)  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: Config | None = None,
        window: int = 2000,
        refresh_every: int = 10,
        dense_until: int = 20,
        peer_per_day: float | None = None,
        peer_tok_per_day: float | None = None,
        max_accounts: int = 100_000,
    ) -> None:
        self.cfg = cfg or Config()
        self.window = window
        self.refresh_every = refresh_every
        self.dense_until = dense_until
        self._peer = peer_per_day
        self._peer_tok = peer_tok_per_day
        self._sigs: list[Signal] = [cls() for cls in signals().values()]
        # Least recently learnt first: past `max_accounts` the idlest account's state is dropped, so a
        # long-running gateway's memory is bounded however many accounts it sees.
        self.max_accounts = max_accounts
        self._state: OrderedDict[str, _AccountState] = OrderedDict()
        self._engine = DuckDBEngine(threads=1, memory_limit="256MB")

    def __len__(self) -> int:
        """Accounts whose state is held."""
        return len(self._state)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._state

    def learn_one(self, ex: Exchange) -> None:
        """Add one exchange to its account's state."""
        st = self._state.get(ex.account_id)
        if st is None:
            st = self._state[ex.account_id] = _AccountState()
            while len(self._state) > self.max_accounts:
                self._state.popitem(last=False)
        else:
            self._state.move_to_end(ex.account_id)
        st.pending.append(to_values(ex))
        if len(st.pending) > 2 * self.window:  # only the last `window` can ever be scored
            del st.pending[: -self.window]
        st.seen += 1
        st.days.add(ex.ts.date())
        st.tok_sum += ex.completion_tokens or 0

    def _due(self, st: _AccountState) -> bool:
        if st.verdict is None:
            return True
        if st.seen <= self.dense_until:
            return st.seen != st.scored_at
        return st.seen - st.scored_at >= self.refresh_every

    def _peers(self) -> tuple[float, float]:
        if self._peer is not None and self._peer_tok is not None:
            return self._peer, self._peer_tok
        per_day = [s.seen / max(len(s.days), 1) for s in self._state.values()]
        tok = [s.tok_sum / max(len(s.days), 1) for s in self._state.values()]
        return (
            self._peer if self._peer is not None else float(np.median(per_day)),
            self._peer_tok if self._peer_tok is not None else float(np.median(tok)),
        )

    def score_one(self, account_id: str) -> Verdict:
        """The account's current verdict (ok with no evidence for an unknown account)."""
        st = self._state.get(account_id)
        if st is None or st.seen == 0:
            return Verdict(account_id=account_id, score=0.0, level="ok")
        if self._due(st):
            st.verdict = self._compute(account_id, st)
            st.scored_at = st.seen
        assert st.verdict is not None
        return st.verdict

    def _window(self, st: _AccountState) -> pa.Table:
        """The account's last `window` rows as one Arrow table (only the new rows are converted)."""
        if st.pending or st.table is None:
            rows = st.pending[-self.window :]
            fresh = pa.Table.from_batches([values_to_batch(rows)])
            tbl = (
                fresh if st.table is None or len(rows) >= self.window else pa.concat_tables([st.table, fresh])
            )
            if tbl.num_rows > self.window:
                tbl = tbl.slice(tbl.num_rows - self.window)  # zero-copy: the oldest rows fall out
            if tbl.column(0).num_chunks > _MAX_CHUNKS:
                tbl = tbl.combine_chunks()
            st.table, st.pending = tbl, []
        return st.table

    def _compute(self, account_id: str, st: _AccountState) -> Verdict:
        return self._score_arrow(account_id, self._window(st), self._peers())

    def score_rows(
        self, account_id: str, rows: Iterable[dict[str, Any]], peers: tuple[float, float]
    ) -> Verdict:
        """Score one account's window of rows (`exchange.to_row` form) with the batch SQL, against the
        given peer medians (requests, output tokens per day). Keeps no state: a shared store (the
        gateway's Redis risk state) holds the window and calls this."""
        batch = list(rows)
        if not batch:
            return Verdict(account_id=account_id, score=0.0, level="ok")
        return self._score_arrow(account_id, rows_to_batch(batch), peers)

    def _score_arrow(
        self, account_id: str, data: pa.Table | pa.RecordBatch, peers: tuple[float, float]
    ) -> Verdict:
        from distillguard.detect.pipeline import score_accounts

        eng = self._engine
        eng.register_arrow("exchanges", data)
        features.materialize_rows(eng, self._sigs)
        tpl = skeletons.templates(eng, self.cfg.scan.skeleton_sample, self.cfg.scan.skeleton_threshold)
        peer, peer_tok = peers
        pcols = {"peer_per_day": np.array([peer]), "peer_tok_per_day": np.array([peer_tok])}
        sc = score_accounts(eng, self._sigs, self.cfg, tpl, pcols)
        # the account's client slices, scored like the batch scan scores them (see detect.slices)
        pcols["release_base"] = np.array([release.adoption_base(sc.cols)])
        lifted = slices.lift(sc, slices.score_slices(eng, self._sigs, self.cfg, sc, tpl, pcols), self.cfg)
        s = float(sc.score[0])
        evidence = scoring.evidence_for(0, sc.findings, sc.contrib, self.cfg.scan.examples)
        if 0 in lifted:
            evidence.insert(0, lifted[0])
        return Verdict(
            account_id=account_id, score=s, level=scoring.level_of(s, self.cfg.scoring), evidence=evidence
        )

    def close(self) -> None:
        self._engine.close()
