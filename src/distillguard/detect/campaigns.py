"""Linking accounts into campaigns.

Accounts are linked through kinds of shared evidence, each a bipartite account x key relation:
  ip          the same client IP (keys used by at most `max_key_accounts` accounts: big NATs excluded)
  subnet_ua   the same IPv4 /24 with the same (non-empty) user agent
  asn_ua      the same ASN with the same (non-empty) user agent
  device      the same device or TLS fingerprint, when at most `RARE_KEY_ACCOUNTS` accounts share it
              (common client fingerprints are shared by whole populations)
  template    mostly the same templates: the Bhattacharyya coefficient of the two accounts'
              distributions over template clusters (MinHash-LSH of masked skeletons) is at least
              `TEMPLATE_OVERLAP`, so popular phrases in common are not a link, a shared job is
  frame       the same template frame: the text an account repeats around its variable content (word
              pairs in at least `FRAME_SHARE` of its prompts) is mostly the same text (Jaccard >=
              `FRAME_OVERLAP`, `FRAME_MIN` pairs or more). A template that wraps long fillers (a
              question, a document) leaves whole prompts too different to cluster, but the frame is
              what the operation repeats; tested only on pairs that share infrastructure
  system      the same system prompt (40+ characters)
  recipe      the same published generation recipe (a hard generator fingerprint: Self-Instruct, Evol-
              Instruct, Orca, trace coercion...) in at least `RECIPE_MIN_SHARE` of each account's traffic
              (`RECIPE_MIN_HITS`+ prompts), or the same hard sampling trick (resampling, temperature
              sweeps: the account's finding at least half present, see `pipeline._recipe_hits`). A
              hydra's small accounts send too few prompts for their templates to overlap, but each sends
              the recipe's meta-prompt now and then, or runs the trick on whatever it asks
  client      the same client program: an explicit request configuration (output budget, temperature, top_p,
              n, log-probabilities) with the same model and user agent in at least `CLIENT_SHARE` of each
              account's requests. A script run from many accounts sends what it was written with; a
              person in a chat front-end sends defaults (not a client here)
  payment     the same payment fingerprint, shared by at most `RARE_KEY_ACCOUNTS` accounts
  synchrony   activity in the same 10-minute buckets (cosine of bucket counts >= SYNC_MIN)
  topics      the same topic mix (cosine of topic counts >= TOPIC_MIN)
Kinds are grouped by what they are evidence of: network (ip, subnet_ua, asn_ua, device), content
(template, frame, system, recipe, client), identity (payment; counts twice), timing (synchrony) and topics (half a link).
Two accounts are linked when the groups they share add up to `min_link_types` *and* include
infrastructure (network or identity): customers of the same SaaS vendor share content and timing but
not machines, and an operation shares machines. Timing and topics are computed only for pairs that
already share something else. Campaigns are the connected components with two or more accounts.

`Campaigns.job_linked` marks the members linked to another member by a shared prompt template, frame or
recipe *and* infrastructure: their own traffic is the campaign's job, so the campaign's pooled score is their
own evidence measured over more exchanges (see `scan.campaign_inherit_floor` and docs/scoring.md).
`Campaigns.client_job` marks the members linked by the same client program and infrastructure whose topic
mix is the campaign's (cosine >= `CLIENT_TOPIC_MIN` with the other members' pooled topics): a hydra
member too small for its own templates to show runs the campaign's program on the campaign's subjects.
Its inheritance also needs its own traffic to look like a script's: a machine's pace or a rotating proxy
pool, and no mitigating evidence (decided by the pipeline, `pipeline._scripted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.sparse import csr_matrix, vstack
from scipy.sparse.csgraph import connected_components

from distillguard.detect.features import client_params_sql
from distillguard.detect.minhash import _mix
from distillguard.detect.skeletons import MIN_TEMPLATE_CHARS, Templates
from distillguard.store.engine import Engine

INFRA_SQL = """
SELECT account_id, 'ip' AS kind, client_ip AS k FROM exchanges WHERE client_ip IS NOT NULL
  GROUP BY account_id, client_ip
UNION ALL
SELECT account_id, 'subnet_ua' AS kind,
       concat({rxr(client_ip, '\\.[0-9]+$', '.0/24')}, '|', coalesce(user_agent, '')) AS k
  FROM exchanges WHERE client_ip IS NOT NULL AND client_ip NOT LIKE '%:%' AND coalesce(user_agent, '') <> ''
  GROUP BY account_id, concat({rxr(client_ip, '\\.[0-9]+$', '.0/24')}, '|', coalesce(user_agent, ''))
UNION ALL
SELECT account_id, 'asn_ua' AS kind, concat(CAST(asn AS STRING), '|', user_agent) AS k
  FROM exchanges WHERE asn IS NOT NULL AND coalesce(user_agent, '') <> ''
  GROUP BY account_id, concat(CAST(asn AS STRING), '|', user_agent)
UNION ALL
SELECT account_id, 'system' AS kind, {hash(system_prompt)} AS k FROM exchanges
  WHERE length(system_prompt) >= 40 GROUP BY account_id, {hash(system_prompt)}
UNION ALL
SELECT account_id, 'payment' AS kind, payment_fp AS k FROM exchanges WHERE payment_fp IS NOT NULL
  GROUP BY account_id, payment_fp
UNION ALL
SELECT account_id, 'device' AS kind, device_fp AS k FROM exchanges WHERE device_fp IS NOT NULL
  GROUP BY account_id, device_fp
"""

# Each account's requests per client program (the client key's parameters, model, user agent). Requests
# that set neither an output budget nor a temperature carry a front-end's or SDK's defaults, shared by
# everybody.
_CLIENT = (
    f"{{hash(concat({client_params_sql()}, '|', coalesce(model, '-'), '|', coalesce(user_agent, '-')))}}"
)
CLIENT_SQL = f"""
SELECT account_id, {_CLIENT} AS k, count(*) AS c
FROM exchanges WHERE max_tokens IS NOT NULL OR temperature IS NOT NULL
GROUP BY account_id, {_CLIENT}
"""

SYNC_SQL = """
SELECT account_id, CAST(floor(({epoch(ts)} - %(t0)r) / 600) AS BIGINT) AS bucket, count(*) AS n
FROM exchanges GROUP BY account_id, CAST(floor(({epoch(ts)} - %(t0)r) / 600) AS BIGINT)
"""
SYNC_MIN = 0.6
TOPIC_MIN = 0.95
BEHAVIOUR_MIN_EXCHANGES = 20  # fewer exchanges make timing and topic mixes coincide by chance

RARE_KEY_ACCOUNTS = 20
KIND_GROUP = {
    "ip": "network",
    "subnet_ua": "network",
    "asn_ua": "network",
    "device": "network",
    "template": "content",
    "frame": "content",
    "system": "content",
    "recipe": "content",
    "client": "content",
    "payment": "identity",
    "synchrony": "timing",
    "topics": "topics",
}
# A topic mix is shared by whole populations of ordinary users, so it only ever adds half a link.
GROUP_WEIGHT = {"network": 1.0, "content": 1.0, "identity": 2.0, "timing": 1.0, "topics": 0.5}
TEMPLATE_OVERLAP = 0.5
# Template frames: word pairs in at least FRAME_SHARE of an account's (sampled, row-weighted) prompts, from
# accounts with FRAME_MIN_ROWS rows or more; frames of fewer than FRAME_MIN pairs (about a sentence) are
# phrases anyone may repeat, not a template.
FRAME_SHARE = 0.5
FRAME_MIN = 12
FRAME_MIN_ROWS = 3
FRAME_OVERLAP = 0.5
JOB_KINDS = ("template", "frame", "recipe")  # the kinds that say two accounts run the same prompt job
# An account runs a recipe when its fingerprint matches at least this share of its exchanges, this often:
# one match may be a user asking for quiz questions; a recipe recurs.
RECIPE_MIN_SHARE = 0.05
RECIPE_MIN_HITS = 2
# A client program is an account's when it sends at least this share of its requests, CLIENT_MIN_ROWS+.
CLIENT_SHARE = 0.8
CLIENT_MIN_ROWS = 5
# A client-linked member runs the campaign's job when its topic counts (CLIENT_TOPIC_ROWS+ rows) point
# the way of the other members' pooled topics; a pool is well estimated even when each member is small.
CLIENT_TOPIC_MIN = 0.9
CLIENT_TOPIC_ROWS = 10


@dataclass
class Campaigns:
    accounts: np.ndarray  # account ids (object), aligned with `label`
    label: np.ndarray  # campaign index per account, -1 when not in a campaign
    ids: list[str]  # campaign id per campaign index
    links: list[dict[str, int]] = field(default_factory=list)  # per campaign: linked pairs per kind
    members: list[np.ndarray] = field(default_factory=list)  # account indices per campaign
    # per account: linked to another member of its campaign by a shared template, frame or recipe and
    # infrastructure
    job_linked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # per account: linked by the same client program and infrastructure, on the campaign's topics
    client_job: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def _relation(acc_idx: np.ndarray, keys: np.ndarray, n_acc: int, max_accounts: int) -> csr_matrix | None:
    """Binary account x key matrix, dropping keys shared by more than `max_accounts` accounts."""
    if len(keys) == 0:
        return None
    uk, kinv = np.unique(keys.astype(str), return_inverse=True)
    m = csr_matrix((np.ones(len(kinv), dtype=np.int32), (acc_idx, kinv)), shape=(n_acc, len(uk)))
    m.data[:] = 1
    m.sum_duplicates()
    m.data[:] = 1
    per_key = np.asarray(m.sum(axis=0)).ravel()
    keep = (per_key >= 2) & (per_key <= max_accounts)
    if not keep.any():
        return None
    return m[:, np.flatnonzero(keep)]


def _template_links(tpl: Templates, idx: dict[str, int], n: int, max_accounts: int) -> csr_matrix | None:
    """Account pairs whose template mixes overlap (Bhattacharyya coefficient >= TEMPLATE_OVERLAP)."""
    t_acc = np.array([idx.get(a, -1) for a in tpl.account_id], dtype=np.int64)
    ok = (t_acc >= 0) & (tpl.length >= MIN_TEMPLATE_CHARS)
    if not ok.any():
        return None
    a, c, w = t_acc[ok], tpl.cluster[ok], tpl.cnt[ok]
    total = np.bincount(t_acc[t_acc >= 0], weights=tpl.cnt[t_acc >= 0], minlength=n)
    uc, cinv = np.unique(c, return_inverse=True)
    m = csr_matrix((w / np.maximum(total[a], 1.0), (a, cinv)), shape=(n, len(uc)))
    m.sum_duplicates()
    per_cluster = np.diff(m.tocsc().indptr)
    keep = np.flatnonzero((per_cluster >= 2) & (per_cluster <= max_accounts))
    if not len(keep):
        return None
    m = m[:, keep].tocsr()
    m.data = np.sqrt(m.data)
    # In blocks of rows, thresholded as they come: the full product holds every pair of accounts that
    # share any template (2.4 GB at 10M exchanges), the kept links a small fraction of it.
    mt = m.T.tocsr()
    blocks = []
    for lo in range(0, n, _BLOCK_ROWS):
        b = (m[lo : lo + _BLOCK_ROWS] @ mt).tocsr()
        b.data = (b.data >= TEMPLATE_OVERLAP).astype(np.float64)
        b.eliminate_zeros()
        blocks.append(b)
    return vstack(blocks, format="csr") if blocks else None


_BLOCK_ROWS = 1024


_DOC_BITS = 16  # texts per `_word_pairs` call: at most 2**16


def _word_pairs(skel: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(skeleton index, hash) of every distinct pair of consecutive word shingles of each skeleton.

    A word shingle is the 8 bytes from a word start (as the MinHash sketches read them), so a text costs
    one value per word; a pair of consecutive ones spans two to three words.
    """
    arr = skel.cast(pa.large_string()).fill_null("")
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    buf = arr.buffers()[2]
    base, total = int(offsets[0]), int(offsets[-1] - offsets[0])
    data = (
        np.frombuffer(buf, dtype=np.uint8)[base : base + total] if buf is not None else np.zeros(0, np.uint8)
    )
    offsets = offsets - base
    # word starts: a non-space after a space, or at the start of a text (texts are back to back in `data`)
    is_start = np.zeros(total, dtype=bool)
    if total:
        is_start[1:] = (data[:-1] == 32) & (data[1:] != 32)
        firsts = offsets[:-1][offsets[:-1] < offsets[1:]]
        is_start[firsts] = data[firsts] != 32
    pos = np.flatnonzero(is_start)
    doc = np.searchsorted(offsets, pos, side="right") - 1
    end = offsets[1:][doc]
    v = np.zeros(len(pos), dtype=np.uint64)
    for j in range(8):
        at = pos + j
        b = np.where(at < end, data[np.minimum(at, max(total - 1, 0))], 0).astype(np.uint64)
        v |= b << np.uint64(8 * j)
    same = doc[1:] == doc[:-1]
    h = _mix(_mix(v[:-1]) ^ v[1:])[same] if len(v) else np.zeros(0, np.uint64)
    d = doc[:-1][same] if len(v) else np.zeros(0, np.int64)
    if not len(h):
        return d, h
    # one distinct (skeleton, pair) each: both packed in one word (the hash loses the skeleton's bits, the
    # same number whatever the call, so hashes of different calls compare)
    if n > 1 << _DOC_BITS:
        raise ValueError(f"at most {1 << _DOC_BITS} texts per call")
    bits = np.uint64(_DOC_BITS)
    key = np.sort(((h >> bits) << bits) | d.astype(np.uint64))
    key = key[np.r_[True, key[1:] != key[:-1]]]
    return (key & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64), key >> bits


def _frames(tpl: Templates, idx: dict[str, int], n: int, accounts: np.ndarray) -> csr_matrix | None:
    """Binary account x word-pair matrix of the template frames of `accounts` (indices into `idx`'s
    numbering): the word pairs in at least FRAME_SHARE of an account's rows, FRAME_MIN of them or more."""
    want = np.zeros(n, dtype=bool)
    want[accounts] = True
    t_acc = np.array([idx.get(a, -1) for a in tpl.account_id], dtype=np.int64)
    sel = np.flatnonzero((t_acc >= 0) & want[np.maximum(t_acc, 0)])
    if not len(sel):
        return None
    total = np.bincount(t_acc[sel], weights=tpl.cnt[sel], minlength=n)
    acc_parts, key_parts, w_parts = [], [], []
    for lo in range(0, len(sel), 1 << _DOC_BITS):  # bounded temporaries
        part = sel[lo : lo + (1 << _DOC_BITS)]
        d, h = _word_pairs(tpl.skel.take(pa.array(part, pa.int64())))
        acc_parts.append(t_acc[part][d])
        key_parts.append(h)
        w_parts.append(tpl.cnt[part][d])
    a, h, w = np.concatenate(acc_parts), np.concatenate(key_parts), np.concatenate(w_parts)
    if not len(a):
        return None
    uh, hinv = np.unique(h, return_inverse=True)
    m = csr_matrix((w, (a, hinv)), shape=(n, len(uh)))
    m.sum_duplicates()
    m = m.tocoo()
    keep = (m.data >= FRAME_SHARE * total[m.row]) & (total[m.row] >= FRAME_MIN_ROWS)
    keep &= (np.bincount(m.row[keep], minlength=n) >= FRAME_MIN)[m.row]
    if not keep.any():
        return None
    return csr_matrix((np.ones(int(keep.sum())), (m.row[keep], m.col[keep])), shape=m.shape)


def _frame_links(tpl: Templates, idx: dict[str, int], n: int, cand: csr_matrix) -> csr_matrix | None:
    """Pairs of `cand` (already sharing infrastructure) whose template frames overlap (Jaccard >=
    FRAME_OVERLAP)."""
    c = cand.tocoo()
    sel = c.row < c.col
    r, k = c.row[sel], c.col[sel]
    if not len(r):
        return None
    f = _frames(tpl, idx, n, np.unique(np.r_[r, k]))
    if f is None:
        return None
    size = np.diff(f.indptr).astype(np.float64)
    ok = (size[r] > 0) & (size[k] > 0)
    r, k = r[ok], k[ok]
    inter = np.zeros(len(r))
    for lo in range(0, len(r), 1 << 16):
        rr, kk = r[lo : lo + (1 << 16)], k[lo : lo + (1 << 16)]
        inter[lo : lo + len(rr)] = np.asarray(f[rr].multiply(f[kk]).sum(axis=1)).ravel()
    keep = inter >= FRAME_OVERLAP * (size[r] + size[k] - inter)
    if not keep.any():
        return None
    rr, kk = r[keep], k[keep]
    return csr_matrix((np.ones(2 * len(rr)), (np.r_[rr, kk], np.r_[kk, rr])), shape=(n, n))


def _recipe_links(
    recipes: np.ndarray | None, volume: np.ndarray | None, n: int, max_accounts: int
) -> csr_matrix | None:
    """Account pairs that both run one recipe (RECIPE_MIN_HITS+ matches, RECIPE_MIN_SHARE of their traffic).
    A recipe may span a whole hydra, as a template may; the link still needs shared infrastructure."""
    if recipes is None or volume is None or not recipes.size:
        return None
    hits = np.asarray(recipes, dtype=np.float64).reshape(n, -1)
    vol = np.maximum(np.asarray(volume, dtype=np.float64), 1.0)[:, None]
    runs = (hits >= RECIPE_MIN_HITS) & (hits >= RECIPE_MIN_SHARE * vol)
    a, r = np.nonzero(runs)
    m = _relation(a, r, n, max_accounts)
    return None if m is None else (m @ m.T).tocsr()


def _client_links(
    engine: Engine, idx: dict[str, int], n: int, volume: np.ndarray | None, max_accounts: int
) -> csr_matrix | None:
    """Account pairs whose main client program (CLIENT_SHARE+ of their requests) is the same explicit one."""
    t = engine.query(CLIENT_SQL)
    a = np.array([idx.get(x, -1) for x in t.column("account_id").to_pylist()], dtype=np.int64)
    c = np.asarray(t.column("c").to_numpy(zero_copy_only=False), dtype=np.float64)
    vol = np.asarray(volume, dtype=np.float64) if volume is not None else None
    ok = a >= 0
    if vol is not None:
        ok &= c >= CLIENT_SHARE * vol[np.maximum(a, 0)]
    ok &= c >= CLIENT_MIN_ROWS
    if not ok.any():
        return None
    keys = np.asarray(t.column("k").to_pylist(), dtype=object)[ok]
    m = _relation(a[ok], keys, n, max_accounts)
    return None if m is None else (m @ m.T).tocsr()


def _on_campaign_topics(topics: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Per member: its topic counts point the way of the other members' pooled topics (cosine >=
    CLIENT_TOPIC_MIN, CLIENT_TOPIC_ROWS+ rows of its own)."""
    t = np.asarray(topics[members], dtype=np.float64)
    rest = t.sum(axis=0)[None, :] - t
    dot = (t * rest).sum(axis=1)
    norm = np.linalg.norm(t, axis=1) * np.linalg.norm(rest, axis=1)
    cos = dot / np.maximum(norm, 1e-12)
    return (cos >= CLIENT_TOPIC_MIN) & (t.sum(axis=1) >= CLIENT_TOPIC_ROWS)


def _cosine_pairs(m: csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Cosine similarity of the given row pairs of a non-negative matrix."""
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    out = np.zeros(len(rows))
    for lo in range(0, len(rows), 1 << 16):
        r, c = rows[lo : lo + (1 << 16)], cols[lo : lo + (1 << 16)]
        dots = np.asarray(m[r].multiply(m[c]).sum(axis=1)).ravel()
        out[lo : lo + len(r)] = dots / np.maximum(norms[r] * norms[c], 1e-12)
    return out


def _behaviour_links(
    engine: Engine,
    idx: dict[str, int],
    n: int,
    cand: csr_matrix,
    topics: np.ndarray | None,
    volume: np.ndarray,
) -> dict[str, csr_matrix]:
    """Synchrony and topic links, tested only on candidate pairs (already linked by another group)."""
    c = cand.tocoo()
    sel = (
        (c.row < c.col)
        & (volume[c.row] >= BEHAVIOUR_MIN_EXCHANGES)
        & (volume[c.col] >= BEHAVIOUR_MIN_EXCHANGES)
    )
    r, k = c.row[sel], c.col[sel]
    out: dict[str, csr_matrix] = {}
    if not len(r):
        return out
    t0 = engine.query("SELECT min({epoch(ts)}) AS t0 FROM exchanges").column("t0")[0].as_py()
    sync = engine.query(SYNC_SQL % {"t0": float(t0)})
    a = np.array([idx.get(x, -1) for x in sync.column("account_id").to_pylist()], dtype=np.int64)
    ok = a >= 0
    b = np.asarray(sync.column("bucket").to_numpy(zero_copy_only=False), dtype=np.int64)[ok]
    w = np.asarray(sync.column("n").to_numpy(zero_copy_only=False), dtype=np.float64)[ok]
    hm = csr_matrix(
        (w, (a[ok], b - b.min() if len(b) else b)), shape=(n, int(b.max() - b.min() + 1) if len(b) else 1)
    )
    for kind, mat, thr in (
        ("synchrony", hm, SYNC_MIN),
        ("topics", None if topics is None else csr_matrix(topics), TOPIC_MIN),
    ):
        if mat is None:
            continue
        keep = _cosine_pairs(mat, r, k) >= thr
        if keep.any():
            rr, kk = r[keep], k[keep]
            sym = csr_matrix((np.ones(2 * len(rr)), (np.r_[rr, kk], np.r_[kk, rr])), shape=(n, n))
            out[kind] = sym
    return out


def link(
    engine: Engine,
    accounts: np.ndarray,
    tpl: Templates,
    max_key_accounts: int = 200,
    min_link_types: int = 2,
    topics: np.ndarray | None = None,
    volume: np.ndarray | None = None,
    recipes: np.ndarray | None = None,
) -> Campaigns:
    """Link `accounts` into campaigns. `recipes` (accounts x recipes) holds each account's matches of the
    hard generator fingerprints and sampling tricks; `topics` its topic counts; `volume` its exchanges."""
    n = len(accounts)
    idx = {a: i for i, a in enumerate(accounts)}
    infra: pa.Table = engine.query(INFRA_SQL)
    acc = np.array([idx.get(a, -1) for a in infra.column("account_id").to_pylist()], dtype=np.int64)
    kinds = np.asarray(infra.column("kind").to_pylist(), dtype=object)
    keys = np.asarray(infra.column("k").to_pylist(), dtype=object)
    per_kind: dict[str, csr_matrix] = {}
    for kind in KIND_GROUP:
        if kind in ("frame", "synchrony", "topics"):
            continue
        if kind == "template":
            # Templates may span a whole hydra; the overlap test, not a cap, keeps popular prompts out.
            shared = _template_links(tpl, idx, n, max_key_accounts * 10)
        elif kind == "recipe":
            shared = _recipe_links(recipes, volume, n, max_key_accounts * 10)
        elif kind == "client":
            # A script may run from a whole hydra, as a template may: the cap is the templates' one.
            shared = _client_links(engine, idx, n, volume, max_key_accounts * 10)
        else:
            sel = (kinds == kind) & (acc >= 0)
            cap = RARE_KEY_ACCOUNTS if kind in ("device", "payment") else max_key_accounts
            m = _relation(acc[sel], keys[sel], n, cap)
            shared = None if m is None else (m @ m.T).tocsr()
        if shared is None:
            continue
        shared.data[:] = 1
        shared.setdiag(0)
        shared.eliminate_zeros()
        per_kind[kind] = shared

    def group_score() -> csr_matrix:
        total = csr_matrix((n, n), dtype=np.float64)
        for group, w in GROUP_WEIGHT.items():
            g = [m for k, m in per_kind.items() if KIND_GROUP[k] == group]
            if g:
                any_kind = sum(g[1:], g[0]).tocsr()
                any_kind.data[:] = 1
                total = total + any_kind * w
        return total.tocsr()

    def infra_pairs() -> csr_matrix | None:
        infra = [m for k, m in per_kind.items() if KIND_GROUP[k] in ("network", "identity")]
        if not infra:
            return None
        has = sum(infra[1:], infra[0]).tocsr()
        has.data[:] = 1
        return has

    has_infra = infra_pairs()
    if has_infra is not None:
        # Frames are compared only where infrastructure is shared: without it a pair never links.
        frames = _frame_links(tpl, idx, n, has_infra)
        if frames is not None:
            per_kind["frame"] = frames
    vol = volume if volume is not None else np.full(n, BEHAVIOUR_MIN_EXCHANGES, dtype=np.float64)
    per_kind.update(_behaviour_links(engine, idx, n, group_score(), topics, vol))
    score = group_score()
    strong = score.multiply(has_infra).tocsr() if has_infra is not None else csr_matrix((n, n))
    strong.data = (strong.data >= min_link_types).astype(np.int8)
    strong.eliminate_zeros()
    jobs = [per_kind[k] for k in JOB_KINDS if k in per_kind]
    if jobs:
        job = strong.multiply(sum(jobs[1:], jobs[0])).tocsr()
        job.eliminate_zeros()
        job_linked = np.diff(job.indptr) > 0
    else:
        job_linked = np.zeros(n, dtype=bool)
    # per account: linked to another member by its client program and infrastructure
    if "client" in per_kind and topics is not None:
        client_pairs = strong.multiply(per_kind["client"]).tocsr()
        client_pairs.eliminate_zeros()
        client_linked = np.diff(client_pairs.indptr) > 0
    else:
        client_linked = None
    client_job = np.zeros(n, dtype=bool)
    _, comp = connected_components(strong, directed=False)
    sizes = np.bincount(comp, minlength=comp.max() + 1 if n else 0)
    label = np.full(n, -1, dtype=np.int64)
    ids: list[str] = []
    members: list[np.ndarray] = []
    links: list[dict[str, int]] = []
    # Stable campaign numbering: biggest first, then by first account id.
    order = sorted(
        (c for c in range(len(sizes)) if sizes[c] >= 2),
        key=lambda c: (-sizes[c], np.flatnonzero(comp == c)[0]),
    )
    for ci, c in enumerate(order):
        mem = np.flatnonzero(comp == c)
        label[mem] = ci
        if client_linked is not None and topics is not None:
            client_job[mem] = client_linked[mem] & _on_campaign_topics(topics, mem)
        ids.append(f"C{ci + 1:04d}")
        members.append(mem)
        sub = {}
        for kind, m in per_kind.items():
            sub[kind] = int(m[mem][:, mem].nnz // 2)
        links.append({k: v for k, v in sub.items() if v})
    return Campaigns(
        accounts=accounts,
        label=label,
        ids=ids,
        links=links,
        members=members,
        job_linked=job_linked,
        client_job=client_job,
    )
