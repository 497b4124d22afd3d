"""Client slices: the part of an account sent with one request configuration, scored as if it were an
account of its own.

Account-level shares dilute. A proxy account that mixes a harvesting script with ordinary resale chat
shows only part of its traffic as single-turn, CoT-eliciting or at a fixed large output budget, and its
chat half's follow-ups explain the rest away. But a program sends its requests with the parameters it
was written with (output budget, temperature, top_p, n, log-probabilities, reasoning effort: the client
key `ckey`, see `features.CLIENT_KEY_SQL`), while a person in a chat front-end, or another program, sends
others. Splitting an account by that configuration separates the clients behind it without knowing
anything about what they send: each slice of at least `scan.slice_min_exchanges` exchanges that is not
(nearly) the whole account is scored by the same signals and combiner, over its own rows, templates and
timing, against the account population's medians. An account whose best slice scores above the account
takes the slice's score, and its evidence says so (`slice.client`: the slice's configuration, size,
score and the findings behind it).

A program that varies its sampling parameters on purpose (a temperature sweep, resampling with n>1 on
some prompts) sends a dozen configurations, each maybe too small to score alone. So an account is also
split by its programs' output settings (budget and log-probabilities, the sampling parameters left
out): a group of these that spans two or more configurations is a slice too, a *program family*.

Mitigations stay with the traffic they describe: the chat slice's follow-ups no longer explain away the
harvest slice, while an evaluation harness's model comparison or a back-office job's narrow template
are measured within their own slice, as they were within their account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.config import Config
from distillguard.detect import scoring, skeletons
from distillguard.detect.evidence import Evidence
from distillguard.detect.signals.base import Signal
from distillguard.detect.signals.release import adoption_base
from distillguard.store.engine import Engine

if TYPE_CHECKING:
    from distillguard.detect.pipeline import Scored

SEP = "#"  # slice id = account id + SEP + client key (or "family:" + the family key)

# A slice's size and the settings its words give (the same for configuration and family slices)
_SETTINGS = """count(*) AS c, min(max_tokens) AS mt, max(max_tokens) AS mt_hi,
  min(temperature) AS temp, max(temperature) AS temp_hi, min(n) AS nn, max(n) AS nn_hi,
  max(CASE WHEN logprobs OR coalesce(top_logprobs, 0) > 0 THEN 1 ELSE 0 END) AS lp"""

SIZES_SQL = f"""
SELECT account_id, ckey, {_SETTINGS}
FROM %s
GROUP BY account_id, ckey
"""

# A program's output settings, without the sampling parameters it may vary from request to request: the
# key of an account's program slices. Nulls read as -1, so that the key joins back with plain equality.
FAMILY_COLUMNS = {
    "f_mt": "coalesce({t}max_tokens, -1)",
    "f_lp": "coalesce(CAST({t}logprobs AS INT), -1)",
    "f_tl": "coalesce({t}top_logprobs, -1)",
}
FAMILY_SQL = (
    "SELECT account_id, "
    + ", ".join(f"{e.format(t='')} AS {a}" for a, e in FAMILY_COLUMNS.items())
    + f""", count(DISTINCT ckey) AS k, {_SETTINGS}
FROM %s
GROUP BY account_id, """
    + ", ".join(e.format(t="") for e in FAMILY_COLUMNS.values())
)

# (prompt, model) pairs per slice, counting every model its account sent each of the slice's prompts to
PROMPT_MODELS_SQL = """
WITH pm AS (
  SELECT account_id, pkey, count(DISTINCT model) AS k FROM %(rows)s
  WHERE account_id IN (SELECT account_id FROM slice_map)
  GROUP BY account_id, pkey
),
d AS (
  SELECT DISTINCT s.account_id AS slice_id, m.account_id, s.pkey
  FROM slice_rows s JOIN slice_map m ON s.account_id = m.slice_id
)
SELECT d.slice_id AS account_id, sum(pm.k) AS prompt_models
FROM d JOIN pm ON d.account_id = pm.account_id AND d.pkey = pm.pkey
GROUP BY d.slice_id
"""


def _candidates(engine: Engine, rows: str) -> pa.Table:
    """Every (account, client key) group, and every (account, program family) group that spans two or
    more client keys (one that spans one is the same rows as that key's slice), with their sizes and
    settings; `ckey` is null on the family rows and the family columns null on the others."""
    exact = engine.query(SIZES_SQL % rows)
    fam = engine.query(FAMILY_SQL % rows)
    fam = fam.filter(pc.greater_equal(fam.column("k"), 2)).drop(["k"])
    for k in FAMILY_COLUMNS:
        exact = exact.append_column(k, pa.nulls(exact.num_rows, pa.int64()))
    fam = fam.append_column("ckey", pa.nulls(fam.num_rows, pa.string()))
    schema = pa.schema([f.with_nullable(True) for f in exact.schema])  # Spark marks its columns non-null
    return pa.concat_tables([exact.cast(schema), fam.select(schema.names).cast(schema)])


@dataclass
class Slices:
    """The scored client slices of some accounts, and each account's best one."""

    scored: Scored  # the slices, scored as accounts (ids are slice ids)
    account: np.ndarray  # int, index of each slice's account in the account arrays
    size: np.ndarray  # exchanges per slice
    words: list[str]  # the slice's configuration in words
    family: np.ndarray  # bool per slice: a program family (sampling varied), not one configuration
    best: np.ndarray  # int per account: index of its best slice, -1 when it has none


def _config_words(
    mt: float, mt_hi: float, temp: float, temp_hi: float, nn: float, nn_hi: float, lp: float
) -> str:
    parts = [
        "max_tokens unset" if np.isnan(mt) else f"max_tokens {mt:.0f}" if mt == mt_hi else "max_tokens set",
        "temperature unset"
        if np.isnan(temp_hi)
        else f"temperature {temp:.2g}"
        if temp == temp_hi
        else f"temperatures {temp:.2g} to {temp_hi:.2g}",
    ]
    if not np.isnan(nn_hi) and nn_hi > 1:
        parts.append(f"n={nn:.0f}" if nn == nn_hi else f"n up to {nn_hi:.0f}")
    if lp > 0:
        parts.append("log-probabilities")
    return ", ".join(parts)


def _slice_templates(engine: Engine, tpl: skeletons.Templates, slice_rows: str) -> skeletons.Templates:
    """The account's sampled skeletons, counted within each slice (no text is read again)."""
    t = engine.query(f"SELECT account_id, skey, count(*) AS cnt FROM {slice_rows} GROUP BY account_id, skey")
    sid = t.column("account_id").to_pylist()
    skey = t.column("skey").to_pylist()
    cnt = np.asarray(t.column("cnt").to_numpy(zero_copy_only=False), dtype=np.float64)
    assert tpl.key is not None
    at = {(a, k): i for i, (a, k) in enumerate(zip(tpl.account_id.tolist(), tpl.key.tolist(), strict=True))}
    pick = [(j, at.get((s.rsplit(SEP, 1)[0], k), -1)) for j, (s, k) in enumerate(zip(sid, skey, strict=True))]
    rows = np.array([j for j, i in pick if i >= 0], dtype=np.int64)
    src = np.array([i for _j, i in pick if i >= 0], dtype=np.int64)
    return skeletons.Templates(
        account_id=np.asarray([sid[j] for j in rows], dtype=object),
        cluster=tpl.cluster[src],
        cnt=cnt[rows] if len(rows) else np.zeros(0),
        length=tpl.length[src],
        skel=tpl.skel.take(pa.array(src, pa.int64())),
        key=np.asarray([skey[j] for j in rows], dtype=object),
    )


def score_slices(
    engine: Engine,
    sigs: list[Signal],
    cfg: Config,
    acc: Scored,
    tpl: skeletons.Templates,
    peers: dict[str, np.ndarray] | None = None,
    rows: str = "dg_rows",
) -> Slices | None:
    """Score the client slices of every account of `acc` (materialised `rows`); None when none qualify.

    `peers` (the accounts' medians: `peer_per_day`, `peer_tok_per_day`, `release_base`, one value each)
    default to the medians over `acc`.
    """
    from distillguard.detect.pipeline import score_accounts

    lo = cfg.scan.slice_min_exchanges
    if lo <= 0 or tpl.key is None or not len(acc.ids):
        return None
    t = _candidates(engine, rows)
    pos = {a: i for i, a in enumerate(acc.ids.tolist())}
    a_i = np.array([pos.get(a, -1) for a in t.column("account_id").to_pylist()], dtype=np.int64)
    c = np.asarray(t.column("c").to_numpy(zero_copy_only=False), dtype=np.float64)
    n_acc = np.asarray(acc.cols["n_exchanges"], dtype=np.float64)
    keep = (a_i >= 0) & (c >= lo) & (c <= cfg.scan.slice_max_share * n_acc[np.maximum(a_i, 0)])
    if not keep.any():
        return None
    idx = np.flatnonzero(keep)
    aids = t.column("account_id").to_pylist()
    ckeys = t.column("ckey").to_pylist()
    fam = {k: t.column(k).to_pylist() for k in FAMILY_COLUMNS}
    sids = [
        f"{aids[j]}{SEP}{ckeys[j]}"
        if ckeys[j] is not None
        else f"{aids[j]}{SEP}family:" + "|".join(str(fam[k][j]) for k in FAMILY_COLUMNS)
        for j in idx
    ]
    engine.register_arrow(
        "slice_map",
        pa.table(
            {
                "account_id": pa.array([aids[j] for j in idx], pa.string()),
                "ckey": pa.array([ckeys[j] for j in idx], pa.string()),
                **{k: pa.array([v[j] for j in idx], pa.int64()) for k, v in fam.items()},
                "slice_id": pa.array(sids, pa.string()),
            }
        ),
    )
    names = engine.query(f"SELECT * FROM {rows} LIMIT 0").column_names
    cols = ", ".join("m.slice_id AS account_id" if n == "account_id" else f"e.{n}" for n in names)
    same_family = " AND ".join(f"{e.format(t='e.')} = m.{a}" for a, e in FAMILY_COLUMNS.items())
    engine.create_view(
        "slice_rows",
        f"SELECT {cols} FROM {rows} e JOIN slice_map m ON e.account_id = m.account_id AND e.ckey = m.ckey "
        f"UNION ALL SELECT {cols} FROM {rows} e JOIN slice_map m "
        f"ON e.account_id = m.account_id AND m.ckey IS NULL AND {same_family}",
    )
    engine.create_view("slice_exchanges", "SELECT account_id, ts, exchange_id FROM slice_rows")
    if peers is None:
        days = np.maximum(acc.cols["days_active"], 1.0)
        peers = {
            "peer_per_day": np.array([float(np.median(n_acc / days))]),
            "peer_tok_per_day": np.array([float(np.median(acc.cols["out_tokens_sum"] / days))]),
            "release_base": np.array([adoption_base(acc.cols)]),
        }
    # Whether a prompt was also put to another model is a fact about the prompt in its account: a harness
    # may send each model its own parameters, so the comparison is counted over the whole account.
    pm = engine.query(PROMPT_MODELS_SQL % {"rows": rows})
    pm_of = dict(
        zip(
            pm.column("account_id").to_pylist(),
            np.asarray(pm.column("prompt_models").to_numpy(zero_copy_only=False), dtype=np.float64),
            strict=True,
        )
    )

    def extra(ids: np.ndarray) -> dict[str, np.ndarray]:
        out = {name: np.full(len(ids), float(v[0])) for name, v in peers.items()}
        out["prompt_models"] = np.array([pm_of.get(s, np.nan) for s in ids.tolist()], dtype=np.float64)
        return out

    sc = score_accounts(
        engine, sigs, cfg, _slice_templates(engine, tpl, "slice_rows"), extra, "slice_rows", "slice_exchanges"
    )
    # Features come back sorted by slice id: align the sizes and words with them.
    order = {s: j for j, s in enumerate(sids)}
    src = idx[np.array([order[s] for s in sc.ids.tolist()], dtype=np.int64)]
    num = {
        name: np.asarray(t.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)[src]
        for name in ("mt", "mt_hi", "temp", "temp_hi", "nn", "nn_hi", "lp")
    }
    words = [_config_words(*(num[k][j] for k in num)) for j in range(len(src))]
    account = a_i[src]
    best = np.full(len(acc.ids), -1, dtype=np.int64)
    top = np.full(len(acc.ids), -np.inf)
    for j, a in enumerate(account.tolist()):
        if sc.score[j] > top[a]:
            top[a], best[a] = sc.score[j], j
    family = np.array([ckeys[j] is None for j in src.tolist()], dtype=bool)
    return Slices(scored=sc, account=account, size=c[src], words=words, family=family, best=best)


def lift(acc: Scored, sl: Slices | None, cfg: Config) -> dict[int, Evidence]:
    """Raise each account's score to its best slice's where that is higher (in place); returns the
    `slice.client` evidence of the accounts so raised, by account index."""
    out: dict[int, Evidence] = {}
    if sl is None:
        return out
    n_acc = acc.cols["n_exchanges"]
    for i in np.flatnonzero(sl.best >= 0).tolist():
        j = int(sl.best[i])
        s, own = float(sl.scored.score[j]), float(acc.score[i])
        if s <= own:
            continue
        ev = scoring.evidence_for(j, sl.scored.findings, sl.scored.contrib, cfg.scan.examples)
        pos = [e for e in ev if e.weight > 0][:3]
        why = ", ".join(f"{e.signal}={e.value:.3g}" for e in pos) or "no single finding"
        out[i] = Evidence(
            signal="slice.client",
            value=round(s, 6),
            threshold=cfg.scoring.levels["suspect"],
            weight=round(float(scoring.logit(s) - scoring.logit(own)), 4),
            detail=f"{sl.size[j]:.0f} of its {n_acc[i]:.0f} exchanges share "
            + (
                "one program's output settings, sampling varied"
                if sl.family[j]
                else "one request configuration"
            )
            + f" ({sl.words[j]}) and score {s:.3f} on their own ({why}); the whole account scores {own:.3f}",
            examples=[x for e in pos for x in e.examples][: cfg.scan.examples],
        )
        acc.score[i] = s
    return out
