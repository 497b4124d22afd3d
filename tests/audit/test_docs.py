"""The configuration example of docs/audit.md is a valid config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from distillguard.config import Config

DOC = Path(__file__).parents[2] / "docs" / "audit.md"


def test_doc_config_example_validates() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    cfg = Config.model_validate(tomllib.loads(blocks[0]))
    assert cfg.audit.expected_countries == ["DE", "FR", "US"]
    assert cfg.audit.price_overrides["gpt-4o"].input == 2.00
