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
    "epoch": lambda ts: f"epoch({ts})",
    "hour": lambda ts: f"hour({ts})",
    "day": lambda ts: f"CAST(date_trunc('day', {ts}) AS DATE)",
}
_SPARK: dict[str, Macro] = {
    "rx": lambda col, pat: f"({col} RLIKE {pat})",
    "rxr": lambda col, pat, rep: f"regexp_replace({col}, {pat}, {rep})",
    "hash": lambda x: f"md5({x})",
    "epoch": lambda ts: f"(CAST({ts} AS DOUBLE))",
    "hour": lambda ts: f"hour({ts})",
    "day": lambda ts: f"to_date({ts})",
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

    def query(self, sql: str) -> pa.Table:
        """Run SQL written with dialect macros; return the result as an Arrow table."""
        ...

    def close(self) -> None: ...


class DuckDBEngine:
    dialect = "duckdb"

    def __init__(self, threads: int | None = None, memory_limit: str | None = "1500MB") -> None:
        import duckdb

        self.con = duckdb.connect()
        if threads:
            self.con.execute(f"SET threads={int(threads)}")
        if memory_limit:
            # Keeps peak RSS bounded on big logs: DuckDB spills to disk past this.
            self.con.execute(f"SET memory_limit='{memory_limit}'")
        self.con.execute("SET preserve_insertion_order=false")
        self.con.execute("SET TimeZone='UTC'")

    def register_parquet(self, name: str, path: Path) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({sql_str(str(path))})")

    def register_arrow(self, name: str, table: pa.Table) -> None:
        self.con.register(name, table)

    def create_view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {render(sql, self.dialect)}")

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(render(sql, self.dialect)).to_arrow_table()

    def close(self) -> None:
        self.con.close()


def make_engine(name: str) -> Engine:
    if name == "duckdb":
        return DuckDBEngine()
    if name == "spark":
        from distillguard.store.spark import SparkEngine

        return SparkEngine()
    raise ValueError(f"unknown engine {name!r} (duckdb or spark)")
