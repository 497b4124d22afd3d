"""What a report shows, aggregated from a scan's output directory with DuckDB.

Every table here is small by construction (top-N plus "(other)", histogram bins, a bounded number of
campaigns and graph nodes): the raw exchanges never leave SQL, so a report of a 1M-exchange scan is as
small as one of a thousand. Prompt text is never selected; the capability mix reads prompts inside the
query and returns only counts per topic.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.config import Config
from distillguard.detect.evidence import LEVELS
from distillguard.detect.signals.coverage import TOPICS
from distillguard.report.forensics import ForensicsReport, load_forensics
from distillguard.store.engine import sql_str

OTHER = "(other)"
NONE = "(none)"
# Dimension label -> exchange column, for the volume-over-time plots.
DIMENSIONS: dict[str, str] = {
    "account": "account_id",
    "organisation": "org_id",
    "model": "model",
    "jurisdiction": "country",
}
# Bucket widths tried in order: the first giving at most MAX_BUCKETS buckets over the log's span wins.
BUCKETS: tuple[tuple[str, int], ...] = (
    ("5 minutes", 300),
    ("15 minutes", 900),
    ("1 hour", 3600),
    ("6 hours", 21600),
    ("1 day", 86400),
    ("7 days", 604800),
    ("30 days", 2592000),
)
MAX_BUCKETS = 200
SCORE_BINS = 50
CAPABILITY_SAMPLE = 20_000  # exchanges sampled for the whole-traffic topic mix (members are counted exactly)


class ReportError(ValueError):
    """The directory is not a readable scan output (names the file at fault)."""


@dataclass
class Options:
    top_n: int = 8  # series per volume plot before "(other)"
    top_accounts: int = 25
    campaigns: int = 12  # campaigns drawn in the graph and the capability mix
    graph_accounts: int = 60  # accounts per campaign in the graph (the busiest)
    graph_attributes: int = 40  # shared IPs / ASNs / templates per campaign in the graph
    labels: Path | None = None  # labels CSV: FPR measured on this scan's benign accounts


@dataclass
class ReportData:
    scan_dir: Path
    summary: dict[str, Any]
    levels: dict[str, float]
    fpr: dict[str, float] | None  # level -> benign FPR at its threshold
    fpr_source: str | None
    bucket: str
    tables: dict[str, pa.Table] = field(default_factory=dict)
    forensics: ForensicsReport | None = None

    def rows(self, name: str) -> list[dict[str, Any]]:
        return self.tables[name].to_pylist() if name in self.tables else []


def load(scan_dir: Path, opts: Options | None = None) -> ReportData:
    """Aggregate everything the report shows from `scan_dir` (the `--out` of `distillguard scan`)."""
    opts = opts or Options()
    for name in ("accounts.parquet", "exchanges.parquet", "summary.json"):
        if not (scan_dir / name).exists():
            raise ReportError(f"{scan_dir} holds no scan output: {name} is missing (run `distillguard scan`)")
    summary = _read_json(scan_dir / "summary.json")
    if not isinstance(summary, dict):
        raise ReportError(f"{scan_dir / 'summary.json'}: expected a JSON object")
    con = duckdb.connect()
    try:
        con.execute(
            f"CREATE VIEW x AS SELECT * FROM read_parquet({sql_str(str(scan_dir / 'exchanges.parquet'))})"
        )
        con.execute(
            f"CREATE VIEW a AS SELECT * FROM read_parquet({sql_str(str(scan_dir / 'accounts.parquet'))})"
        )
        levels = _levels(summary)
        fpr, fpr_source = _fpr(con, summary, levels, opts.labels)
        span = _one(con, "SELECT epoch(max(ts)) - epoch(min(ts)) FROM x")[0]
        bucket = _bucket(float(span or 0.0))
        data = ReportData(scan_dir, summary, levels, fpr, fpr_source, bucket)
        t = data.tables
        t["overview"] = _overview(con, summary)
        for dim, col in DIMENSIONS.items():
            t[f"volume_by_{dim}"] = _volume(con, col, bucket, opts.top_n)
        t["score_histogram"] = _histogram(con)
        t["levels"] = pa.table(
            {
                "level": list(levels),
                "threshold": [levels[k] for k in levels],
                "benign_fpr": [None if fpr is None else fpr.get(k) for k in levels],
                "accounts_at_or_above": [
                    int(_one(con, f"SELECT count(*) FROM a WHERE score >= {levels[k]!r}")[0]) for k in levels
                ],
            }
        )
        t["top_accounts"], t["account_evidence"] = _top_accounts(con, opts.top_accounts)
        camps = _campaigns(scan_dir)
        t["campaigns"], t["campaign_evidence"] = _campaign_tables(camps)
        shown = camps[: opts.campaigns]
        members = pa.table(
            {
                "campaign_id": [c["campaign_id"] for c in shown for _ in c["accounts"]],
                "account_id": [a for c in shown for a in c["accounts"]],
            },
            schema=pa.schema([("campaign_id", pa.string()), ("account_id", pa.string())]),
        )
        con.register("m", members)
        t["campaign_graph"] = _graph_edges(con, scan_dir, opts)
        t["capability_mix"] = _capability_mix(con, bool(len(shown)))
        t["intel_sightings"], t["intel_evidence"] = _intel(con, scan_dir)
    finally:
        con.close()
    data.forensics = load_forensics(scan_dir)
    if data.forensics is not None:
        t["forensics"] = data.forensics.table()
    return data


def write_tables(data: ReportData, out: Path) -> list[Path]:
    """Every table as `<name>.json` (a list of records) and `<name>.csv`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in data.tables.items():
        rows = table.to_pylist()
        js = out / f"{name}.json"
        js.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str))
        cp = out / f"{name}.csv"
        with open(cp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(table.column_names)
            for r in rows:
                w.writerow(
                    [
                        "" if v is None else (v.isoformat() if isinstance(v, datetime) else v)
                        for v in r.values()
                    ]
                )
        written += [js, cp]
    return written


# -- pieces -------------------------------------------------------------------------------------------


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    """The single row of an aggregate query (fetched whole, so the connection is free for the next one)."""
    rows = con.sql(sql).fetchall()
    return tuple(rows[0]) if rows else ()


def _read_json(p: Path) -> Any:
    try:
        return orjson.loads(p.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ReportError(f"{p}: not valid JSON ({e})") from None


def _levels(summary: dict[str, Any]) -> dict[str, float]:
    """Verdict thresholds: as the scan's summary states them, else the default config's."""
    cal = summary.get("calibration") or {}
    stated = cal.get("levels") or {}
    default = dict(Config().scoring.levels)
    return {k: float(stated.get(k, {}).get("threshold", default[k])) for k in LEVELS[1:]}


def _fpr(
    con: duckdb.DuckDBPyConnection, summary: dict[str, Any], levels: dict[str, float], labels: Path | None
) -> tuple[dict[str, float] | None, str | None]:
    """Benign FPR of each threshold: measured on this scan's labelled benign accounts when labels are
    given, else the benign reference the scan was calibrated with; None when neither exists."""
    if labels is not None:
        if not labels.exists():
            raise ReportError(f"labels file {labels} not found")
        con.execute(
            f"CREATE VIEW lab AS SELECT * FROM read_csv({sql_str(str(labels))}, header=true, all_varchar=true)"
        )
        cols = {r[0] for r in con.execute("DESCRIBE lab").fetchall()}
        if not {"account_id", "label"} <= cols:
            raise ReportError(
                f"{labels}: expected columns account_id and label, found {', '.join(sorted(cols))}"
            )
        sql = "SELECT count(*), " + ", ".join(
            f"avg(CASE WHEN a.score >= {levels[k]!r} THEN 1.0 ELSE 0.0 END)" for k in levels
        )
        row = _one(con, sql + " FROM a JOIN lab USING (account_id) WHERE lab.label = 'benign'")
        n = int(row[0] or 0)
        if n == 0:
            raise ReportError(f"{labels}: no benign account of the scan is labelled (label = benign)")
        return (
            {k: float(v) for k, v in zip(levels, row[1:], strict=True)},
            f"{n} benign accounts of this scan labelled by {labels.name}",
        )
    cal = summary.get("calibration")
    if cal and cal.get("levels"):
        return (
            {k: float(v["benign_fpr"]) for k, v in cal["levels"].items() if k in levels},
            f"benign reference: {cal.get('source', 'unknown')} ({cal.get('n_benign', '?')} accounts)",
        )
    return None, None


def _bucket(span_s: float) -> str:
    for name, width in BUCKETS:
        if span_s / width <= MAX_BUCKETS:
            return name
    return BUCKETS[-1][0]


def _overview(con: duckdb.DuckDBPyConnection, summary: dict[str, Any]) -> pa.Table:
    row = _one(
        con,
        "SELECT count(*), count(DISTINCT account_id), count(DISTINCT org_id), count(DISTINCT model), "
        "count(DISTINCT country), sum(coalesce(prompt_tokens, 0)), sum(coalesce(completion_tokens, 0)), "
        "min(ts), max(ts) FROM x",
    )
    names = ["exchanges", "accounts", "organisations", "models", "jurisdictions", "prompt_tokens",
             "completion_tokens", "first_seen", "last_seen"]  # fmt: skip
    vals: list[Any] = list(row)
    verdicts = summary.get("verdicts") or {}
    for k in ("block", "suspect", "watch", "ok"):
        names.append(f"verdict_{k}")
        vals.append(int(verdicts.get(k, 0)))
    names += ["campaigns", "quarantined"]
    vals += [int(summary.get("campaigns", 0)), int(summary.get("quarantined", 0))]
    return pa.table(
        {"metric": names, "value": [_stamp(v) if isinstance(v, datetime) else str(int(v or 0)) for v in vals]}
    )


def _stamp(v: datetime) -> str:
    return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _volume(con: duckdb.DuckDBPyConnection, col: str, bucket: str, top_n: int) -> pa.Table:
    """Exchanges and tokens per time bucket for the top-N values of `col` (by exchanges) and "(other)"."""
    key = f"coalesce(CAST(x.{col} AS VARCHAR), {sql_str(NONE)})"
    return con.sql(
        f"""
        WITH top AS (
          SELECT {key} AS k, count(*) AS n FROM x GROUP BY 1 ORDER BY n DESC, k LIMIT {int(top_n)}
        )
        SELECT time_bucket(INTERVAL '{bucket}', x.ts) AS t,
               coalesce(top.k, {sql_str(OTHER)}) AS key,
               count(*) AS exchanges,
               sum(coalesce(x.prompt_tokens, 0) + coalesce(x.completion_tokens, 0)) AS tokens
        FROM x LEFT JOIN top ON {key} = top.k
        GROUP BY 1, 2 ORDER BY 1, 2
        """
    ).to_arrow_table()


def _histogram(con: duckdb.DuckDBPyConnection) -> pa.Table:
    return con.sql(
        f"""
        SELECT least(floor(score * {SCORE_BINS}), {SCORE_BINS - 1}) / {SCORE_BINS} AS bin_lo,
               verdict, count(*) AS accounts
        FROM a GROUP BY 1, 2 ORDER BY 1, 2
        """
    ).to_arrow_table()


def _top_accounts(con: duckdb.DuckDBPyConnection, k: int) -> tuple[pa.Table, pa.Table]:
    top = con.sql(
        f"""
        WITH t AS (SELECT * FROM a ORDER BY score DESC, account_id LIMIT {int(k)}),
        v AS (
          SELECT account_id, any_value(org_id) AS org_id, count(*) AS exchanges,
                 sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) AS tokens,
                 count(DISTINCT model) AS models, min(ts) AS first_seen, max(ts) AS last_seen
          FROM x WHERE account_id IN (SELECT account_id FROM t) GROUP BY 1
        )
        SELECT t.account_id, t.score, t.verdict, t.own_score, t.campaign_id, v.org_id, v.exchanges,
               v.tokens, v.models, v.first_seen, v.last_seen, t.evidence
        FROM t LEFT JOIN v USING (account_id) ORDER BY t.score DESC, t.account_id
        """
    ).to_arrow_table()
    ev_rows: dict[str, list[Any]] = {
        c: [] for c in ("account_id", "signal", "value", "threshold", "weight", "detail")
    }
    for acc, raw in zip(
        top.column("account_id").to_pylist(), top.column("evidence").to_pylist(), strict=True
    ):
        for e in orjson.loads(raw or "[]"):
            ev_rows["account_id"].append(acc)
            for c in ("signal", "value", "threshold", "weight", "detail"):
                ev_rows[c].append(e.get(c))
    evidence = pa.table(
        ev_rows,
        schema=pa.schema(
            [("account_id", pa.string()), ("signal", pa.string()), ("value", pa.float64()),
             ("threshold", pa.float64()), ("weight", pa.float64()), ("detail", pa.string())]
        ),
    )  # fmt: skip
    return top.drop_columns(["evidence"]), evidence


def _campaigns(scan_dir: Path) -> list[dict[str, Any]]:
    p = scan_dir / "campaigns.json"
    if not p.exists():
        return []
    camps = _read_json(p)
    if not isinstance(camps, list):
        raise ReportError(f"{p}: expected a JSON list of campaigns")
    for i, c in enumerate(camps):
        for f in ("campaign_id", "score", "accounts"):
            if f not in c:
                raise ReportError(f"{p}: campaign #{i} has no field {f!r}")
    return sorted(camps, key=lambda c: (-float(c["score"]), str(c["campaign_id"])))


def _campaign_tables(camps: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    table = pa.table(
        {
            "campaign_id": [c["campaign_id"] for c in camps],
            "score": [float(c["score"]) for c in camps],
            "verdict": [c.get("verdict", "") for c in camps],
            "n_accounts": [int(c.get("n_accounts", len(c["accounts"]))) for c in camps],
            "n_exchanges": [int(c.get("n_exchanges", 0)) for c in camps],
            "links": ["; ".join(f"{k}:{v}" for k, v in (c.get("links") or {}).items()) for c in camps],
        },
        schema=pa.schema(
            [("campaign_id", pa.string()), ("score", pa.float64()), ("verdict", pa.string()),
             ("n_accounts", pa.int64()), ("n_exchanges", pa.int64()), ("links", pa.string())]
        ),
    )  # fmt: skip
    ev = [(c["campaign_id"], e) for c in camps for e in c.get("evidence") or []]
    evidence = pa.table(
        {
            "campaign_id": [c for c, _ in ev],
            **{k: [e.get(k) for _, e in ev] for k in ("signal", "value", "threshold", "weight", "detail")},
        },
        schema=pa.schema(
            [("campaign_id", pa.string()), ("signal", pa.string()), ("value", pa.float64()),
             ("threshold", pa.float64()), ("weight", pa.float64()), ("detail", pa.string())]
        ),
    )  # fmt: skip
    return table, evidence


def _graph_edges(con: duckdb.DuckDBPyConnection, scan_dir: Path, opts: Options) -> pa.Table:
    """Account -> shared attribute edges of the drawn campaigns: IPs, ASNs and prompt templates used by
    2+ member accounts (an address only one member uses links nobody, so it is left out)."""
    skel = scan_dir / "skeletons.parquet"
    template_sql = ""
    if skel.exists():
        template_sql = f"""
          UNION ALL
          SELECT acc.campaign_id, s.account_id, 'template' AS kind,
                 'template ' || CAST(s.cluster AS VARCHAR) AS node, CAST(sum(s.cnt) AS BIGINT) AS n
          FROM read_parquet({sql_str(str(skel))}) s JOIN acc USING (account_id)
          WHERE s.cluster >= 0 GROUP BY 1, 2, 3, 4"""
    return con.sql(
        f"""
        WITH busy AS (
          SELECT m.campaign_id, m.account_id, count(*) AS n,
                 row_number() OVER (PARTITION BY m.campaign_id ORDER BY count(*) DESC, m.account_id) AS r
          FROM x JOIN m USING (account_id) GROUP BY 1, 2
        ),
        acc AS (SELECT campaign_id, account_id FROM busy WHERE r <= {int(opts.graph_accounts)}),
        e AS (
          SELECT acc.campaign_id, x.account_id, 'ip' AS kind, x.client_ip AS node, count(*) AS n
          FROM x JOIN acc USING (account_id) WHERE x.client_ip IS NOT NULL GROUP BY 1, 2, 3, 4
          UNION ALL
          SELECT acc.campaign_id, x.account_id, 'asn', 'AS' || CAST(x.asn AS VARCHAR), count(*)
          FROM x JOIN acc USING (account_id) WHERE x.asn IS NOT NULL GROUP BY 1, 2, 3, 4
          {template_sql}
        ),
        shared AS (
          SELECT campaign_id, kind, node, count(DISTINCT account_id) AS accounts,
                 row_number() OVER (PARTITION BY campaign_id ORDER BY count(DISTINCT account_id) DESC, kind, node) AS r
          FROM e GROUP BY 1, 2, 3 HAVING count(DISTINCT account_id) >= 2
        )
        SELECT e.campaign_id, e.account_id, e.kind, e.node, e.n AS exchanges
        FROM e JOIN shared USING (campaign_id, kind, node)
        WHERE shared.r <= {int(opts.graph_attributes)}
        ORDER BY 1, 3, 4, 2
        """
    ).to_arrow_table()


def _capability_mix(con: duckdb.DuckDBPyConnection, any_campaign: bool) -> pa.Table:
    """Share of each campaign's prompts per capability topic (the taxonomy the coverage signal uses),
    beside the whole traffic's mix from a fixed-seed sample. Only counts come out of the query."""
    topic = (
        "CASE "
        + " ".join(
            f"WHEN regexp_matches(left(lower(coalesce(prompt, '')), 1500), {sql_str(pat)}) THEN '{k}'"
            for k, pat in TOPICS.items()
        )
        + " ELSE 'other' END"
    )
    parts = [
        f"""SELECT 'all traffic (sample)' AS campaign_id, {topic} AS topic, count(*) AS exchanges
            FROM (SELECT prompt FROM x USING SAMPLE reservoir({CAPABILITY_SAMPLE} ROWS) REPEATABLE (7)) GROUP BY 1, 2"""
    ]
    if any_campaign:
        parts.insert(
            0,
            f"""SELECT m.campaign_id, {topic} AS topic, count(*) AS exchanges
                FROM x JOIN m USING (account_id) GROUP BY 1, 2""",
        )
    return con.sql(
        f"""
        WITH c AS ({" UNION ALL ".join(parts)})
        SELECT campaign_id, topic, exchanges, exchanges / sum(exchanges) OVER (PARTITION BY campaign_id) AS share
        FROM c ORDER BY campaign_id = 'all traffic (sample)', campaign_id, topic
        """
    ).to_arrow_table()


def _intel(con: duckdb.DuckDBPyConnection, scan_dir: Path) -> tuple[pa.Table, pa.Table]:
    p = scan_dir / "intel_sightings.parquet"
    sight = pq.read_table(p) if p.exists() else pa.table({"indicator_id": pa.array([], pa.string())})
    ev = con.execute(
        'SELECT account_id, score, verdict, evidence FROM a WHERE evidence LIKE \'%"signal":"intel.%\' '
        "ORDER BY score DESC, account_id"
    ).fetchall()
    rows: dict[str, list[Any]] = {
        c: [] for c in ("account_id", "score", "signal", "value", "indicator", "detail")
    }
    for acc, score, _verdict, raw in ev:
        for e in orjson.loads(raw or "[]"):
            if str(e.get("signal", "")).startswith("intel."):
                rows["account_id"].append(acc)
                rows["score"].append(score)
                for c in ("signal", "value", "indicator", "detail"):
                    rows[c].append(e.get(c))
    evidence = pa.table(
        rows,
        schema=pa.schema(
            [("account_id", pa.string()), ("score", pa.float64()), ("signal", pa.string()),
             ("value", pa.float64()), ("indicator", pa.string()), ("detail", pa.string())]
        ),
    )  # fmt: skip
    return sight, evidence
