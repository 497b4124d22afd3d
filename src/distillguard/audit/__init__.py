"""Enterprise self-audit (`distillguard audit`): what a company's own LLM API usage looks like to a provider.

Reads the providers' usage exports (OpenAI Usage API `/v1/organization/usage/completions` pages, Anthropic
Admin API `/v1/organizations/usage_report/messages` reports), and full request logs when the company keeps
them (OpenTelemetry GenAI, LiteLLM), and reports volume by project, key, model and day, a spend estimate
from a dated price table, and compliance risk in plain words. See docs/audit.md.

This package file stays import-free: the project config imports `audit.config`.
"""
