"""Log adapters: one module per source format, each registered by name (see `base.register`)."""

from distillguard.ingest import native  # noqa: F401  (registers)
from distillguard.ingest.base import (
    Adapter,
    IngestError,
    IngestStats,
    Quarantine,
    adapters,
    detect_format,
    get_adapter,
    read_exchanges,
)

__all__ = [
    "Adapter",
    "IngestError",
    "IngestStats",
    "Quarantine",
    "adapters",
    "detect_format",
    "get_adapter",
    "read_exchanges",
]
