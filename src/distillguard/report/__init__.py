"""Reporting sinks: terminal summaries now; HTML reports and the review console later."""
