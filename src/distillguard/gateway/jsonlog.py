"""Structured (JSON lines) logging for the gateway.

Callers pass only identifiers and measurements in `extra` (request id, key id, status, timings); prompt
text, responses and key secrets are never handed to a logger, so no formatter can leak them.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

# Attributes every LogRecord has; anything else came from `extra=` and is emitted as a field.
_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD:
                out[k] = v
        if record.exc_info and record.exc_info[0] is not None:
            out["exc"] = record.exc_info[0].__name__
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "info") -> None:
    """JSON lines on stderr for the gateway's and uvicorn's loggers."""
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter())
    for name in ("distillguard.gateway", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [h]
        lg.setLevel(level.upper())
        lg.propagate = False
