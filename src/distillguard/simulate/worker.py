"""A `simulate` worker process: reads (config, shard, shards) as a pickle on stdin, writes its accounts'
native lines to stdout as frames (see `run.run_shard`). Started by `run.simulate` with workers > 1."""

from __future__ import annotations

import pickle
import sys

from distillguard.simulate.run import run_shard


def main() -> None:
    cfg, shard, shards = pickle.loads(sys.stdin.buffer.read())
    run_shard(cfg, shard, shards, sys.stdout.buffer)


if __name__ == "__main__":
    main()
