"""Red-team traffic simulator: benign customers and distillation campaigns, written as an exchange log
plus a labels file (`distillguard simulate`). Used to tune and evaluate detection and for demos."""

from distillguard.simulate.attacks import STRATEGIES, AttackStrategy, Seat
from distillguard.simulate.personas import PERSONA_WEIGHTS, PERSONAS
from distillguard.simulate.run import (
    ALL_PERSONAS,
    ALL_STRATEGIES,
    Population,
    SimConfig,
    Summary,
    build,
    exchanges,
    labels_path_for,
    simulate,
)

__all__ = [
    "ALL_PERSONAS",
    "ALL_STRATEGIES",
    "PERSONAS",
    "PERSONA_WEIGHTS",
    "STRATEGIES",
    "AttackStrategy",
    "Population",
    "Seat",
    "SimConfig",
    "Summary",
    "build",
    "exchanges",
    "labels_path_for",
    "simulate",
]
