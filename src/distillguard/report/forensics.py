"""The forensics results a report shows: `forensics.json` in a scan directory, when present.

A small schema so that watermark and radioactivity tests (`distillguard forensics`, issue 5) and any
other tool can hand their results to the report: one record per test of a suspect model or text set,
with its p-value, how much was scored, the controls run and the accounts implicated.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
from pydantic import BaseModel, Field, ValidationError

FILE = "forensics.json"


class Control(BaseModel):
    name: str = Field(description="What the control was, e.g. `unwatermarked texts` or `control student`.")
    p_value: float = Field(ge=0.0, le=1.0)


class ForensicTest(BaseModel):
    suspect: str = Field(description="The model, endpoint or text set tested.")
    setting: Literal["text", "open", "closed"] = Field(
        "text", description="text: texts scored directly; open: model weights read; closed: API queried."
    )
    scheme: str = Field(description="Watermark or test scheme, e.g. `kgw`, `gumbel`, `markllm-kgw`.")
    p_value: float = Field(ge=0.0, le=1.0, description="p-value of the test (family-wise corrected).")
    alpha: float = Field(1e-3, gt=0.0, lt=1.0, description="Significance level the verdict uses.")
    tokens_scored: int = Field(0, ge=0)
    accounts_implicated: list[str] = Field(default_factory=list)
    controls: list[Control] = Field(default_factory=list)
    command: str | None = Field(None, description="The command that reproduces the test.")
    detail: str = ""

    @property
    def detected(self) -> bool:
        return self.p_value < self.alpha


class RobustnessRow(BaseModel):
    """Detection of watermarked texts after one attack (synonym substitution, paraphrase, or none)."""

    attack: str = Field(description="e.g. `none`, `synonym substitution 25%`, `paraphrase (SmolLM2)`.")
    texts: int = Field(ge=0, description="Texts detected after the attack.")
    median_tokens: float | None = Field(None, ge=0.0)
    median_p_value: float = Field(ge=0.0, le=1.0)
    share_below_1e6: float = Field(ge=0.0, le=1.0, description="Share of texts with p < 1e-6.")
    share_below_1e3: float = Field(ge=0.0, le=1.0, description="Share of texts with p < 1e-3.")
    share_account_named: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of texts whose only implicated account is the right one."
    )
    share_words_changed: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of the words the attack changed, where it can be counted."
    )


class ForensicsReport(BaseModel):
    schema_version: Literal[1] = 1
    generated_at: datetime | None = None
    tests: list[ForensicTest] = Field(default_factory=list)
    robustness: list[RobustnessRow] = Field(
        default_factory=list, description="Text detection after attacks on the watermarked texts."
    )

    def table(self) -> pa.Table:
        t = self.tests
        return pa.table(
            {
                "suspect": [x.suspect for x in t],
                "setting": [x.setting for x in t],
                "scheme": [x.scheme for x in t],
                "p_value": pa.array([x.p_value for x in t], pa.float64()),
                "alpha": pa.array([x.alpha for x in t], pa.float64()),
                "detected": pa.array([x.detected for x in t], pa.bool_()),
                "tokens_scored": pa.array([x.tokens_scored for x in t], pa.int64()),
                "accounts_implicated": [", ".join(x.accounts_implicated) for x in t],
                "controls": ["; ".join(f"{c.name}: p={c.p_value:.3g}" for c in x.controls) for x in t],
                "command": [x.command or "" for x in t],
                "detail": [x.detail for x in t],
            },
            schema=pa.schema(
                [("suspect", pa.string()), ("setting", pa.string()), ("scheme", pa.string()),
                 ("p_value", pa.float64()), ("alpha", pa.float64()), ("detected", pa.bool_()),
                 ("tokens_scored", pa.int64()), ("accounts_implicated", pa.string()),
                 ("controls", pa.string()), ("command", pa.string()), ("detail", pa.string())]
            ),
        )  # fmt: skip


EVIDENCE = "evidence.json"  # what `distillguard forensics test --out DIR` writes


def from_evidence(doc: dict[str, Any]) -> ForensicsReport:
    """A `forensics test` evidence document (forensics/suspect.py) as the report's records."""
    verdict = doc.get("verdict", {})
    controls = [
        Control(name=str(c.get("name", "control")), p_value=float(c["p_value"]))
        for c in doc.get("controls", [])
        if c.get("p_value") is not None
    ]
    reproduce = doc.get("reproduce") or [None]
    tests = [
        ForensicTest(
            suspect=str(doc["suspect"]),
            setting=t.get("setting") if t.get("setting") in ("text", "open", "closed") else "open",
            scheme=str(doc.get("scheme", "")),
            p_value=float(t["p_value"]),
            alpha=float(doc.get("alpha", 1e-3)),
            tokens_scored=int(t.get("tokens_scored", 0)),
            accounts_implicated=list(t.get("implicated", verdict.get("implicated", []))),
            controls=controls,
            command=reproduce[-1],
            detail=str(verdict.get("summary", "")),
        )
        for t in doc.get("tests", [])
    ]
    robustness = [RobustnessRow.model_validate(r) for r in doc.get("robustness", [])]
    return ForensicsReport(tests=tests, robustness=robustness)


def load_forensics(scan_dir: Path) -> ForensicsReport | None:
    """The directory's forensics results, or None when it has none: `forensics.json` (this module's
    schema) or the `evidence.json` that `distillguard forensics test --out` writes. A malformed file is
    an error that names the file and the field, never silently skipped: the report would otherwise omit
    the proof."""
    p = scan_dir / FILE
    if not p.exists():
        ev = scan_dir / EVIDENCE
        if not ev.exists():
            return None
        try:
            return from_evidence(orjson.loads(ev.read_bytes()))
        except orjson.JSONDecodeError as e:
            raise ValueError(f"{ev}: not valid JSON ({e})") from None
        except (KeyError, TypeError, ValueError, ValidationError) as e:
            raise ValueError(f"{ev}: not a `forensics test` evidence document ({e})") from None
    try:
        return ForensicsReport.model_validate(orjson.loads(p.read_bytes()))
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"{p}: field {where}: {first['msg']}") from None
