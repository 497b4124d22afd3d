"""Prompt skeletons: prompts with their variable slots masked, sketched with MinHash and clustered by
LSH into templates. Feeds the `skeleton` signal (template reuse per account) and campaign linking
(templates shared across accounts).

Cost is bounded per account: each account contributes at most `sample` distinct skeletons, chosen by
the order of their md5 key, which both engines compute identically; exact duplicates are counted in
full by the engine (`cnt`), so shares are estimated from a sample weighted by row counts. The key is a
row column computed with the other signals' text work; only sampled skeletons are rebuilt as text.
Cost is bounded per scan too: past a budget of sampled skeletons (many accounts), `sample` shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.detect import minhash
from distillguard.store.engine import Engine, release_memory


def skeleton_sql(col: str) -> str:
    """The skeleton of a lower-cased prompt column: the head and tail of a long prompt (templates show
    there), the whole of a short one; variable slots masked in one pass to one token (URLs and e-mail
    addresses, quoted spans, numbers); whitespace runs collapsed to one space in a second pass."""
    return (
        f"{{rxr({{rxr(CASE WHEN length({col}) > 600 "
        f"THEN concat(left({col}, 400), ' | ', right({col}, 200)) ELSE coalesce({col}, '') END, "
        r"'https?://[^\s]+|[^\s@]+@[^\s@]+|\"[^\"]{1,200}\"|[0-9]+([.,][0-9]+)*', '#')}, "
        # Collapsing every whitespace run (`\s+`) replaced each space between two words with a space: a
        # match per word, most of the skeleton's cost. Runs of two or more and the other whitespace
        # characters (RE2's \s is [\t\n\f\r ]) give the same text.
        r"'\s\s+|[\t\n\f\r]', ' ')}"
    )


# The row column (computed once with the other row columns, over the lower-cased prompt `ptxt`) is
# only the skeleton's key; the text is rebuilt below for the sampled skeletons alone.
# A step of a tool loop has no key: its prompt is the task of the loop's first request, counted there
# (an agent's task repeated at each of its steps is one prompt, not a reused template).
SKELETON_KEY_SQL = "CASE WHEN tool_step = 0 THEN {hash(" + skeleton_sql("ptxt") + ")} END"

SAMPLE_SQL = """
WITH g AS (
  SELECT account_id, skey, min(exchange_id) AS ex, count(*) AS cnt FROM %(rows)s WHERE skey IS NOT NULL
  GROUP BY account_id, skey
),
ranked AS (
  SELECT account_id, skey, ex, cnt, row_number() OVER (PARTITION BY account_id ORDER BY skey) AS rn
  FROM g
)
SELECT s.account_id, s.skey, s.cnt, min(%(skel)s) AS skel
FROM ranked s JOIN %(source)s e ON e.exchange_id = s.ex AND e.account_id = s.account_id
WHERE s.rn <= %(sample)d
GROUP BY s.account_id, s.skey, s.cnt
ORDER BY s.account_id, s.skey
"""

MIN_TEMPLATE_CHARS = 60  # shorter skeletons ("hi", "thanks") say nothing about a template
MIN_SAMPLE = 16  # the per-account sample a skeleton budget may shrink to, and no further

ACCOUNTS_SQL = "SELECT count(DISTINCT account_id) AS n FROM %s"


def sample_size(n_accounts: int, sample: int, budget: int | None) -> int:
    """Skeletons sampled per account: `sample`, unless `n_accounts` x `sample` exceeds `budget`, then
    the budget shared out (at least MIN_SAMPLE, or `sample` if that is smaller)."""
    if budget is None or n_accounts * sample <= budget:
        return sample
    return max(min(sample, MIN_SAMPLE), budget // max(n_accounts, 1))


@dataclass
class Templates:
    """Per-account sampled skeletons with their template cluster ids."""

    account_id: np.ndarray  # object, one per sampled skeleton
    cluster: np.ndarray  # int64 template id
    cnt: np.ndarray  # rows of the account with exactly this skeleton
    length: np.ndarray  # skeleton length in characters
    skel: pa.Array  # the masked skeleton text (for sketches shared as intel; never the raw prompt)
    key: np.ndarray | None = None  # object, the skeleton key (`skey`) of each sampled skeleton


def templates(
    engine: Engine,
    sample: int = 64,
    threshold: float = 0.4,
    rows: str = "dg_rows",
    source: str = "exchanges",
    budget: int | None = None,
) -> Templates:
    """Sample, sketch and cluster the skeletons of each account of the materialised `rows`.

    With a `budget`, the sample per account shrinks when the accounts would exceed it (`sample_size`):
    the sketches and their clustering are held in memory, so their number is what must stay bounded.
    """
    if budget is not None:
        n_accounts = engine.query(ACCOUNTS_SQL % rows).column("n")[0].as_py() or 0
        sample = sample_size(int(n_accounts), sample, budget)
    sql = SAMPLE_SQL % {
        "skel": skeleton_sql("lower(e.prompt)"),
        "sample": int(sample),
        "rows": rows,
        "source": source,
    }
    t = engine.query(sql)
    release_memory(engine)  # the sketches and their clustering are held here, beside the engine
    skel = t.column("skel").combine_chunks()
    sk = minhash.sketch(skel)
    length = np.asarray(pc.utf8_length(skel).to_numpy(zero_copy_only=False), dtype=np.int64)
    clusters = minhash.cluster(sk, threshold, eligible=length >= MIN_TEMPLATE_CHARS)
    del sk  # K x 8 bytes a skeleton: the biggest thing this holds, and no longer needed
    return Templates(
        account_id=np.asarray(t.column("account_id").to_pylist(), dtype=object),
        cluster=clusters,
        cnt=np.asarray(t.column("cnt").to_numpy(zero_copy_only=False), dtype=np.float64),
        length=length,
        skel=skel,
        key=np.asarray(t.column("skey").to_pylist(), dtype=object),
    )


def relabel(tpl: Templates, group_of: dict[str, str]) -> Templates:
    """The same sampled skeletons regrouped (e.g. accounts -> campaigns); others are dropped."""
    keep = np.array([a in group_of for a in tpl.account_id], dtype=bool)
    idx = np.flatnonzero(keep)
    return Templates(
        account_id=np.array([group_of[a] for a in tpl.account_id[keep]], dtype=object),
        cluster=tpl.cluster[keep],
        cnt=tpl.cnt[keep],
        length=tpl.length[keep],
        skel=tpl.skel.take(pa.array(idx, pa.int64())),
        key=tpl.key[keep] if tpl.key is not None else None,
    )


def account_columns(tpl: Templates, accounts: np.ndarray) -> dict[str, np.ndarray]:
    """Template features aligned to `accounts`: reuse share and how narrow the template set is."""
    idx = {a: i for i, a in enumerate(accounts)}
    n_acc = len(accounts)
    acc_i = np.array([idx.get(a, -1) for a in tpl.account_id], dtype=np.int64)
    ok = acc_i >= 0
    acc_i, cl, cnt = acc_i[ok], tpl.cluster[ok], tpl.cnt[ok]
    long_ = tpl.length[ok] >= MIN_TEMPLATE_CHARS
    total = np.bincount(acc_i, weights=cnt, minlength=n_acc)
    # rows per (account, cluster)
    key = acc_i * (cl.max() + 1 if len(cl) else 1) + cl
    uk, inv = np.unique(key, return_inverse=True)
    w = np.bincount(inv, weights=cnt)
    wl = np.bincount(inv, weights=cnt * long_)
    k_acc = uk // (cl.max() + 1 if len(cl) else 1)
    reused = (w >= 3) & (wl > 0)
    reuse = np.bincount(k_acc, weights=np.where(reused, w, 0.0), minlength=n_acc)
    top = np.zeros(n_acc)
    np.maximum.at(top, k_acc, np.where(wl > 0, w, 0.0))
    n_clusters = np.bincount(k_acc, minlength=n_acc)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "tpl_reuse": np.where(total > 0, reuse / np.maximum(total, 1), 0.0),
            "tpl_top": np.where(total > 0, top / np.maximum(total, 1), 0.0),
            "tpl_clusters": n_clusters.astype(np.float64),
            "tpl_rows": total,
        }
