"""Whole-process measurements of a command: wall seconds and peak memory of its process tree.

Peak memory is measured two ways, and the larger is the one the bars are checked against:
- `peak_tree`: the sum of the resident set sizes of the command and all its descendants, sampled every
  `SAMPLE_S` seconds (parallel ingest workers run beside the parent, so their memory adds up; shared
  pages such as libraries are counted once per process, which errs on the high side);
- `peak_single`: the kernel's own high-water mark (ru_maxrss from wait4) of the largest single process in
  the tree, exact however short the peak was.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - psutil comes with the dev extra that `make bench` installs
    psutil = None

SAMPLE_S = 0.1
GIB = 1 << 30


@dataclass
class Measured:
    cmd: list[str]
    rc: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_tree: int  # bytes; 0 when psutil is missing
    peak_single: int  # bytes

    @property
    def peak(self) -> int:
        return max(self.peak_tree, self.peak_single)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak": self.peak}


def _tree_rss(proc: Any) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):  # it ended between the listing and the reading
            total += p.memory_info().rss
    return total


def run(cmd: Sequence[str | Path], log: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` to completion (output to `log`, or discarded) and measure it."""
    args = [str(c) for c in cmd]
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)  # the 10M check alone runs before any other command
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    peak = [0]
    done = threading.Event()
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

        def sample() -> None:
            if psutil is None:
                return
            try:
                proc = psutil.Process(p.pid)
            except psutil.Error:
                return
            while not done.wait(SAMPLE_S):
                peak[0] = max(peak[0], _tree_rss(proc))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4 reaps the child and gives its rusage (which covers the descendants it waited for).
        _pid, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        done.set()
        sampler.join()
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    return Measured(
        cmd=args,
        rc=p.returncode,
        wall_s=wall,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        peak_tree=peak[0],
        peak_single=ru.ru_maxrss * 1024,  # KiB on Linux
    )


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"
