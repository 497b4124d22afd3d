"""Linking accounts into campaigns.

Accounts are linked through kinds of shared evidence, each a bipartite account x key relation:
  ip          the same client IP (keys used by at most `max_key_accounts` accounts: big NATs excluded)
  subnet_ua   the same IPv4 /24 with the same user agent
  template    the same prompt template (MinHash-LSH cluster of masked skeletons)
  system      the same system prompt (40+ characters)
  payment / device  the same payment or device fingerprint (each counts as two kinds: it is strong)
Two accounts are linked when they share at least `min_link_types` kinds; campaigns are the connected
components of that graph with two or more accounts. Requiring independent kinds of evidence is what
keeps a shared corporate NAT, or two customers of the same public benchmark, from being a campaign.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from distillguard.detect.skeletons import MIN_TEMPLATE_CHARS, Templates
from distillguard.store.engine import Engine

INFRA_SQL = """
SELECT account_id, 'ip' AS kind, client_ip AS k FROM exchanges WHERE client_ip IS NOT NULL
  GROUP BY account_id, client_ip
UNION ALL
SELECT account_id, 'subnet_ua' AS kind,
       concat({rxr(client_ip, '\\.[0-9]+$', '.0/24')}, '|', coalesce(user_agent, '')) AS k
  FROM exchanges WHERE client_ip IS NOT NULL AND client_ip NOT LIKE '%:%'
  GROUP BY account_id, concat({rxr(client_ip, '\\.[0-9]+$', '.0/24')}, '|', coalesce(user_agent, ''))
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

KIND_WEIGHT = {"ip": 1, "subnet_ua": 1, "template": 1, "system": 1, "payment": 2, "device": 2}


@dataclass
class Campaigns:
    accounts: np.ndarray  # account ids (object), aligned with `label`
    label: np.ndarray  # campaign index per account, -1 when not in a campaign
    ids: list[str]  # campaign id per campaign index
    links: list[dict[str, int]] = field(default_factory=list)  # per campaign: linked pairs per kind
    members: list[np.ndarray] = field(default_factory=list)  # account indices per campaign


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


def link(
    engine: Engine,
    accounts: np.ndarray,
    tpl: Templates,
    max_key_accounts: int = 200,
    min_link_types: int = 2,
) -> Campaigns:
    n = len(accounts)
    idx = {a: i for i, a in enumerate(accounts)}
    infra: pa.Table = engine.query(INFRA_SQL)
    acc = np.array([idx.get(a, -1) for a in infra.column("account_id").to_pylist()], dtype=np.int64)
    kinds = np.asarray(infra.column("kind").to_pylist(), dtype=object)
    keys = np.asarray(infra.column("k").to_pylist(), dtype=object)
    rel: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in KIND_WEIGHT:
        if kind == "template":
            t_acc = np.array([idx.get(a, -1) for a in tpl.account_id], dtype=np.int64)
            # Only substantial templates that carry real traffic of the account.
            ok = (t_acc >= 0) & (tpl.length >= MIN_TEMPLATE_CHARS) & (tpl.cnt >= 1)
            rel[kind] = (t_acc[ok], tpl.cluster[ok].astype(str))
        else:
            sel = (kinds == kind) & (acc >= 0)
            rel[kind] = (acc[sel], keys[sel])
    score = csr_matrix((n, n), dtype=np.int32)
    per_kind: dict[str, csr_matrix] = {}
    for kind, (a, k) in rel.items():
        m = _relation(a, k, n, max_key_accounts)
        if m is None:
            continue
        shared = (m @ m.T).tocsr()
        shared.data[:] = 1
        shared.setdiag(0)
        shared.eliminate_zeros()
        per_kind[kind] = shared
        score = score + shared * KIND_WEIGHT[kind]
    score = score.tocsr()
    strong = score.copy()
    strong.data = (strong.data >= min_link_types).astype(np.int8)
    strong.eliminate_zeros()
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
        ids.append(f"C{ci + 1:04d}")
        members.append(mem)
        sub = {}
        for kind, m in per_kind.items():
            sub[kind] = int(m[mem][:, mem].nnz // 2)
        links.append({k: v for k, v in sub.items() if v})
    return Campaigns(accounts=accounts, label=label, ids=ids, links=links, members=members)
