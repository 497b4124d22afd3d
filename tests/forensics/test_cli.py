from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.forensics.keys import ProviderSecret
from distillguard.forensics.kgw import KGW
from tests.forensics.toy_model import bigram_logits, generate

runner = CliRunner()


def test_detect_names_the_account_and_writes_json(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.hex"
    assert runner.invoke(app, ["forensics", "keygen", "--out", str(secret_file)]).exit_code == 0
    assert (secret_file.stat().st_mode & 0o777) == 0o600
    secret = ProviderSecret.load(secret_file)
    accounts = [f"org-{i}" for i in range(50)]
    (tmp_path / "accounts.txt").write_text("\n".join(accounts) + "\n")
    scheme = KGW()
    texts = generate(scheme, secret.account_key("org-31"), bigram_logits(300, seed=9), batch=3, length=200)
    rows = [{"id": f"t{i}", "tokens": t.tolist(), "prompt_tokens": [1, 2, 3]} for i, t in enumerate(texts)]
    data = tmp_path / "texts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "result.json"
    res = runner.invoke(
        app,
        [
            "forensics",
            "detect",
            str(data),
            "--keys",
            str(tmp_path / "accounts.txt"),
            "--secret",
            str(secret_file),
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["implicated"] == ["org-31@0"]
    assert [r["implicated"] for r in result["per_record"]] == [["org-31@0"]] * 3
    assert result["keys_tested"] == 50
    assert secret.to_hex() not in res.output and secret.to_hex() not in out.read_text()


def test_detect_errors_are_one_line(tmp_path: Path) -> None:
    data = tmp_path / "texts.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    res = runner.invoke(app, ["forensics", "detect", str(data), "--scheme", "gumbel"])
    assert res.exit_code == 2 and "pass a tokenizer" in res.output
    data.write_text(json.dumps({"tokens": [1, 2, 3]}) + "\n")
    res = runner.invoke(app, ["forensics", "detect", str(data), "--scheme", "kgw"])
    assert res.exit_code == 2 and "--keys" in res.output
    res = runner.invoke(app, ["forensics", "detect", str(data), "--scheme", "nope"])
    assert res.exit_code == 2 and "unknown watermark scheme" in res.output
