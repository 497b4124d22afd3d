"""Evidence: why a score is what it is. Every verdict carries a list of these."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Level = Literal["ok", "watch", "suspect", "block"]
LEVELS: tuple[Level, ...] = ("ok", "watch", "suspect", "block")


class Evidence(BaseModel):
    """One signal's finding for one account or campaign, in words an analyst can check."""

    signal: str = Field(description="Signal name, e.g. `cot.elicitation`.")
    value: float = Field(description="The measured value.")
    threshold: float = Field(description="Value at which the signal counts as fully present.")
    weight: float = Field(description="Log-odds this finding added to the score (negative: mitigating).")
    detail: str = Field(description="What was measured, in words.")
    examples: list[str] = Field(default_factory=list, description="Example exchange ids.")
    indicator: str | None = Field(None, description="Matched threat-intel indicator, if any.")


class Verdict(BaseModel):
    account_id: str
    score: float
    level: Level
    campaign_id: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)

    def reasons(self, top: int = 3) -> str:
        pos = sorted((e for e in self.evidence if e.weight > 0), key=lambda e: -e.weight)[:top]
        return "; ".join(f"{e.signal}={e.value:.3g}" for e in pos)
