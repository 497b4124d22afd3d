from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def openai_export() -> Path:
    return FIXTURES / "openai_usage.json"


@pytest.fixture
def anthropic_export() -> Path:
    return FIXTURES / "anthropic_usage.jsonl"
