"""Enforcement gateway: an OpenAI-compatible proxy with identity, limits, policy and audit."""
