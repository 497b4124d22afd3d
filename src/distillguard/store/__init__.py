"""Where exchanges live: Parquet files, read by an engine (DuckDB by default, Spark to scale out)."""
