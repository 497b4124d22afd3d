"""`distillguard forensics ...`: provider secrets and watermark detection with account attribution."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
import typer
from rich.console import Console
from rich.table import Table

from distillguard.report.errors import fail

if TYPE_CHECKING:
    from distillguard.forensics.attribution import Correction
    from distillguard.forensics.markllm import Seeding

forensics_app = typer.Typer(
    name="forensics",
    help="Output watermarks: keys, detection with exact p-values, attribution to accounts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--param {item!r}: expected NAME=VALUE, e.g. gamma=0.25")
        try:
            out[name] = orjson.loads(value)  # numbers and booleans as JSON
        except orjson.JSONDecodeError:
            out[name] = value  # a bare string, e.g. seeding=simple_1
    return out


@forensics_app.command("keygen")
def keygen(
    out: Path = typer.Option(..., "--out", "-o", help="File to write the new provider secret to (hex)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Create a provider watermark secret (32 random bytes, hex, file mode 0600)."""
    from distillguard.forensics.keys import ProviderSecret

    if out.exists() and not force:
        fail(f"{out} exists: pass --force to replace it (every account key derived from it changes)")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(ProviderSecret.generate().to_hex() + "\n")
    console.print(f"wrote a new provider secret to {out} (keep it secret; it is never printed)")


@forensics_app.command("detect")
def detect_cmd(
    file: Path = typer.Argument(
        ..., help="JSONL of records with `tokens` or `text` (+ `prompt`), or JSON with `records`."
    ),
    scheme_name: str = typer.Option(
        "kgw", "--scheme", "-s", help="kgw, gumbel, markllm-kgw, lm-watermarking-kgw."
    ),
    param: list[str] = typer.Option([], "--param", "-p", help="Scheme parameter NAME=VALUE (repeatable)."),
    keys: Path | None = typer.Option(
        None, "--keys", help="Account ids to test, one a line (needs --secret)."
    ),
    secret: Path | None = typer.Option(
        None, "--secret", help="Provider secret file (default: env DISTILLGUARD_WATERMARK_SECRET)."
    ),
    epochs: str = typer.Option("0", "--epochs", help="Key epochs to test, comma-separated."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="For text records: smollm2, a .gguf or a dir."
    ),
    alpha: float = typer.Option(1e-3, "--alpha", help="Family-wise significance level."),
    correction: str = typer.Option("holm", "--correction", help="holm or bonferroni."),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="Score repeated windows once."),
    exclude_prompt: bool = typer.Option(True, "--exclude-prompt/--keep-prompt", help="Drop prompt windows."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the full result as JSON ('-' for stdout)."
    ),
) -> None:
    """Test texts for watermarks; with --keys, name the accounts whose mark is present."""
    from distillguard.forensics.detect import detect_records, read_records
    from distillguard.forensics.keys import KeyRing, ProviderSecret, WatermarkKeyError
    from distillguard.forensics.scheme import SchemeError, get_scheme

    if correction not in ("holm", "bonferroni"):
        fail(f"--correction must be holm or bonferroni, got {correction!r}")
    try:
        scheme = get_scheme(scheme_name, **_params(param))
        encode = None
        if tokenizer is not None:
            from distillguard.forensics.tokenizers import encode as enc
            from distillguard.forensics.tokenizers import load_tokenizer

            tok = load_tokenizer(tokenizer)
            encode = lambda texts: enc(tok, texts)  # noqa: E731
        records = read_records(file, encode)
        ring = None
        if keys is not None:
            if not keys.is_file():
                fail(f"keys file not found: {keys}")
            accounts = [a.strip() for a in keys.read_text(encoding="utf-8").splitlines() if a.strip()]
            try:
                eps = [int(e) for e in epochs.split(",") if e.strip()]
            except ValueError:
                fail(f"--epochs must be integers, comma-separated, got {epochs!r}")
            ring = KeyRing.derive(ProviderSecret.load(secret), accounts, eps)
        elif scheme_name in ("kgw", "gumbel"):
            fail(f"scheme {scheme_name} is keyed per account: pass --keys ACCOUNTS and --secret FILE")
        result = detect_records(
            records,
            scheme,
            ring=ring,
            alpha=alpha,
            correction=cast("Correction", correction),
            dedup=dedup,
            exclude_prompt=exclude_prompt,
        )
    except (SchemeError, WatermarkKeyError) as exc:
        fail(str(exc))

    table = Table(
        title=f"{result['records']} records, {result['tokens']} tokens, {result['keys_tested']} key(s)"
    )
    table.add_column("record")
    table.add_column("scored", justify="right")
    table.add_column("p-value", justify="right")
    table.add_column("z / implicated")
    for row in result["per_record"][:50]:
        extra = ", ".join(row["implicated"]) if "implicated" in row else f"{row['z']:.3f}"
        table.add_row(row["id"], str(row["tokens_scored"]), f"{row['p_value']:.3g}", extra)
    console.print(table)
    pooled = result["pooled"]
    pooled_p = pooled.get("family_p_value", pooled.get("p_value"))
    console.print(
        f"pooled: {pooled['tokens_scored']} windows scored, p = {pooled_p:.3g}; "
        f"{result['detected_records']} of {result['records']} records at alpha {alpha:g}"
        + (f"; implicated: {', '.join(result['implicated']) or 'none'}" if ring is not None else "")
    )
    if json_out is not None:
        _write_json(result, json_out)


def _write_json(result: dict[str, Any], json_out: Path) -> None:
    """The result as indented JSON to `json_out` (`-`: standard output)."""
    data = orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    if str(json_out) == "-":
        sys.stdout.write(data.decode() + "\n")
    else:
        json_out.write_bytes(data + b"\n")


@forensics_app.command("lexical-detect")
def lexical_detect_cmd(
    file: Path = typer.Argument(..., help="JSONL of records with `text` (and optionally `prompt`)."),
    keys: Path = typer.Option(..., "--keys", help="Account ids to test, one a line."),
    secret: Path | None = typer.Option(
        None, "--secret", help="Provider secret file (default: env DISTILLGUARD_WATERMARK_SECRET)."
    ),
    alpha: float = typer.Option(1e-3, "--alpha", help="Family-wise significance level (Holm)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON ('-' for stdout)."),
) -> None:
    """Test texts for the post-hoc lexical (synonym) watermark and name the accounts whose mark is present."""
    import numpy as np

    from distillguard.forensics.keys import KeyRing, ProviderSecret, WatermarkKeyError
    from distillguard.forensics.lexical import LexicalDetector, attribute_lexical
    from distillguard.forensics.scheme import SchemeError

    if not file.is_file():
        fail(f"input file not found: {file}")
    if not keys.is_file():
        fail(f"keys file not found: {keys}")
    try:
        rows = [orjson.loads(ln) for ln in file.read_bytes().splitlines() if ln.strip()]
    except orjson.JSONDecodeError as exc:
        fail(f"{file}: not JSONL: {exc}")
    texts = [r.get("text") if isinstance(r, dict) else None for r in rows]
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        fail(f"{file}: record {bad + 1} has no string `text`")
    accounts = [a.strip() for a in keys.read_text(encoding="utf-8").splitlines() if a.strip()]
    try:
        ring = KeyRing.derive(ProviderSecret.load(secret), accounts)
        det = LexicalDetector()
        # slots whose (previous word, set) coin occurs in the record's prompt are not scored
        excl = [det.windows(r["prompt"]) if isinstance(r.get("prompt"), str) else None for r in rows]
        per = [
            attribute_lexical(t, ring, alpha=alpha, exclude=e)  # type: ignore[arg-type]
            for t, e in zip(texts, excl, strict=True)
        ]
        pooled_ex = [e for e in excl if e is not None]
        pooled = attribute_lexical(
            texts,  # type: ignore[arg-type]
            ring,
            alpha=alpha,
            exclude=np.concatenate(pooled_ex) if pooled_ex else None,
        )
    except (SchemeError, WatermarkKeyError) as exc:
        fail(str(exc))
    result = {
        "scheme": "lexical",
        "records": len(texts),
        "keys_tested": len(ring),
        "alpha": alpha,
        "pooled": pooled.to_dict(),
        "implicated": pooled.implicated,
        "per_record": [
            {
                "id": str(r.get("id", i + 1)),
                "slots_scored": a.n_scored,
                "p_value": a.family_p_value,
                "implicated": a.implicated,
            }
            for i, (r, a) in enumerate(zip(rows, per, strict=True))
        ],
    }
    console.print(
        f"lexical: {len(texts)} records, {pooled.n_scored} slots scored, {len(ring)} keys; "
        f"pooled p = {pooled.family_p_value:.3g}; implicated: {', '.join(pooled.implicated) or 'none'}"
    )
    if json_out is not None:
        _write_json(result, json_out)


# radioactivity: did a suspect model learn from our watermarked outputs (forensics/suspect.py)
from distillguard.forensics.suspect import test_cmd  # noqa: E402

forensics_app.command("test")(test_cmd)


@forensics_app.command("markllm-table")
def markllm_table(
    directory: Path = typer.Option(..., "--dir", help="Directory of green-list tables (302 MB each)."),
    seeding: str = typer.Option("markllm", "--seeding", help="markllm (MarkLLM 0.1.5) or simple_1."),
    hash_key: int = typer.Option(15485863, "--hash-key", help="The toolkit's hash key."),
    vocab_size: int = typer.Option(49_152, "--vocab-size", help="The tokenizer's vocabulary size."),
    gamma: float = typer.Option(0.25, "--gamma", help="Green-list fraction."),
) -> None:
    """Precompute every green list of a MarkLLM / lm-watermarking KGW configuration (needs torch).

    Detection with `--param table_dir=DIR` then never builds a permutation: every lookup is warm.
    """
    import time

    from distillguard.forensics.markllm import MarkLLMKGW
    from distillguard.forensics.scheme import SchemeError

    if seeding not in ("markllm", "simple_1"):
        fail(f"--seeding must be markllm or simple_1, got {seeding!r}")
    try:
        scheme = MarkLLMKGW(
            vocab_size=vocab_size,
            gamma=gamma,
            hash_key=hash_key,
            seeding=cast("Seeding", seeding),
            table_dir=directory,
        )
        t0 = time.perf_counter()
        built = scheme.build_table()
    except SchemeError as exc:
        fail(str(exc))
    console.print(f"built {built} green lists in {time.perf_counter() - t0:.1f}s under {directory}")
