"""distillguard: detect, stop and prove model distillation through an LLM API."""

from distillguard.exchange import Exchange

__all__ = ["Exchange"]
__version__ = "0.1.0"
