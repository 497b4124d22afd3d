"""The analyst review console (`distillguard ui`): review flagged accounts, record decisions, audit."""
