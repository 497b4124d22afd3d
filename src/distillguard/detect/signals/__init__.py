"""Built-in signals, one module per family; importing this package registers them."""

from distillguard.detect.signals import (  # noqa: F401
    cot,
    coverage,
    fingerprints,
    intel,
    network,
    open_loop,
    release,
    shape,
    skeleton,
    timing,
    volume,
)
