"""Prompt skeletons: prompts with their variable slots masked, sketched with MinHash and clustered by
LSH into templates. Feeds the `skeleton` signal (template reuse per account) and campaign linking
(templates shared across accounts).

Cost is bounded per account: each account contributes at most `sample` distinct skeletons, chosen by
the order of their md5 key, which both engines compute identically; exact duplicates are counted in
full by the engine (`cnt`), so shares are estimated from a sample weighted by row counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.detect import minhash
from distillguard.store.engine import Engine

# The head and tail of a long prompt (templates show there), the whole of a short one; then variable
# slots masked, all in one pass to one token (URLs and e-mail addresses first, then quoted spans and
# numbers), and whitespace runs collapsed in a second.
SKELETON_SQL = (
    "{rxr({rxr(lower(CASE WHEN length(prompt) > 600 "
    "THEN concat(left(prompt, 400), ' | ', right(prompt, 200)) ELSE coalesce(prompt, '') END), "
    r"'https?://[^\s]+|[^\s@]+@[^\s@]+|\"[^\"]{1,200}\"|[0-9]+([.,][0-9]+)*', '#')}, '\s+', ' ')}"
)

SAMPLE_SQL = """
WITH s AS (
  SELECT account_id, {hash(sk)} AS skey, sk FROM (SELECT account_id, %(skel)s AS sk FROM %(source)s) x
),
g AS (SELECT account_id, skey, min(sk) AS skel, count(*) AS cnt FROM s GROUP BY account_id, skey),
ranked AS (
  SELECT account_id, skey, skel, cnt,
         row_number() OVER (PARTITION BY account_id ORDER BY skey) AS rn
  FROM g
)
SELECT account_id, skey, skel, cnt FROM ranked WHERE rn <= %(sample)d ORDER BY account_id, skey
"""

MIN_TEMPLATE_CHARS = 60  # shorter skeletons ("hi", "thanks") say nothing about a template


@dataclass
class Templates:
    """Per-account sampled skeletons with their template cluster ids."""

    account_id: np.ndarray  # object, one per sampled skeleton
    cluster: np.ndarray  # int64 template id
    cnt: np.ndarray  # rows of the account with exactly this skeleton
    length: np.ndarray  # skeleton length in characters
    skel: pa.Array  # the masked skeleton text (for sketches shared as intel; never the raw prompt)


def templates(
    engine: Engine, sample: int = 64, threshold: float = 0.4, source: str = "exchanges"
) -> Templates:
    t = engine.query(SAMPLE_SQL % {"skel": SKELETON_SQL, "sample": int(sample), "source": source})
    skel = t.column("skel").combine_chunks()
    sk = minhash.sketch(skel)
    length = np.asarray(pc.utf8_length(skel).to_numpy(zero_copy_only=False), dtype=np.int64)
    clusters = minhash.cluster(sk, threshold, eligible=length >= MIN_TEMPLATE_CHARS)
    return Templates(
        account_id=np.asarray(t.column("account_id").to_pylist(), dtype=object),
        cluster=clusters,
        cnt=np.asarray(t.column("cnt").to_numpy(zero_copy_only=False), dtype=np.float64),
        length=length,
        skel=skel,
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
