"""The audit log: every exchange once, in native exchange JSONL, even across a `kill -9` of the gateway.

Two files per writer:

* `audit.jsonl`: one final `Exchange` per line (`distillguard scan` reads it as it is);
* `audit.jsonl.wal`: write-ahead intents, one line per request *read* by the gateway, written before the
  request is checked or forwarded.

Protocol (what "exactly once" means here). A record is *written* (`write()`, which survives `kill -9`:
the kernel keeps the page cache) before the gateway acts on what it records, and *durable* (`fdatasync`,
which also survives power loss) as `audit.sync` says:

* `per_request`: a final record is durable before the client sees what it records (each answer waits
  for the group commit that covers it);
* `background` (the default): a final record is written before the answer and made durable by a
  background group commit at most `sync_interval_ms` later; the answer does not wait for the disk. A
  power loss can lose the records written in that last interval (their clients may have had answers);
  a `kill -9` loses nothing;
* `off`: flushed only at WAL rotation and at shutdown (kill -9 safe only).

With `per_request`:

* the intent is written before the request is checked or forwarded; it is made durable only when the
  gateway asks for it (`sync()`: before a stream's first byte when `audit.durable_first_byte` is on;
  off by default, so a stream's first byte does not wait for an fsync);
* the final record is written and durable before the response's last byte (the whole JSON body, or the
  stream's `data: [DONE]` / terminal event). A group commit fsyncs `audit.jsonl` only (the final
  records); the WAL is fsynced too only for a `sync()` waiter, since a final record supersedes its intent.

One group commit covers every record written while the previous one ran. So:

* a response that a client received in full is in `audit.jsonl`, once;
* a request the gateway read but did not finish (killed mid-stream, mid-upstream-call) has an intent and
  no final record; on restart, recovery appends one record for it, built from the intent (and its
  identity amendment), marked `status` 500, `error` "gateway stopped ..." and
  `attributes["audit.recovered"] = "1"`;
* never twice: recovery reads the final records written since the WAL's checkpoint (`audit_offset` in
  its header) and only recovers intents that have none; a crash during recovery is recovered again
  idempotently (its records are found after the checkpoint). A line torn by the kill (no final
  newline) is cut off; it was never acknowledged, and its intent recovers it.
* after a power loss (`per_request`), a request whose intent was written but not yet durable may be
  missing: its client had not received the whole response (with `durable_first_byte`: not a byte of it).

The one window left: a final record written but not yet acknowledged when the process dies says the
exchange completed although the client missed the last byte (the record is still there exactly once).

Writes happen on the event loop (one `write()` per file per loop iteration, batching every record
submitted in that iteration); fsync runs in a thread, which never holds a lock the event loop waits for
while the disk flushes. The WAL is rewritten (open intents only, new checkpoint) once it exceeds
`wal_rotate_bytes`; when no intent is open it is simply truncated to a new checkpoint past 64 KiB, with
no fsync (nothing in it needs to survive: every intent has its final record). Each writer holds an exclusive `flock` on a slot, so two
workers sharing a path get `audit.jsonl` and `audit.1.jsonl` instead of interleaving.

Hash chain (optional): each line's `attributes["chain.prev_sha256"]` is the SHA-256 of the previous
line's bytes (newline included); `verify_chain` checks a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from distillguard.exchange import validate
from distillguard.gateway.records import fast_line
from distillguard.ingest.native import dump_line

log = logging.getLogger("distillguard.gateway.audit")

CHAIN_ATTR = "chain.prev_sha256"
RECOVERED_ATTR = "audit.recovered"
_GENESIS = "0" * 64
_SLOTS = 64

SyncMode = Literal["per_request", "background", "off"]


class AuditUnavailable(RuntimeError):
    """The audit log cannot take records (disk full, closed): the gateway refuses rather than go unlogged."""


@dataclass
class RecoveryReport:
    path: Path
    recovered: int = 0  # intents without a final record, written as recovered records
    torn_bytes: int = 0  # bytes of a partial last line cut off the audit log
    open_intents: int = 0


def slot_path(path: Path, slot: int) -> Path:
    return path if slot == 0 else path.with_name(f"{path.stem}.{slot}{path.suffix}")


def final_line(record: dict[str, Any]) -> bytes:
    """The native JSONL line of a final record; a field the Exchange model rejects moves to attributes."""
    line = fast_line(record)  # the same bytes without pydantic when the record is plainly valid
    if line is not None:
        return line
    try:
        return dump_line(validate(record))
    except ValidationError as e:
        rec = dict(record)
        attrs = dict(rec.get("attributes") or {})
        for err in e.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            if name in rec and name not in ("exchange_id", "ts", "account_id", "model", "attributes"):
                attrs[f"invalid.{name}"] = str(rec.pop(name))[:200]
            elif name == "model":
                # a refused request's model may be any JSON ({"model": [null]}): the line must still be
                # written (one bad record used to fail its whole batch; found by schemathesis)
                attrs["invalid.model"] = str(rec.get("model"))[:200]
                rec["model"] = "unknown"
        rec["attributes"] = attrs
        return dump_line(validate(rec))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _last_line(fd: int, size: int) -> bytes | None:
    """The last complete line (newline included) of a file of `size` bytes that ends with a newline."""
    if size == 0:
        return None
    step = 64 << 10
    end = size
    buf = b""
    while end > 0:
        start = max(0, end - step)
        buf = os.pread(fd, end - start, start) + buf
        end = start
        i = buf.rfind(b"\n", 0, len(buf) - 1)
        if i >= 0:
            return buf[i + 1 :]
    return buf


def _cut_torn_tail(fd: int) -> int:
    """Truncate a partial last line (a write cut by the kill); returns the bytes removed."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    step = 64 << 10
    end = size
    while end > 0:
        start = max(0, end - step)
        chunk = os.pread(fd, end - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            keep = start + i + 1
            os.ftruncate(fd, keep)
            return size - keep
        end = start
    os.ftruncate(fd, 0)
    return size


def _lines_from(path: Path, offset: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            if line.endswith(b"\n"):
                yield line


@dataclass
class _Pending:
    intents: list[tuple[str, dict[str, Any], asyncio.Future[None]]] = field(default_factory=list)
    finals: list[tuple[str, dict[str, Any], asyncio.Future[None]]] = field(default_factory=list)
    amends: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class AuditLog:
    """Durable, batched writer of the audit log and its write-ahead intents (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        fsync: bool = True,
        batch_max: int = 1024,
        hash_chain: bool = False,
        wal_rotate_bytes: int = 4 << 20,
        sync: SyncMode | None = None,
        sync_interval_s: float = 0.01,
    ) -> None:
        self.base_path = path
        # `sync` names the mode; without it the older `fsync` flag decides (true: per_request)
        self.mode: SyncMode = sync or ("per_request" if fsync else "off")
        self.fsync = self.mode != "off"  # some fdatasync runs in the background thread
        self.sync_interval_s = sync_interval_s
        self.batch_max = batch_max
        self.hash_chain = hash_chain
        self.wal_rotate_bytes = wal_rotate_bytes
        self.path = path
        self._lock_fd = -1
        self._fd = -1
        self._wal_fd = -1
        self._wal_size = 0
        self._size = 0
        self._head = _GENESIS
        self._open: dict[str, dict[str, Any]] = {}  # exchange id -> intent (amended), for WAL rotation
        self._pending = _Pending()
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = True
        # group commit: futures whose records are written, waiting for the next fdatasync
        self._sync_cv = threading.Condition()
        self._sync_waiting: list[asyncio.Future[None]] = []
        self._sync_wal = False  # a sync() waiter needs the WAL durable too (not only audit.jsonl)
        self._dirty = False  # background mode: final records written since the last fdatasync
        self._wal_promised = False  # a sync() made intents durable: rotations must keep them so
        self._dirty_since = 0.0
        self._sync_thread: threading.Thread | None = None
        self._fd_lock = threading.Lock()  # fds swapped by WAL rotation while the sync thread may use them
        self.records_written = 0

    # -- lifecycle -------------------------------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Take a slot, recover what a crash left, and start accepting records."""
        self.base_path.parent.mkdir(parents=True, exist_ok=True)
        for slot in range(_SLOTS):
            p = slot_path(self.base_path, slot)
            fd = os.open(str(p) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd, self.path = fd, p
            break
        else:
            raise AuditUnavailable(f"all {_SLOTS} audit slots of {self.base_path} are held by other writers")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        report = self._recover()
        self._closed = False
        self._loop = asyncio.get_running_loop() if _has_loop() else None
        if self.fsync:
            self._sync_thread = threading.Thread(
                target=self._sync_forever, name="dg-audit-fsync", daemon=True
            )
            self._sync_thread.start()
        return report

    def close(self) -> None:
        """Write what is queued, fsync, release the slot (a clean stop leaves no open intents to recover)."""
        if self._closed:
            return
        if self._pending.intents or self._pending.finals or self._pending.amends:
            self._flush()
        self._closed = True
        if self._sync_thread is not None:
            with self._sync_cv:
                self._sync_cv.notify()
            self._sync_thread.join(timeout=10)
            self._sync_thread = None
        with self._fd_lock:
            os.fsync(self._fd)
            os.fsync(self._wal_fd)
            if not self._open:  # nothing in flight: start the next run from an empty WAL
                self._rotate_wal()
            os.close(self._fd)
            os.close(self._wal_fd)
            self._fd = self._wal_fd = -1
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = -1

    # -- recovery --------------------------------------------------------------------------------------

    def _recover(self) -> RecoveryReport:
        rep = RecoveryReport(self.path)
        rep.torn_bytes = _cut_torn_tail(self._fd)
        if rep.torn_bytes:
            log.warning("audit log had a torn last line", extra={"bytes": rep.torn_bytes})
        self._size = os.fstat(self._fd).st_size
        last = _last_line(self._fd, self._size)
        self._head = hashlib.sha256(last).hexdigest() if last else _GENESIS
        wal = Path(str(self.path) + ".wal")
        intents: dict[str, dict[str, Any]] = {}
        offset = 0
        if wal.exists():
            for i, line in enumerate(_lines_from(wal, 0)):
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if i == 0 and "wal" in obj:
                    offset = min(int(obj.get("audit_offset", 0)), self._size)
                elif isinstance(obj, dict) and "amend" in obj:
                    if obj.get("exchange_id") in intents and isinstance(obj["amend"], dict):
                        intents[obj["exchange_id"]].update(obj["amend"])
                elif isinstance(obj, dict) and "exchange_id" in obj:
                    intents[obj["exchange_id"]] = obj
        if intents:
            for line in _lines_from(self.path, offset):
                try:
                    intents.pop(orjson.loads(line).get("exchange_id"), None)
                except (orjson.JSONDecodeError, AttributeError):
                    continue
            buf = []
            for rec in intents.values():
                rec["status"] = 500
                rec["error"] = "gateway stopped before this exchange completed (recovered from the audit WAL)"
                rec.setdefault("attributes", {})[RECOVERED_ATTR] = "1"
                buf.append(self._chain(rec))
            _write_all(self._fd, b"".join(buf))
            os.fsync(self._fd)
            self._size = os.fstat(self._fd).st_size
            rep.recovered = len(buf)
            log.warning("recovered unfinished exchanges from the audit WAL", extra={"count": len(buf)})
        self._rotate_wal()
        return rep

    def _reset_wal(self) -> None:
        """No intent open: empty the WAL in place and write a new checkpoint (no fsync needed: after a
        crash or power loss the WAL reads as the old one, which recovers idempotently, or as this one,
        which has nothing to recover)."""
        os.ftruncate(self._wal_fd, 0)
        header = orjson.dumps({"wal": 1, "audit_offset": self._size}) + b"\n"
        _write_all(self._wal_fd, header)  # O_APPEND: written at the new end, offset 0
        self._wal_size = len(header)

    def _rotate_wal(self, durable: bool | None = None) -> None:
        """Start a new WAL: a checkpoint header, then the intents still open (atomically, by rename).

        `durable` (default: whenever fsync is on) fsyncs the audit log, the new WAL and its directory
        first. While serving, only an intent some `sync()` promised durable (`durable_first_byte`) needs
        that: any other open intent may be lost to a power cut anyway (its client has no full answer), and
        a checkpoint past the disk's end only skips final records whose answers still wait for their flush.
        """
        if durable is None:
            durable = self.fsync
        wal = Path(str(self.path) + ".wal")
        tmp = Path(str(wal) + ".tmp")
        if durable and self._fd >= 0:
            os.fsync(self._fd)  # the checkpoint must not point past what the disk holds
        header = orjson.dumps({"wal": 1, "audit_offset": self._size}) + b"\n"
        data = header + b"".join(_wal_line(rec) for rec in self._open.values())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, wal)
        if durable:
            dfd = os.open(wal.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        old = self._wal_fd
        self._wal_fd = os.open(wal, os.O_WRONLY | os.O_APPEND)
        self._wal_size = len(data)
        if old >= 0:
            os.close(old)

    # -- writing ---------------------------------------------------------------------------------------

    def _chain(self, record: dict[str, Any]) -> bytes:
        if self.hash_chain:
            attrs = dict(record.get("attributes") or {})
            attrs[CHAIN_ATTR] = self._head
            record = {**record, "attributes": attrs}
        line = final_line(record)
        if self.hash_chain:
            self._head = hashlib.sha256(line).hexdigest()
        return line

    async def begin(self, exchange_id: str, record: dict[str, Any]) -> None:
        """Write-ahead: the request as read, written (not yet fsynced) before the gateway acts on it."""
        await self._submit(True, exchange_id, record)

    async def sync(self) -> None:
        """Wait until everything written so far is durable (call before a response's first byte)."""
        if not self.fsync or self._closed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wal_promised = True  # from now on WAL rotation keeps intents durable
        with self._sync_cv:
            self._sync_waiting.append(fut)
            self._sync_wal = True
            self._sync_cv.notify()
        await fut

    async def end(self, exchange_id: str, record: dict[str, Any]) -> None:
        """The final record, durable before the client gets the last byte."""
        await self._submit(False, exchange_id, record)

    def amend(self, exchange_id: str, fields: dict[str, Any]) -> None:
        """Add fields to an intent (who the caller turned out to be), not waited for.

        Recovery then attributes an interrupted exchange to its account; if the process dies before the
        amendment is written, the recovered record is still there, just without these fields.
        """
        if self._closed:
            return
        self._pending.amends.append((exchange_id, fields))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _submit(self, intent: bool, exchange_id: str, record: dict[str, Any]) -> None:
        if self._closed:
            raise AuditUnavailable("audit log is closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[None] = loop.create_future()
        (self._pending.intents if intent else self._pending.finals).append((exchange_id, record, fut))
        if not self._scheduled:
            self._scheduled = True
            # Everything submitted during this loop iteration goes out in one write().
            loop.call_soon(self._flush)
        await fut

    def _flush(self) -> None:
        self._scheduled = False
        pend, self._pending = self._pending, _Pending()
        futs: list[asyncio.Future[None]] = []  # settled once durable (finals)
        written: list[asyncio.Future[None]] = []  # settled once written (intents)
        try:
            finals = []
            done = set()
            for xid, rec, fut in pend.finals:
                finals.append(self._chain(rec))
                done.add(xid)
                futs.append(fut)
            wal = []
            for xid, rec, fut in pend.intents:
                written.append(fut)
                if xid in done:  # finished in the same iteration: the final record says it all
                    continue
                self._open[xid] = dict(rec)
                wal.append(_wal_line(rec))
            for xid, fields in pend.amends:
                if xid in self._open and xid not in done:
                    self._open[xid].update(fields)
                    wal.append(_wal_line({"exchange_id": xid, "amend": fields}))
            for xid in done:
                self._open.pop(xid, None)
            with self._fd_lock:
                if wal:
                    data = b"".join(wal)
                    _write_all(self._wal_fd, data)
                    self._wal_size += len(data)
                if finals:
                    data = b"".join(finals)
                    _write_all(self._fd, data)
                    self._size += len(data)
                    self.records_written += len(finals)
                if not self._open and self._wal_size > 64 << 10:
                    self._reset_wal()  # the common case (nothing in flight): no rename, no fsync
                elif self._wal_size > self.wal_rotate_bytes:
                    self._rotate_wal(durable=self.fsync and self._wal_promised)
        except Exception as e:
            log.error("audit write failed", extra={"error": e.__class__.__name__})
            exc = AuditUnavailable(f"audit log write failed: {e.__class__.__name__}")
            for f in futs + written:
                if not f.done():
                    f.set_exception(exc)
            return
        for f in written:
            if not f.done():
                f.set_result(None)
        if self.mode == "per_request" and futs:
            with self._sync_cv:
                self._sync_waiting.extend(futs)
                self._sync_cv.notify()
            return
        for f in futs:  # background / off: written is enough to answer
            if not f.done():
                f.set_result(None)
        if self.mode == "background" and futs and not self._dirty:
            with self._sync_cv:
                self._dirty = True
                self._dirty_since = time.monotonic()
                self._sync_cv.notify()

    def _sync_forever(self) -> None:
        cv = self._sync_cv
        while True:
            with cv:
                while not self._sync_waiting and not self._dirty and not self._closed:
                    cv.wait()
                if not self._sync_waiting and self._closed:
                    return  # close() flushes what is left
                if not self._sync_waiting:
                    # background group commit: everything written within the interval goes in one flush
                    # (a sync() waiter or close() cuts the wait short)
                    deadline = self._dirty_since + self.sync_interval_s
                    while not self._sync_waiting and not self._closed:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        cv.wait(left)
                futs, self._sync_waiting = self._sync_waiting, []
                wal, self._sync_wal = self._sync_wal, False
                self._dirty = False
            err: Exception | None = None
            try:
                # the fds are duplicated under the lock and flushed outside it: WAL rotation may swap them
                # meanwhile, and the event loop's writes must not wait for the disk
                fds: list[int] = []
                with self._fd_lock:
                    if self._fd >= 0:
                        fds.append(os.dup(self._fd))
                        if wal:
                            fds.append(os.dup(self._wal_fd))
                try:
                    for fd in fds:
                        os.fdatasync(fd)
                finally:
                    for fd in fds:
                        os.close(fd)
            except OSError as e:
                err = AuditUnavailable(f"audit log fsync failed: {e.strerror}")
                if not futs:  # background: nobody waits to be told
                    log.error("audit background fsync failed", extra={"error": e.strerror})
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                    loop.call_soon_threadsafe(_settle, futs, err)


def _wal_line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NAIVE_UTC) + b"\n"


def _settle(futs: list[asyncio.Future[None]], err: Exception | None) -> None:
    for f in futs:
        if f.done():
            continue
        if err is None:
            f.set_result(None)
        else:
            f.set_exception(err)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class NullAudit:
    """Audit disabled: accepts and forgets."""

    path: Path | None = None
    records_written = 0

    def open(self) -> RecoveryReport | None:
        return None

    def close(self) -> None:
        return None

    async def begin(self, exchange_id: str, record: dict[str, Any]) -> None:
        return None

    async def sync(self) -> None:
        return None

    def amend(self, exchange_id: str, fields: dict[str, Any]) -> None:
        return None

    async def end(self, exchange_id: str, record: dict[str, Any]) -> None:
        return None


def verify_chain(path: Path) -> tuple[bool, int, int | None]:
    """Check a hash-chained audit log: (intact, lines read, first line number that breaks the chain)."""
    head = _GENESIS
    n = 0
    for n, line in enumerate(_lines_from(path, 0), start=1):
        try:
            prev = (orjson.loads(line).get("attributes") or {}).get(CHAIN_ATTR)
        except orjson.JSONDecodeError:
            return False, n, n
        if prev != head:
            return False, n, n
        head = hashlib.sha256(line).hexdigest()
    return True, n, None
