from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.eval import evaluate, read_labels, tpr_at_fpr

from ..conftest import LogBuilder


def test_tpr_at_fpr_counts_ties_against_the_detector() -> None:
    scores = np.array([0.9, 0.8, 0.5, 0.1, 0.1, 0.1, 0.2, 0.3])
    attack = np.array([True, True, True, False, False, False, False, False])
    tpr, thr = tpr_at_fpr(scores, attack, 0.0)
    assert thr == 0.3 and tpr == 1.0
    scores[2] = 0.3  # tie with the top benign: not above the threshold
    tpr, _ = tpr_at_fpr(scores, attack, 0.0)
    assert tpr == pytest.approx(2 / 3)


def test_labels_errors_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text("account_id,label\na,attack\nb,maybe\n")
    with pytest.raises(ValueError, match=r"l.csv:3: label must be"):
        read_labels(p)


def test_eval_end_to_end(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 12, ip=f"198.51.100.{i}")
    ips = [f"203.0.113.{k}" for k in range(5)]
    for j in range(3):
        builder.orca_harvester(f"farm{j}", corpora["gsm8k"], 300, ips)
    log = builder.write(tmp_path / "log.jsonl")
    labels = tmp_path / "labels.csv"
    lines = ["account_id,label,campaign_id,strategy"]
    lines += [f"user{i:02d},benign,,chat" for i in range(30)]
    lines += [f"farm{j},attack,K1,orca_cot" for j in range(3)]
    labels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scan"
    assert CliRunner().invoke(app, ["scan", str(log), "--out", str(out)]).exit_code == 0
    rep = evaluate(out, labels)
    m = rep.metrics
    assert m["roc_auc"] == 1.0 and m["tpr_at_0.001_fpr"] == 1.0
    assert m["campaign_recall"] == 1.0 and m["campaign_ari"] == 1.0
    assert 1 <= m["median_exchanges_to_flag"] <= 300
    assert rep.false_positives == []
    r = CliRunner().invoke(
        app, ["eval", str(out), "--labels", str(labels), "--json", str(tmp_path / "m.json")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.json").exists()


def test_calibration_threshold_for_target_fpr() -> None:
    from distillguard.detect.calibration import from_scores

    cal = from_scores(np.linspace(0.0, 0.99, 100), "test")
    thr = cal.threshold_for(0.05)
    assert cal.fpr(thr) <= 0.05
    assert cal.fpr(np.nextafter(thr, 0.0) - 0.01) > 0.05
    assert cal.fpr(0.5) == pytest.approx(0.49, abs=0.011)
