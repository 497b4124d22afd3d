"""The yardstick: parse every line of a JSONL log with orjson and do nothing else.

`python benchmarks/orjson_baseline.py LOG` prints the number of lines parsed. The scan reads the same
file the same way (1 MiB buffered lines, orjson), so scan time / this time is what everything after the
JSON parse costs: validation, derived columns, Parquet, and the detection stages.
"""

from __future__ import annotations

import sys

import orjson


def main(path: str) -> int:
    loads = orjson.loads
    n = 0
    with open(path, "rb", buffering=1 << 20) as f:
        for line in f:
            if not line.isspace():
                loads(line)
                n += 1
    return n


if __name__ == "__main__":
    print(main(sys.argv[1]))
