"""Release-day adoption: moving traffic to a new model needs traffic before the release to move."""

from datetime import timedelta
from pathlib import Path

from distillguard.detect.pipeline import scan

from ..conftest import T0, LogBuilder

RELEASE = T0 + timedelta(hours=24)


def _steady(
    b: LogBuilder, account: str, prompts: list[str], start, hours: float, n: int, new_share: float
) -> None:
    """n requests spread over `hours` from `start`; after the release `new_share` of them go to the new model."""
    for i in range(n):
        t = start + timedelta(seconds=i * hours * 3600 / n)
        new = t >= RELEASE and b.rng.random() < new_share
        b.add(account, t, b.rng.choice(prompts), model="acme-next" if new else "acme-large-2", max_tokens=800)


def _release_findings(builder: LogBuilder, corpora, tmp_path: Path) -> dict[str, float]:
    arena = corpora["arena"]
    # Customers: steady use over both days, adopting the new model slowly (10% on its first day).
    for i in range(30):
        _steady(builder, f"cust{i:02d}", arena, T0 + timedelta(minutes=i), 47, 60, 0.1)
    # A harvester active the day before that moves 90% of its traffic within hours of the release.
    _steady(builder, "mover", arena, T0, 47, 120, 0.9)
    # An evaluation run that starts after the release and splits its prompts across old and new.
    _steady(builder, "newcomer", arena, RELEASE + timedelta(hours=2), 0.5, 120, 0.9)
    # The new model is first seen at the release: the log starts a day earlier.
    res, _ = scan([builder.write(tmp_path / "log.jsonl")], tmp_path / "out")
    out = {}
    for acct in ("mover", "newcomer", "cust00"):
        i = res.accounts.ids.tolist().index(acct)
        ev = {e.signal: e for e in res.evidence[i]}
        out[acct] = ev["release.fast_adoption"].weight if "release.fast_adoption" in ev else 0.0
    return out


def test_moving_traffic_counts_only_with_traffic_before_the_release(builder, corpora, tmp_path: Path) -> None:
    w = _release_findings(builder, corpora, tmp_path)
    assert w["mover"] > 2.0  # full strength: 3.0 by default, scaled by support
    assert w["newcomer"] == 0.0  # the same adoption share, but nothing was moved
    assert w["cust00"] == 0.0


def test_a_harness_that_adds_the_new_model_beside_the_old_compares_it(
    builder, corpora, tmp_path: Path
) -> None:
    """A harness that ran its set on the old model the day before, and on release day runs the same set on
    the new model and the old one: half its traffic goes to the new model, none of it moved there."""
    arena = corpora["arena"][:150]
    for i in range(30):
        _steady(builder, f"cust{i:02d}", corpora["arena"], T0 + timedelta(minutes=i), 47, 60, 0.1)
    _steady(builder, "mover", corpora["arena"], T0, 47, 120, 0.9)
    for k, p in enumerate(arena):
        builder.add("harness", T0 + timedelta(hours=2, seconds=20 * k), p, max_tokens=800)
    for k, p in enumerate(arena):
        t = RELEASE + timedelta(hours=1, seconds=20 * k)
        builder.add("harness", t, p, model="acme-next", max_tokens=800)
        builder.add("harness", t + timedelta(seconds=5), p, max_tokens=800)
    # A harvester that asked its pool of the old model the day before and, after the release, asks the same
    # prompts of the new one (a little still to the old): it re-harvests the better model, it compares nothing.
    for k, p in enumerate(arena):
        builder.add("reasker", T0 + timedelta(hours=3, seconds=300 * k), p, max_tokens=800)
        t = RELEASE + timedelta(hours=1, seconds=240 * k)
        builder.add("reasker", t, p, model="acme-large-2" if k % 10 == 0 else "acme-next", max_tokens=800)
    res, _ = scan([builder.write(tmp_path / "log.jsonl")], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    f = next(x for x in res.accounts.findings if x.name == "release.fast_adoption")
    assert f.value[ids.index("harness")] == 0.0 and f.strength[ids.index("harness")] == 0.0
    assert f.value[ids.index("mover")] > 0.6 and f.strength[ids.index("mover")] > 0.6
    assert f.value[ids.index("reasker")] > 0.8 and f.strength[ids.index("reasker")] == 1.0
