"""Query engines: the scan's SQL is written once and run by DuckDB (embedded) or Spark (scale-out).

SQL text uses a few dialect macros, written `{name(args)}` and expanded per engine by `render`, for the
handful of functions whose names differ (regular expressions, hashing, epoch seconds). Everything else
is the common subset both engines accept: CTEs, GROUP BY, window functions, CASE, count(DISTINCT).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pyarrow as pa

Macro = Callable[..., str]

_DUCKDB: dict[str, Macro] = {
    # RE2 on both sides of a pattern; patterns use the RE2/Java common subset ((?i), \b, classes).
    "rx": lambda col, pat: f"regexp_matches({col}, {pat})",
    "rxr": lambda col, pat, rep: f"regexp_replace({col}, {pat}, {rep}, 'g')",
    # md5 in both engines, so keys (and the samples drawn by them) are identical across engines.
    "hash": lambda x: f"md5({x})",
    "epoch": lambda ts: f"(epoch_us({ts}) / 1e6)",
    "hour": lambda ts: f"hour({ts})",
    "day": lambda ts: f"CAST(date_trunc('day', {ts}) AS DATE)",
    "argmax": lambda x, by: f"arg_max({x}, {by})",
    # one row per line of a text (a generator in the select list), and a text's first line
    "lines": lambda x: f"unnest(string_split({x}, chr(10)))",
    # (split_part would split the whole text into a list first: ~5x slower on long answers)
    "first_line": lambda x: (
        f"CASE WHEN strpos({x}, chr(10)) > 0 THEN left({x}, strpos({x}, chr(10)) - 1) ELSE {x} END"
    ),
}

# -- Spark: the same patterns, spelled so java.util.regex reads them as RE2 does --------------------
# On the subset the signals use, RE2 (DuckDB) and java.util.regex (Spark) differ in these places, each
# of which changes whether some real prompt matches, so the Spark macros translate the pattern literal:
#   \b \B      Java before 19 takes word characters at a boundary to be Unicode letters and digits
#              (RE2: ASCII [0-9A-Za-z_]), so "用python写" has no \b before "python" on Java 17:
#              spelled out as lookarounds on \w, which is ASCII in both.
#   \s \S      Java's \s also matches \x0B (vertical tab), RE2's does not: spelled out.
#   . $        Java also ends lines at \r, \u0085, \u2028 and \u2029, and its $ matches before a final
#              line break: (?d) keeps \n the only line break, and $ (outside (?m)) becomes \z.
#   (?i)       ASCII-only in Java: (?u) folds case over Unicode as RE2 does (s/ſ, k/K).
#   '          With escaped string literals Spark keeps '' as two quotes: written \x27 instead, so the
#              rendered literal holds no quote at all (which also keeps `render`'s quote counting right).
#   [ & {      Java reads [ and && inside a class as union/intersection, and a { that starts no
#              repetition as an error; RE2 reads them as literals: escaped. [[:alpha:]] -> \p{Alpha}.
# Only a pattern written as a string literal can be translated; an expression is passed through.

_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'", re.S)
_JAVA_WORD_EDGE = r"(?:(?<=\w)(?!\w)|(?<!\w)(?=\w))"
_JAVA_NOT_WORD_EDGE = r"(?:(?<=\w)(?=\w)|(?<!\w)(?!\w))"
_RE2_SPACE = r"\t\n\f\r "
_REPETITION = re.compile(r"\{\d+(?:,\d*)?\}")
_MULTILINE_FLAG = re.compile(r"\(\?[a-zA-Z]*m[a-zA-Z-]*[:)]")
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")
_JAVA_POSIX = {
    "alnum": "Alnum", "alpha": "Alpha", "ascii": "ASCII", "blank": "Blank", "cntrl": "Cntrl",
    "digit": "Digit", "graph": "Graph", "lower": "Lower", "print": "Print", "punct": "Punct",
    "space": "Space", "upper": "Upper", "xdigit": "XDigit",
}  # fmt: skip


def _java_literal_char(c: str) -> str:
    """One character matched literally by a Java pattern (and never a quote)."""
    if c == "'":
        return r"\x27"
    return c if c.isalnum() or c == " " or ord(c) > 127 else "\\" + c


def java_regex(pat: str) -> str:
    """An RE2 pattern (as DuckDB reads it) rewritten for java.util.regex with the same matches."""
    out = ["(?du)"]
    multiline = _MULTILINE_FLAG.search(pat) is not None
    in_class = False
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "\\" and i + 1 < n:
            d = pat[i + 1]
            i += 2
            if d == "Q":  # \Q...\E: quoted text, re-escaped char by char so a quote can be spelled out
                end = pat.find("\\E", i)
                end = n if end < 0 else end
                out.extend(_java_literal_char(x) for x in pat[i:end])
                i = end + 2
            elif d in "bB" and not in_class:
                out.append(_JAVA_WORD_EDGE if d == "b" else _JAVA_NOT_WORD_EDGE)
            elif d == "s":
                out.append(_RE2_SPACE if in_class else f"[{_RE2_SPACE}]")
            elif d == "S":
                out.append(f"[^{_RE2_SPACE}]")  # inside a class: a nested class, Java's union
            else:
                out.append(c + d)
            continue
        if in_class:
            posix = _POSIX_CLASS.match(pat, i)
            if posix:
                neg, name = posix.groups()
                if name == "word":
                    out.append(r"\W" if neg else r"\w")
                else:
                    out.append(("\\P{" if neg else "\\p{") + _JAVA_POSIX.get(name, name) + "}")
                i = posix.end()
                continue
            if c == "]":
                in_class = False
                out.append(c)
            elif c in "[&":
                out.append("\\" + c)
            else:
                out.append(r"\x27" if c == "'" else c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if pat.startswith("^", i):
                out.append("^")
                i += 1
            if pat.startswith("]", i):  # a leading ] is a literal in RE2
                out.append("\\]")
                i += 1
            continue
        if c == "$" and not multiline:
            out.append(r"\z")
        elif c == "{" and not _REPETITION.match(pat, i):
            out.append("\\{")
        elif c == "'":
            out.append(r"\x27")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def java_replacement(rep: str) -> str:
    """An RE2 rewrite string (\\1 for a group) as a java.util.regex replacement ($1 for a group)."""
    out: list[str] = []
    i = 0
    while i < len(rep):
        c = rep[i]
        if c == "\\" and i + 1 < len(rep):
            d = rep[i + 1]
            out.append("$" + d if d.isdigit() else "\\" + d)
            i += 2
            continue
        out.append("\\$" if c == "$" else c)
        i += 1
    return "".join(out)


def _spark_pattern(pat: str) -> str:
    if not _SQL_LITERAL.fullmatch(pat):
        return pat
    return "'" + java_regex(pat[1:-1].replace("''", "'")) + "'"


def _spark_replacement(rep: str) -> str:
    if not _SQL_LITERAL.fullmatch(rep):
        return rep
    parts = java_replacement(rep[1:-1].replace("''", "'")).split("'")
    if len(parts) == 1:
        return "'" + parts[0] + "'"
    return "concat(" + ", chr(39), ".join(f"'{p}'" for p in parts) + ")"


_SPARK: dict[str, Macro] = {
    "rx": lambda col, pat: f"({col} RLIKE {_spark_pattern(pat)})",
    "rxr": lambda col, pat, rep: f"regexp_replace({col}, {_spark_pattern(pat)}, {_spark_replacement(rep)})",
    "hash": lambda x: f"md5({x})",
    "epoch": lambda ts: f"(unix_micros({ts}) / 1e6)",
    "hour": lambda ts: f"hour({ts})",
    "day": lambda ts: f"to_date({ts})",
    "argmax": lambda x, by: f"max_by({x}, {by})",
    "lines": lambda x: f"explode(split({x}, chr(10)))",
    "first_line": lambda x: f"substring_index({x}, chr(10), 1)",
}
DIALECTS: dict[str, dict[str, Macro]] = {"duckdb": _DUCKDB, "spark": _SPARK}

_MACRO_START = re.compile(r"\{(\w+)\(")


def _scan_args(sql: str, i: int) -> tuple[list[str], int]:
    """Arguments of a macro whose "(" ends at i: split on top-level commas; returns (args, index of "}")."""
    args: list[str] = []
    cur: list[str] = []
    depth, quote = 0, False
    while i < len(sql):
        c = sql[i]
        if quote:
            cur.append(c)
            if c == "'":
                if i + 1 < len(sql) and sql[i + 1] == "'":
                    cur.append("'")
                    i += 1
                else:
                    quote = False
        elif c == "'":
            quote = True
            cur.append(c)
        elif c == "(":
            depth += 1
            cur.append(c)
        elif c == ")" and depth == 0:
            args.append("".join(cur).strip())
            if i + 1 >= len(sql) or sql[i + 1] != "}":
                raise ValueError(f"unterminated macro near {sql[max(0, i - 40) : i + 2]!r}")
            return args, i + 1
        elif c == ")":
            depth -= 1
            cur.append(c)
        elif c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    raise ValueError("unterminated macro")


def _in_quote(sql: str, pos: int) -> bool:
    """True when pos lies inside a single-quoted SQL string."""
    return sql.count("'", 0, pos) % 2 == 1


def render(sql: str, dialect: str) -> str:
    """Expand `{macro(args)}` for one dialect, innermost first, so macros may nest.

    The last macro start in the text has no macro inside its arguments, so expanding it first and
    repeating expands nested macros from the inside out. Braces inside SQL strings are left alone.
    """
    macros = DIALECTS[dialect]
    while True:
        starts = [m for m in _MACRO_START.finditer(sql) if not _in_quote(sql, m.start())]
        if not starts:
            return sql
        m = starts[-1]
        args, end = _scan_args(sql, m.end())
        sql = sql[: m.start()] + macros[m.group(1)](*args) + sql[end + 1 :]


def sql_str(s: str) -> str:
    """A SQL string literal (single quotes doubled; backslashes kept for regex use)."""
    return "'" + s.replace("'", "''") + "'"


class Engine(Protocol):
    """What the scan needs of an engine: tables from Parquet or Arrow, and SQL returning Arrow."""

    dialect: str

    def register_parquet(self, name: str, path: Path) -> None: ...

    def register_arrow(self, name: str, table: pa.Table) -> None: ...

    def create_view(self, name: str, sql: str) -> None:
        """A named view over SQL written with dialect macros."""
        ...

    def materialize(self, name: str, sql: str) -> None:
        """A named table holding the result of SQL written with dialect macros (computed once)."""
        ...

    def query(self, sql: str) -> pa.Table:
        """Run SQL written with dialect macros; return the result as an Arrow table."""
        ...

    def close(self) -> None: ...


# What `DuckDBEngine.release` leaves DuckDB: about the row table of a 1M-exchange log, so a scan of that
# size keeps its rows cached and a bigger one spills them rather than hold them beside the Python work.
RELEASE_KEEP = "512MB"


class DuckDBEngine:
    dialect = "duckdb"

    def __init__(
        self,
        threads: int | None = None,
        memory_limit: str | None = "1500MB",
        temp_directory: Path | None = None,
    ) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.memory_limit = memory_limit
        if threads:
            self.con.execute(f"SET threads={int(threads)}")
        if memory_limit:
            # Keeps peak RSS bounded on big logs: DuckDB spills to disk past this.
            self.con.execute(f"SET memory_limit='{memory_limit}'")
        if temp_directory is not None:
            # Where it spills (DuckDB's default is `.tmp` in the working directory); removed on close.
            self.con.execute(f"SET temp_directory={sql_str(str(temp_directory))}")
        # DuckDB rewrites `row_number() OVER (PARTITION BY g ...) <= N` into a top-N aggregate whose
        # per-group lists live outside the buffer pool and cannot spill: at 10M exchanges (44k accounts)
        # the skeleton sample alone then exhausts the memory limit. The window operator spills.
        self.con.execute("SET disabled_optimizers='top_n_window_elimination'")
        self.con.execute("SET preserve_insertion_order=false")
        # Our own progress display owns the terminal; DuckDB's bar would print into stdout.
        self.con.execute("SET enable_progress_bar=false")
        self.con.execute("SET TimeZone='UTC'")

    def register_parquet(self, name: str, path: Path) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({sql_str(str(path))})")

    def register_arrow(self, name: str, table: pa.Table) -> None:
        self.con.register(name, table)

    def create_view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {render(sql, self.dialect)}")

    def materialize(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {render(sql, self.dialect)}")

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(render(sql, self.dialect)).to_arrow_table()

    def release(self, keep: str = RELEASE_KEEP) -> None:
        """Shrink the buffer pool to `keep` (its pages of tables written to the temp directory if need
        be), then restore the memory limit: DuckDB otherwise holds on to a full pool, up to the limit,
        while the scan's own work (sketches, campaign graphs) needs the memory. Best effort."""
        import duckdb

        if not self.memory_limit:
            return
        try:
            self.con.execute(f"SET memory_limit='{keep}'")
        except duckdb.Error:
            pass  # pinned pages it could not evict: nothing is lost but the memory it keeps
        finally:
            self.con.execute(f"SET memory_limit='{self.memory_limit}'")

    def close(self) -> None:
        self.con.close()


def release_memory(engine: Engine) -> None:
    """Before memory-hungry work outside the engine: let an embedded engine give back what it caches."""
    if isinstance(engine, DuckDBEngine):
        engine.release()


def make_engine(name: str, temp_directory: Path | None = None) -> Engine:
    """An engine by name; `temp_directory` is where DuckDB spills (Spark has its own local dirs)."""
    if name == "duckdb":
        return DuckDBEngine(temp_directory=temp_directory)
    if name == "spark":
        from distillguard.store.spark import SparkEngine

        return SparkEngine()
    raise ValueError(f"unknown engine {name!r} (duckdb or spark)")
