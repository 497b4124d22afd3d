"""The Spark engine: the scan's SQL on a Spark session (local mode by default, a cluster when given one).

DuckDB is the default because it needs nothing but a pip install; Spark is for logs that outgrow one
machine. Both run the same SQL text (see `store.engine.render` for the few dialect macros), and the
session is configured so that the text means the same thing on both:

* `spark.sql.parser.escapedStringLiterals=true`: a backslash in a string literal stays a backslash, as
  in DuckDB's standard strings, so regex literals such as '\\b(code)\\b' reach the regex engine intact
  (by default Spark would unescape '\\b' to a backspace);
* `spark.sql.session.timeZone=UTC`: hours and days of `ts` are UTC, as in `DuckDBEngine`.

Regular expressions are the one place where the engines read the same text differently (RE2 against
java.util.regex); the Spark macros in `store.engine` translate each pattern literal (see the notes
there). Arrow crosses the Python/JVM boundary both ways (`createDataFrame(pa.Table)` and
`DataFrame.toArrow`, both PySpark 4), so pandas is not needed.

Known differences, left as they are because they cannot change a verdict on ordinary logs:

* `lower()` follows Java's full Unicode case mapping on Spark ("İ" -> "i̇", a word-final "Σ" -> "ς")
  and a simple one on DuckDB ("İ" -> "i", "Σ" -> "σ"). The patterns are ASCII, so matches are the same;
  a prompt skeleton holding these letters gets another md5 key, which can change which skeletons
  are sampled for an account with more than `skeleton_sample` distinct ones.
* Epoch seconds: Spark's `CAST(ts AS DOUBLE)` is micros / 1e6 correctly rounded, DuckDB's `epoch()`
  is an ulp away on about a fifth of timestamps; with sums of floats added in another order, the
  inter-arrival and span features agree to about 1e-12 relative, not bit for bit.
* java.util.regex backtracks where RE2 runs in linear time; the patterns read at most 6,000
  characters of a prompt (600 for skeletons), which keeps that bounded.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from distillguard.store.engine import render

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

INSTALL_HINT = "install the spark extra: pip install 'distillguard[spark]'"
MIN_JAVA = 17  # PySpark 4 runs on Java 17 and 21

# Settings every session needs for the SQL to mean what it means on DuckDB (runtime SQL settings, so
# they apply to a session passed in as well as to one built here).
SQL_CONF: dict[str, str] = {
    "spark.sql.parser.escapedStringLiterals": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}

# Log4j 2 settings for a session built here: errors only (the Python exception carries the message).
# `org.apache.spark` is named as well as the root: a PySpark driver prints "Setting default log level"
# unless the level configured for Spark's own loggers equals the root's.
_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.spark.name = org.apache.spark
logger.spark.level = error
"""


def java_version(java: str | None = None) -> int | None:
    """Major version of the Java runtime Spark would start (JAVA_HOME's, else the one on PATH)."""
    if java is None:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        return None
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0_392" is Java 8


def check_runtime() -> None:
    """Raise a message that says what to install when PySpark or a Java 17+ runtime is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the Spark engine needs pyspark: {INSTALL_HINT}") from e
    v = java_version()
    if v is None:
        raise RuntimeError(
            f"Spark needs a Java {MIN_JAVA}+ runtime: none found (set JAVA_HOME or put java on PATH)"
        )
    if v < MIN_JAVA:
        raise RuntimeError(f"Spark needs a Java {MIN_JAVA}+ runtime: found Java {v}")


class SparkEngine:
    """`Engine` on a Spark session.

    With no `session`, builds a local one (`master`, default `local[2]`) whose scratch files (warehouse,
    Derby, shuffle spill, log config) live in a temporary directory removed by `close`, so a scan
    writes nothing into the working directory; if a session is already running in the process, a new
    session on its context is used instead. With a `session` (a cluster's, say), uses it as it is,
    apart from the `SQL_CONF` settings. Only a session built here is stopped by `close`.

    `java_options` are added to the driver JVM's options of a session built here (tests use a C1-only
    JIT, which starts faster; large scans should not).
    """

    dialect = "spark"

    def __init__(
        self,
        master: str = "local[2]",
        shuffle_partitions: int = 4,
        driver_memory: str = "1g",
        session: SparkSession | None = None,
        java_options: str = "",
    ) -> None:
        self._cleanup: weakref.finalize[[str, bool], SparkEngine] | None = None
        self._owned = False
        if session is None:
            check_runtime()
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            if active is not None:
                # A session already runs in this process (a notebook's, an earlier engine's): share its
                # context, but in a session of our own, so our views and settings stay out of its way.
                session = active.newSession()
            else:
                session = self._build(master, shuffle_partitions, driver_memory, java_options)
                self._owned = True
        for k, v in SQL_CONF.items():
            session.conf.set(k, v)
        self.spark = session

    def _build(
        self, master: str, shuffle_partitions: int, driver_memory: str, java_options: str
    ) -> SparkSession:
        from pyspark.sql import SparkSession

        tmp = Path(tempfile.mkdtemp(prefix="distillguard-spark-"))
        # Removed by `close`, or at exit by a process that never called it.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(tmp), True)
        (tmp / "log4j2.properties").write_text(_LOG4J)
        java_opts = (
            f"-Dderby.system.home={tmp / 'derby'} -Dlog4j2.configurationFile={tmp / 'log4j2.properties'}"
        )
        if java_options:
            java_opts += " " + java_options
        builder = (
            SparkSession.builder.master(master)
            .appName("distillguard")
            .config("spark.driver.memory", driver_memory)
            .config("spark.driver.extraJavaOptions", java_opts)
            .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
            .config("spark.sql.warehouse.dir", str(tmp / "warehouse"))
            .config("spark.local.dir", str(tmp / "local"))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
        )
        for k, v in SQL_CONF.items():
            builder = builder.config(k, v)
        try:
            spark = builder.getOrCreate()
        except Exception:
            self._cleanup()
            raise
        spark.sparkContext.setLogLevel("ERROR")
        # PySpark logs every SQL error with its query context before raising it: the exception says it.
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        return spark

    def register_parquet(self, name: str, path: Path) -> None:
        self.spark.read.parquet(str(path)).createOrReplaceTempView(name)

    def register_arrow(self, name: str, table: pa.Table) -> None:
        self.spark.createDataFrame(table).createOrReplaceTempView(name)

    def create_view(self, name: str, sql: str) -> None:
        self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {name} AS {render(sql, self.dialect)}")

    def materialize(self, name: str, sql: str) -> None:
        # Cached and counted now, so later queries reuse the rows instead of recomputing them.
        df = self.spark.sql(render(sql, self.dialect)).cache()
        df.count()
        df.createOrReplaceTempView(name)

    def query(self, sql: str) -> pa.Table:
        return self.spark.sql(render(sql, self.dialect)).toArrow()

    def close(self) -> None:
        """Stop the session built here (a session passed in keeps running) and remove its scratch files."""
        if self._owned:
            self.spark.stop()
        if self._cleanup is not None:
            self._cleanup()
