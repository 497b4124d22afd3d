"""Detection: per-account signals with evidence, a calibrated combiner, verdicts and campaigns."""
