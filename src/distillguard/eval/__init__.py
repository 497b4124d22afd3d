"""Evaluation of a scan against labels: how well accounts and campaigns were found.

Labels are a CSV with `account_id,label,campaign_id,strategy` (what `simulate` writes); `label` is
`attack` or `benign`. The population is the labelled accounts that have traffic in the scanned log;
labelled accounts with no exchange are counted apart (`labelled_but_absent_*`), and a scan whose
accounts are mostly unlabelled is an error (wrong labels file).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import adjusted_rand_score, roc_auc_score

FPRS = (0.001, 0.01)


@dataclass
class Labels:
    account_id: np.ndarray
    attack: np.ndarray  # bool
    campaign: np.ndarray  # object: campaign id or ""
    strategy: np.ndarray  # object


def read_labels(path: Path) -> Labels:
    rows: list[tuple[str, bool, str, str]] = []
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        need = {"account_id", "label"}
        if r.fieldnames is None or not need <= set(r.fieldnames):
            raise ValueError(f"{path}: labels need columns {sorted(need)}, found {r.fieldnames}")
        for i, row in enumerate(r, start=2):
            lab = (row.get("label") or "").strip().lower()
            if lab not in ("attack", "benign"):
                raise ValueError(f"{path}:{i}: label must be 'attack' or 'benign', got {row.get('label')!r}")
            rows.append(
                (row["account_id"], lab == "attack", row.get("campaign_id") or "", row.get("strategy") or "")
            )
    if not rows:
        raise ValueError(f"{path}: no labels")
    a, b, c, d = zip(*rows, strict=True)
    return Labels(
        np.array(a, dtype=object), np.array(b), np.array(c, dtype=object), np.array(d, dtype=object)
    )


def tpr_at_fpr(scores: np.ndarray, attack: np.ndarray, fpr: float) -> tuple[float, float]:
    """(TPR, threshold) at the strictest threshold whose benign false-positive rate is <= fpr.

    An account counts as flagged when its score is strictly above the threshold; the threshold is the
    (k+1)-th highest benign score with k = floor(fpr * benign), so at most k benign accounts pass.
    """
    benign = np.sort(scores[~attack])[::-1]
    if len(benign) == 0:
        return float("nan"), float("nan")
    k = int(np.floor(fpr * len(benign)))
    thr = float(benign[k]) if k < len(benign) else float(benign[-1]) - 1e-12
    return float(np.mean(scores[attack] > thr)) if attack.any() else float("nan"), thr


@dataclass
class Report:
    metrics: dict[str, Any]
    per_strategy: list[dict[str, Any]]
    false_positives: list[dict[str, Any]]
    campaigns: list[dict[str, Any]] = field(default_factory=list)


def evaluate(
    scan_dir: Path, labels_path: Path, flag_level: str = "suspect", max_fp: int = 50, streaming: bool = True
) -> Report:
    lab = read_labels(labels_path)
    acc = pq.read_table(scan_dir / "accounts.parquet").to_pydict()
    pos = {a: i for i, a in enumerate(acc["account_id"])}
    unknown = [a for a in acc["account_id"] if a not in set(lab.account_id.tolist())]
    if len(unknown) > 0.5 * len(acc["account_id"]):
        raise ValueError(f"{len(unknown)} scanned accounts are not in {labels_path}: wrong labels file?")
    idx = np.array([pos.get(a, -1) for a in lab.account_id])
    seen = idx >= 0
    # Accounts with no exchange in the log are not part of the traffic: nothing could flag them.
    absent = {"attack": int((~seen & lab.attack).sum()), "benign": int((~seen & ~lab.attack).sum())}
    lab = Labels(lab.account_id[seen], lab.attack[seen], lab.campaign[seen], lab.strategy[seen])
    idx = idx[seen]
    seen = idx >= 0
    score = np.where(seen, np.array(acc["score"])[np.maximum(idx, 0)], 0.0)
    verdict = np.array([acc["verdict"][i] if i >= 0 else "ok" for i in idx], dtype=object)
    pred_c = np.array([(acc["campaign_id"][i] or "") if i >= 0 else "" for i in idx], dtype=object)
    reasons = [acc["reasons"][i] if i >= 0 else "" for i in idx]
    order = ("ok", "watch", "suspect", "block")
    flagged = np.array([order.index(v) >= order.index(flag_level) for v in verdict])
    y = lab.attack
    m: dict[str, Any] = {
        "accounts": len(y),
        "attack_accounts": int(y.sum()),
        "benign_accounts": int((~y).sum()),
        "roc_auc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan"),
        "labelled_but_absent_attack": absent["attack"],
        "labelled_but_absent_benign": absent["benign"],
    }
    for f in FPRS:
        tpr, thr = tpr_at_fpr(score, y, f)
        m[f"tpr_at_{f:g}_fpr"] = tpr
        m[f"threshold_at_{f:g}_fpr"] = thr
    m[f"tpr_at_{flag_level}"] = float(flagged[y].mean()) if y.any() else float("nan")
    m[f"fpr_at_{flag_level}"] = float(flagged[~y].mean()) if (~y).any() else float("nan")
    m["benign_above_watch"] = int(sum(order.index(v) > 1 for v in verdict[~y]))
    # Campaigns: recall (share of each true campaign's accounts flagged) and ARI of the grouping.
    in_true = lab.campaign != ""
    camps = []
    for c in sorted(set(lab.campaign[in_true].tolist())):
        sel = lab.campaign == c
        members_pred = pred_c[sel]
        nonempty = members_pred[members_pred != ""]
        top = max((np.sum(nonempty == p) for p in set(nonempty.tolist())), default=0)
        camps.append(
            {
                "campaign_id": c,
                "strategy": str(lab.strategy[sel][0]),
                "accounts": int(sel.sum()),
                "flagged": float(flagged[sel].mean()),
                "grouped": float(top / sel.sum()),
            }
        )
    if camps:
        m["campaign_recall"] = float(np.mean([c["flagged"] for c in camps]))
        # ARI over accounts in a true or a predicted campaign; others are singletons of their own.
        rel = in_true | (pred_c != "")
        t_lab = np.where(lab.campaign[rel] != "", lab.campaign[rel], "t:" + lab.account_id[rel])
        p_lab = np.where(pred_c[rel] != "", pred_c[rel], "p:" + lab.account_id[rel])
        m["campaign_ari"] = float(adjusted_rand_score(t_lab, p_lab))
    if streaming and (scan_dir / "exchanges.parquet").exists() and y.any():
        from distillguard.eval.stream import exchanges_to_flag

        st = exchanges_to_flag(
            scan_dir / "exchanges.parquet", set(lab.account_id[y].tolist()), level=flag_level
        )
        m["median_exchanges_to_flag"] = st["median_exchanges_to_flag"]
        m["p90_exchanges_to_flag"] = st["p90_exchanges_to_flag"]
    strategies = []
    for s in sorted(set(lab.strategy.tolist())):
        sel = lab.strategy == s
        strategies.append(
            {
                "strategy": s,
                "label": "attack" if y[sel].all() else "benign",
                "accounts": int(sel.sum()),
                "flagged": float(flagged[sel].mean()),
                "max_level": max(verdict[sel].tolist(), key=order.index),
                "median_score": float(np.median(score[sel])),
            }
        )
    fps = [
        {
            "account_id": str(lab.account_id[i]),
            "strategy": str(lab.strategy[i]),
            "score": float(score[i]),
            "verdict": str(verdict[i]),
            "reasons": reasons[i],
        }
        for i in np.flatnonzero(~y & flagged)
    ]
    fps.sort(key=lambda d: -float(d["score"]))
    return Report(m, strategies, fps[:max_fp], camps)
