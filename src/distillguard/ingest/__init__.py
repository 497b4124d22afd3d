"""Log adapters: one module per source format, each registered by name (see `base.register`)."""

# Importing registers. `native` comes first: detection asks the adapters in this order.
from distillguard.ingest import litellm, native, openai_batch, otel  # noqa: F401
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
