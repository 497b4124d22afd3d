"""Dialect macros (`render`, the RE2 -> Java pattern translation) and the DuckDB engine.

These need neither Spark nor Java: they check the SQL text each dialect is given, and that DuckDB runs
it. That Spark gives the same answers as DuckDB is checked in test_spark.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.detect import features, skeletons
from distillguard.detect.campaigns import INFRA_SQL, SYNC_SQL
from distillguard.detect.signals.base import signals
from distillguard.exchange import ARROW_SCHEMA
from distillguard.store.engine import (
    DuckDBEngine,
    java_regex,
    java_replacement,
    make_engine,
    render,
    sql_str,
)

_LEFTOVER = re.compile(r"\{\w+\(")


def _quotes_balanced(sql: str) -> bool:
    return sql.count("'") % 2 == 0


# -- render -------------------------------------------------------------------------------------------


def test_render_leaves_plain_sql_alone() -> None:
    sql = "SELECT a, count(*) FROM t WHERE b = 'x' GROUP BY a"
    assert render(sql, "duckdb") == sql
    assert render(sql, "spark") == sql


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (
            "duckdb",
            "SELECT md5(x), (epoch_us(ts) / 1e6), hour(ts), CAST(date_trunc('day', ts) AS DATE) FROM t",
        ),
        ("spark", "SELECT md5(x), (unix_micros(ts) / 1e6), hour(ts), to_date(ts) FROM t"),
    ],
)
def test_render_simple_macros(dialect: str, expected: str) -> None:
    assert render("SELECT {hash(x)}, {epoch(ts)}, {hour(ts)}, {day(ts)} FROM t", dialect) == expected


def test_render_nested_macros_expand_inside_out() -> None:
    sql = "SELECT {hash({rxr(lower(coalesce(p, '')), 'a+', 'b')})} FROM t"
    assert (
        render(sql, "duckdb") == "SELECT md5(regexp_replace(lower(coalesce(p, '')), 'a+', 'b', 'g')) FROM t"
    )
    assert render(sql, "spark") == "SELECT md5(regexp_replace(lower(coalesce(p, '')), '(?du)a+', 'b')) FROM t"


def test_render_macro_arguments_with_commas_and_parentheses() -> None:
    sql = "{rx(concat(a, ',', b), 'x(,)y')}"
    assert render(sql, "duckdb") == "regexp_matches(concat(a, ',', b), 'x(,)y')"
    assert render(sql, "spark") == "(concat(a, ',', b) RLIKE '(?du)x(,)y')"


def test_render_leaves_macros_inside_string_literals_alone() -> None:
    sql = "SELECT '{hash(x)}' AS a, {hash(y)} AS b, 'it''s {epoch(t)}' AS c"
    assert render(sql, "duckdb") == "SELECT '{hash(x)}' AS a, md5(y) AS b, 'it''s {epoch(t)}' AS c"
    assert render(sql, "spark") == "SELECT '{hash(x)}' AS a, md5(y) AS b, 'it''s {epoch(t)}' AS c"


def test_render_quoted_braces_and_quotes_inside_a_macro_argument() -> None:
    # ")}" and "," inside the literal must not end the macro or split its arguments.
    sql = "{rx(txt, 'a)}b, c''d{2}')}"
    assert render(sql, "duckdb") == "regexp_matches(txt, 'a)}b, c''d{2}')"
    # Spark: the doubled quote becomes \x27 (no quote left inside the literal), {2} stays a repetition.
    assert render(sql, "spark") == r"(txt RLIKE '(?du)a)}b, c\x27d{2}')"


def test_render_errors() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        render("SELECT {hash(x) FROM t", "duckdb")
    with pytest.raises(ValueError, match="unterminated"):
        render("SELECT {hash(x)) FROM t", "duckdb")
    with pytest.raises(KeyError):
        render("SELECT {nope(x)} FROM t", "duckdb")
    with pytest.raises(KeyError):
        render("SELECT 1", "oracle")


def test_every_pipeline_query_renders_in_both_dialects() -> None:
    """No macro is left unexpanded and no literal is left open, whatever the dialect."""
    sigs = [cls() for cls in signals().values()]
    queries = [
        features.rows_sql(sigs, 0.0, 3600.0),
        features.rows_sql(sigs, 0.0, None, "exchanges"),
        features.aggregate_sql(sigs, "dg_rows"),
        features.aggregate_sql(sigs, "campaign_rows"),
        features.MODELS_SQL % "exchanges",
        features.LOG_START_SQL % "exchanges",
        skeletons.SAMPLE_SQL
        % {
            "skel": skeletons.skeleton_sql("lower(e.prompt)"),
            "sample": 64,
            "rows": "dg_rows",
            "source": "exchanges",
        },
        INFRA_SQL,
        SYNC_SQL % {"t0": 0.0},
        *(s.extra_sql.replace("{source}", "exchanges") for s in sigs if s.extra_sql),
    ]
    for sql in queries:
        for dialect in ("duckdb", "spark"):
            out = render(sql, dialect)
            assert not _LEFTOVER.search(out), (dialect, out)
            assert _quotes_balanced(out), (dialect, out)


# -- RE2 -> Java pattern translation ------------------------------------------------------------------

_EDGE = r"(?:(?<=\w)(?!\w)|(?<!\w)(?=\w))"


@pytest.mark.parametrize(
    ("re2", "java"),
    [
        ("abc", "(?du)abc"),
        (r"(?i)\bcode\b", rf"(?du)(?i){_EDGE}code{_EDGE}"),
        (r"\Bx", r"(?du)(?:(?<=\w)(?=\w)|(?<!\w)(?!\w))x"),
        (r"a\s+b\S", r"(?du)a[\t\n\f\r ]+b[^\t\n\f\r ]"),
        (r"[\s,]", r"(?du)[\t\n\f\r ,]"),
        (r"[\b]", r"(?du)[\b]"),  # \b in a class is not a boundary: left alone
        (r"\.[0-9]+$", r"(?du)\.[0-9]+\z"),
        (r"[$]\$", r"(?du)[$]\$"),
        (r"(?m)^a$", r"(?du)(?m)^a$"),
        ("let'?s", r"(?du)let\x27?s"),
        ("[^']+", r"(?du)[^\x27]+"),
        (r"[[:alpha:]][[:^digit:]][[:word:]]", r"(?du)[\p{Alpha}][\P{Digit}][\w]"),
        ("[a[b]", r"(?du)[a\[b]"),
        ("[a&&b]", r"(?du)[a\&\&b]"),
        ("[]a]", r"(?du)[\]a]"),
        ("[^]a]", r"(?du)[^\]a]"),
        ("a{2,3}b{4}c{5,}", "(?du)a{2,3}b{4}c{5,}"),
        ("a{b}", r"(?du)a\{b}"),
        (r"\Qa.'b\E+", r"(?du)a\.\x27b+"),
        (r"\\b", r"(?du)\\b"),  # an escaped backslash, then a plain b
        (r"\d+\.\w", r"(?du)\d+\.\w"),
    ],
)
def test_java_regex(re2: str, java: str) -> None:
    assert java_regex(re2) == java
    assert "'" not in java_regex(re2)


def test_java_regex_matches_like_re2_on_ascii() -> None:
    """On ASCII text the translation means what the RE2 pattern means (Python's re agrees with both)."""
    cases = {
        r"(?i)\bcode\b": ["code", "my Code here", "decode", "codes", "code_x"],
        r"\.[0-9]+$": ["1.2.3.4", "1.2.3.x"],
        r"a\s+b": ["a  b", "a\tb", "ab"],
    }
    for pat, texts in cases.items():
        java = java_regex(pat).replace("(?du)", "").replace(r"\z", r"\Z")
        for t in texts:
            assert bool(re.search(java, t, re.ASCII)) == bool(re.search(pat, t, re.ASCII)), (pat, t)


def test_java_replacement() -> None:
    assert java_replacement(".0/24") == ".0/24"
    assert java_replacement(r"<\1>") == "<$1>"
    assert java_replacement("$5") == r"\$5"
    assert java_replacement(r"a\\b") == r"a\\b"


def test_spark_replacement_with_a_quote_uses_chr() -> None:
    out = render("{rxr(s, 'x', 'it''s')}", "spark")
    assert out == "regexp_replace(s, '(?du)x', concat('it', chr(39), 's'))"


def test_spark_pattern_given_as_an_expression_is_passed_through() -> None:
    assert render("{rx(s, p.pattern)}", "spark") == "(s RLIKE p.pattern)"


# -- DuckDB engine ------------------------------------------------------------------------------------


@pytest.fixture
def duck() -> Iterator[DuckDBEngine]:
    eng = DuckDBEngine(threads=1)
    yield eng
    eng.close()


def _table() -> pa.Table:
    ts = [datetime(2026, 11, 1, 13, 30, tzinfo=UTC), datetime(2026, 11, 2, 1, 0, 0, 500000, tzinfo=UTC)]
    return pa.table(
        {
            "account_id": pa.array(["a", "b"]),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "prompt": pa.array(["Please think step by step", None], pa.large_string()),
        }
    )


def test_duckdb_register_arrow_and_query(duck: DuckDBEngine) -> None:
    duck.register_arrow("t", _table())
    out = duck.query(
        "SELECT account_id, {epoch(ts)} AS e, {hour(ts)} AS h, {day(ts)} AS d, {hash(account_id)} AS k, "
        "{rx(coalesce(prompt, ''), '(?i)step[- ]by[- ]step')} AS cot FROM t ORDER BY account_id"
    )
    assert isinstance(out, pa.Table)
    rows = out.to_pylist()
    assert [r["e"] for r in rows] == [1793539800.0, 1793581200.5]
    assert [r["h"] for r in rows] == [13, 1]
    assert [str(r["d"]) for r in rows] == ["2026-11-01", "2026-11-02"]
    assert rows[0]["k"] == "0cc175b9c0f1b6a831c399e269772661"  # md5('a')
    assert [r["cot"] for r in rows] == [True, False]


def test_duckdb_register_parquet_path_with_a_quote(duck: DuckDBEngine, tmp_path: Path) -> None:
    path = tmp_path / "it's" / "x.parquet"
    path.parent.mkdir()
    pq.write_table(_table(), path)
    duck.register_parquet("x", path)
    assert duck.query("SELECT count(*) AS n FROM x").column("n").to_pylist() == [2]


def test_duckdb_create_view_renders_macros_and_replaces(duck: DuckDBEngine) -> None:
    duck.register_arrow("t", _table())
    duck.create_view("v", "SELECT account_id, {hour(ts)} AS h FROM t")
    assert duck.query("SELECT h FROM v ORDER BY account_id").column("h").to_pylist() == [13, 1]
    duck.create_view("v", "SELECT account_id FROM t WHERE {rx(account_id, '^b$')}")
    assert duck.query("SELECT * FROM v").column("account_id").to_pylist() == ["b"]


def test_duckdb_register_arrow_replaces(duck: DuckDBEngine) -> None:
    duck.register_arrow("t", _table())
    duck.register_arrow("t", _table().slice(0, 1))
    assert duck.query("SELECT count(*) AS n FROM t").column("n").to_pylist() == [1]


def test_duckdb_runs_the_pipeline_queries_on_an_empty_log(duck: DuckDBEngine) -> None:
    duck.register_arrow("exchanges", ARROW_SCHEMA.empty_table())
    duck.register_arrow(
        "models", pa.table({"model": pa.array([], pa.string()), "first_t": pa.array([], pa.float64())})
    )
    sigs = [cls() for cls in signals().values()]
    duck.materialize("dg_rows", features.rows_sql(sigs, 0.0, None))
    assert duck.query(features.aggregate_sql(sigs, "dg_rows")).num_rows == 0
    sample = skeletons.SAMPLE_SQL % {
        "skel": skeletons.skeleton_sql("lower(e.prompt)"),
        "sample": 8,
        "rows": "dg_rows",
        "source": "exchanges",
    }
    assert duck.query(sample).num_rows == 0
    assert duck.query(INFRA_SQL).num_rows == 0


def test_sql_str() -> None:
    assert sql_str("it's") == "'it''s'"
    assert sql_str(r"\b") == r"'\b'"


def test_make_engine() -> None:
    eng = make_engine("duckdb")
    try:
        assert eng.dialect == "duckdb"
    finally:
        eng.close()
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("oracle")


# -- memory: the skeleton sample at scale, spilling, giving memory back -------------------------------------


def _exchanges(accounts: int, prompts: int) -> pa.Table:
    """`prompts` distinct prompts (distinct skeletons: the words differ, not only numbers) per account."""
    rows = [
        {
            "exchange_id": f"x{a}-{i}",
            "account_id": f"acct{a}",
            "ts": datetime(2026, 11, 1, tzinfo=UTC),
            "model": "m",
            "prompt": f"write a {'very ' * (i % 7)}short poem about topic {'abcdefghij'[i % 10]}{'z' * (i // 10)}",
        }
        for a in range(accounts)
        for i in range(prompts)
    ]
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)


def test_skeleton_sample_size_shrinks_only_past_the_budget() -> None:
    assert skeletons.sample_size(4_400, 64, 1_000_000) == 64  # a 1M-exchange log: unchanged
    assert skeletons.sample_size(44_000, 64, 1_000_000) == 22  # 10M: the budget shared out
    assert skeletons.sample_size(1_000_000, 64, 1_000_000) == skeletons.MIN_SAMPLE  # never below
    assert skeletons.sample_size(1_000_000, 8, 1_000_000) == 8  # nor above what was asked for
    assert skeletons.sample_size(10**9, 64, None) == 64


def test_templates_budget_takes_a_prefix_of_each_accounts_sample(duck: DuckDBEngine) -> None:
    """Under a budget each account keeps the first of the skeletons it would have kept (md5 order)."""
    duck.register_arrow("exchanges", _exchanges(3, 40))
    features.materialize_rows(duck, [cls() for cls in signals().values()])
    full = skeletons.templates(duck, sample=32)
    assert full.key is not None and len(full.cluster) == 3 * 32
    small = skeletons.templates(duck, sample=32, budget=48)  # 3 accounts x 32 > 48: 16 each
    assert small.key is not None and len(small.cluster) == 3 * skeletons.MIN_SAMPLE
    for acct in ("acct0", "acct1", "acct2"):
        keys = sorted(full.key[full.account_id == acct].tolist())
        assert sorted(small.key[small.account_id == acct].tolist()) == keys[: skeletons.MIN_SAMPLE]
    same = skeletons.templates(duck, sample=32, budget=3 * 32)  # exactly at the budget: unchanged
    assert same.key is not None and same.key.tolist() == full.key.tolist()


def test_duckdb_keeps_the_skeleton_sample_a_window(duck: DuckDBEngine) -> None:
    """DuckDB's top-N rewrite of `row_number() <= N` holds its per-group lists outside the buffer pool,
    where they cannot spill (it ran a 10M-exchange scan out of memory); the engine turns it off."""
    duck.register_arrow("exchanges", _exchanges(2, 5))
    features.materialize_rows(duck, [cls() for cls in signals().values()])
    sql = skeletons.SAMPLE_SQL % {
        "skel": skeletons.skeleton_sql("lower(e.prompt)"),
        "sample": 4,
        "rows": "dg_rows",
        "source": "exchanges",
    }
    plan = "\n".join(str(r[1]) for r in duck.con.sql("EXPLAIN " + render(sql, "duckdb")).fetchall())
    assert "WINDOW" in plan.upper()
    assert "arg_min" not in plan
    assert duck.query(sql).num_rows == 2 * 4


def test_duckdb_spills_into_its_temp_directory_and_release_gives_memory_back(tmp_path: Path) -> None:
    eng = DuckDBEngine(threads=1, memory_limit="64MB", temp_directory=tmp_path / "spill")
    try:
        eng.materialize("t", "SELECT range AS i, {hash(CAST(range AS VARCHAR))} AS k FROM range(2000000)")
        used = "SELECT sum(memory_usage_bytes) AS m, sum(temporary_storage_bytes) AS s FROM duckdb_memory()"
        assert eng.query(used).column("s")[0].as_py() > 0  # 2M md5 strings do not fit in 64 MB
        assert (tmp_path / "spill").is_dir()
        limit = "SELECT current_setting('memory_limit') AS v"
        before = eng.query(limit).column("v")[0].as_py()
        eng.release(keep="16MB")
        assert eng.query(used).column("m")[0].as_py() <= 16 << 20
        assert eng.query(limit).column("v")[0].as_py() == before  # restored
        assert eng.query("SELECT count(DISTINCT k) AS n FROM t").column("n")[0].as_py() == 2_000_000
    finally:
        eng.close()
    assert not (tmp_path / "spill").exists()  # DuckDB removes the directory it made
