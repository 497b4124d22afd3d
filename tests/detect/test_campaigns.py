"""Campaign linking and inheritance: a many-account operation whose template wraps long variable content
is one campaign and flagged, while benign users behind the same addresses keep their own verdicts."""

import random
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from distillguard.detect.campaigns import _word_pairs
from distillguard.detect.pipeline import scan

from ..conftest import T0, LogBuilder

# A template wrapped around fillers as long as itself: whole prompts of two accounts differ too much to
# fall into one MinHash cluster, but the frame they repeat is the same.
FRAME = (
    "The following item comes from our evaluation set. {q} Work it out carefully, writing down each "
    "intermediate result, and end with the number alone on the last line of your reply."
)
NAT_IPS = [f"198.18.20.{k}" for k in range(8)]
BUCKETS = 30  # ten-minute buckets of the working morning both groups are active in


def _log(
    corpora: dict[str, list[str]], tmp_path: Path, n_op: int = 120, per: int = 20
) -> tuple[Path, list, list]:
    rng = random.Random(7)
    b = LogBuilder(seed=3)
    ops = [f"op{j:03d}" for j in range(n_op)]
    for acc in ops:
        # a few requests each, in some of the morning's buckets: no account is much on its own
        for k in sorted(rng.sample(range(BUCKETS), per)):
            b.add(
                acc,
                T0 + timedelta(hours=8, seconds=k * 600 + rng.random() * 300),
                FRAME.format(q=rng.choice(corpora["gsm8k"])),
                client_ip=rng.choice(NAT_IPS),
                user_agent="python-httpx/0.27.0",
                temperature=0.7,
                max_tokens=2048,
            )
    # Colleagues behind the same egress addresses (a shared NAT), busy in the same hours: linked to the
    # operation by addresses and timing, but they send nothing of its job.
    nat = [f"colleague{i:02d}" for i in range(12)]
    for acc in nat:
        for k in range(BUCKETS):
            b.add(
                acc,
                T0 + timedelta(hours=8, seconds=k * 600 + rng.random() * 300),
                rng.choice(corpora["arena"]),
                client_ip=rng.choice(NAT_IPS),
                user_agent="python-httpx/0.27.0",
                temperature=0.7,
                max_tokens=800,
            )
    for i in range(40):
        b.chat_user(f"user{i:02d}", corpora["arena"], 10 + i % 15, ip=f"192.0.2.{i}")
    return b.write(tmp_path / "log.jsonl"), ops, nat


def test_template_frame_links_and_flags_an_operation_but_not_its_nat(corpora, tmp_path: Path) -> None:
    log, ops, nat = _log(corpora, tmp_path)
    res, _ = scan([log], tmp_path / "out")
    pos = {a: i for i, a in enumerate(res.accounts.ids.tolist())}
    oi = np.array([pos[a] for a in ops])
    ni = np.array([pos[a] for a in nat])
    lab = res.campaigns.label
    # one campaign holds the whole operation, linked by the template frame they repeat
    assert (lab[oi] >= 0).all() and len(set(lab[oi].tolist())) == 1
    c = int(lab[oi[0]])
    assert res.campaigns.links[c].get("frame", 0) > 0
    assert res.campaigns.job_linked[oi].all()
    # no member is much on its own; the campaign is, and the members that run its job inherit it
    assert np.median(res.accounts.score[oi]) < 0.05
    assert res.campaign_scores is not None and res.campaign_scores.score[c] >= 0.5
    flagged = np.isin(np.array(res.levels, dtype=object)[oi], ["suspect", "block"])
    assert flagged.mean() >= 0.9
    ev = {e.signal: e for e in res.evidence[oi[0]]}
    assert "prompt template" in ev["campaign.member"].detail
    # the colleagues behind the NAT share addresses and hours with it (they are linked into the campaign),
    # not its job: they keep their own scores
    assert (lab[ni] == c).all()
    assert not res.campaigns.job_linked[ni].any()
    assert np.array_equal(res.final_score[ni], res.accounts.score[ni])
    assert all(res.levels[i] == "ok" for i in ni)
    assert all(
        lvl == "ok" for a, lvl in zip(res.accounts.ids, res.levels, strict=True) if a.startswith("user")
    )


def test_word_pairs_do_not_depend_on_the_batch() -> None:
    """A text's word pairs are the same alone or among others (frames of accounts compare across batches)."""
    texts = ["the quick brown fox jumps over", "a b c", "", " grade this answer step by step", "x"]
    d, h = _word_pairs(pa.array(texts))
    for i, t in enumerate(texts):
        _, h1 = _word_pairs(pa.array([t]))
        assert set(h[d == i].tolist()) == set(h1.tolist())
    assert len(set(h[d == 0].tolist())) == 5 and not (d == 2).any()


def _assert_recipe_hydra(
    log: Path, tmp_path: Path, ops: list[str], users: list[str], not_shared: tuple[str, ...]
) -> None:
    """The operation's accounts are one campaign linked by a recipe (and by none of `not_shared`), job-linked
    and flagged; the users on its network are neither job-linked nor above watch."""
    res, _ = scan([log], tmp_path / "out")
    pos = {a: i for i, a in enumerate(res.accounts.ids.tolist())}
    oi = np.array([pos[a] for a in ops])
    ui = np.array([pos[a] for a in users])
    lab = res.campaigns.label
    assert (lab[oi] >= 0).all() and len(set(lab[oi].tolist())) == 1
    c = int(lab[oi[0]])
    assert res.campaigns.links[c].get("recipe", 0) > 0
    assert all(res.campaigns.links[c].get(k, 0) == 0 for k in not_shared)
    assert res.campaigns.job_linked[oi].all()
    flagged = np.isin(np.array(res.levels, dtype=object)[oi], ["suspect", "block"])
    assert flagged.mean() >= 0.9
    # the users share the network but not the recipe: never job-linked, never above watch
    assert not res.campaigns.job_linked[ui].any()
    assert all(res.levels[i] in ("ok", "watch") for i in ui)


META = (
    "Come up with {n} diverse task instructions for training a language model, each with an input and an "
    "ideal output. Here are examples:\n{ex}",
    "Please brainstorm {n} varied tasks an AI assistant could be asked to do, with an example input and a "
    "model answer for each, numbered like these:\n{ex}",
    "Generate {n} new task instructions that differ from the ones below; give each an input (or <noinput>) "
    "and an output.\n{ex}",
)


def test_small_accounts_that_send_one_recipe_over_shared_proxies_are_one_campaign(
    corpora, tmp_path: Path
) -> None:
    """A hydra of small accounts answering varied instructions, each sending the Self-Instruct recipe's
    meta-prompt now and then, behind one proxy network: their templates barely overlap (a few meta-prompts
    among different questions), but the recipe they share, with the network, links them into one campaign
    whose members inherit its score. Users of the same network who asked for a list of questions once are
    not linked by it."""
    rng = random.Random(11)
    b = LogBuilder(seed=5)
    ops = [f"hydra{j:03d}" for j in range(60)]
    for acc in ops:
        t = T0 + timedelta(hours=rng.random() * 6)
        for k in range(24):
            t += timedelta(seconds=rng.uniform(300, 1800))
            if k % 8 == 3:
                ex = "\n".join(f"{i + 1}. {rng.choice(corpora['arena'])[:80]}" for i in range(3))
                prompt = rng.choice(META).format(n=rng.choice([10, 20, 25]), ex=ex)
            else:
                prompt = rng.choice(corpora["arena"] + corpora["gsm8k"])
            b.add(
                acc,
                t,
                prompt,
                client_ip=f"203.0.{rng.randrange(100, 200)}.{rng.randrange(1, 250)}",
                asn=64500,
                user_agent="python-requests/2.32.3",
                temperature=0.7,
                max_tokens=1024,
            )
    users = [f"user{i:02d}" for i in range(20)]
    for i, acc in enumerate(users):
        b.chat_user(acc, corpora["arena"], 20, ip=f"203.0.{50 + i}.7")
        if i % 2 == 0:  # one request for a list of questions: not a recipe
            b.add(acc, T0 + timedelta(hours=9), "Generate 10 quiz questions about the solar system.")
    for row in b.rows:
        if row["account_id"].startswith("user"):
            row.update(asn=64500, user_agent="python-requests/2.32.3")
    _assert_recipe_hydra(
        b.write(tmp_path / "log.jsonl"), tmp_path, ops, users, not_shared=("template", "frame")
    )


def _client_hydra(
    corpora: dict[str, list[str]], tmp_path: Path, poisson: bool = False, fixed_ip: bool = False
) -> tuple[Path, list, list, list]:
    """A hydra of small accounts (15 requests each) running one script over a rotating proxy pool: a frame
    of three words around each maths question (too short to be a template), no recipe, one explicit
    request configuration. Behind the same ASN with the same client library and configuration: people
    chatting (closed loop), a job on other subjects, and the users of an app on the hydra's subject."""
    rng = random.Random(17)
    b = LogBuilder(seed=9)
    ua = "Python/3.10 aiohttp/3.10.2"
    net = {"asn": 64512, "user_agent": ua, "temperature": 0.2, "max_tokens": 16384}
    ops = [f"hydra{j:03d}" for j in range(60)]
    for acc in ops:
        t = T0 + timedelta(hours=rng.random() * 8)
        home = f"100.{rng.randrange(64, 127)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(15):
            t += timedelta(seconds=rng.expovariate(1 / 1500) if poisson else rng.uniform(600, 2400))
            b.add(
                acc,
                t,
                f"Problem: {rng.choice(corpora['gsm8k'])}\nSolution:",
                client_ip=home
                if fixed_ip
                else f"100.{rng.randrange(64, 127)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                **net,
            )
    chat = [f"chat{i:02d}" for i in range(10)]
    for i, acc in enumerate(chat):
        b.chat_user(acc, corpora["arena"], 20, ip=f"100.{64 + i}.9.9")
    jobs = [f"job{i:02d}" for i in range(6)]
    for i, acc in enumerate(jobs):
        t = T0 + timedelta(hours=8)
        for _ in range(20):
            t += timedelta(seconds=rng.uniform(600, 1800))
            b.add(
                acc,
                t,
                f"Summarise this request for our ticket queue: {rng.choice(corpora['arena'])}",
                client_ip=f"100.{80 + i}.{rng.randrange(256)}.3",
            )
    # The users of a bring-your-own-key maths app: its servers' addresses, its settings, the hydra's
    # subject, but each is a person asking at a person's pace.
    byok = [f"byok{i:02d}" for i in range(20)]
    for acc in byok:
        t = T0 + timedelta(hours=rng.uniform(6, 12))
        for _ in range(rng.randint(12, 30)):
            t += timedelta(seconds=rng.expovariate(1 / 900))
            b.add(acc, t, rng.choice(corpora["gsm8k"]), client_ip=f"100.70.1.{rng.randrange(1, 4)}")
    for row in b.rows:
        if row["account_id"].startswith(("chat", "job", "byok")):
            row.update(net)
    return b.write(tmp_path / "log.jsonl"), ops, chat, jobs + byok


def test_small_accounts_running_one_client_program_are_measured_by_their_campaign(
    corpora, tmp_path: Path, monkeypatch
) -> None:
    """The hydra's accounts share only a proxy ASN and user agent (one link kind) and are too small for
    timing, topics or templates to link them; the client program they all send links them, and each runs
    it on the campaign's subjects, so each takes the campaign's score. The chat users and the job on the
    same network, with the same library and configuration, do not run the campaign's job: they keep their
    own scores (the chat users' follow-ups explain them, the job's subjects are not the campaign's, and
    the app's users ask at a person's pace, not a script's)."""
    log, ops, chat, jobs = _client_hydra(corpora, tmp_path)
    res, _ = scan([log], tmp_path / "out")
    pos = {a: i for i, a in enumerate(res.accounts.ids.tolist())}
    oi, ci, ji = (np.array([pos[a] for a in g]) for g in (ops, chat, jobs))
    lab = res.campaigns.label
    assert (lab[oi] >= 0).all() and len(set(lab[oi].tolist())) == 1
    c = int(lab[oi[0]])
    assert res.campaigns.links[c].get("client", 0) > 0
    assert not res.campaigns.job_linked[oi].any()  # no template, frame or recipe in common
    assert res.campaigns.client_job[oi].mean() >= 0.9
    # alone, each is `ok` (its proxy rotation is weak evidence of its own)
    assert np.median(res.accounts.score[oi]) < 0.2
    flagged = np.isin(np.array(res.levels, dtype=object)[oi], ["suspect", "block"])
    assert flagged.mean() >= 0.9
    ev = {e.signal: e for e in res.evidence[oi[0]]}
    assert "client program" in ev["campaign.member"].detail
    # the app's users are in the campaign and on its subject: only their pace keeps them out of its job
    assert (lab[ji[6:]] == c).all() and res.campaigns.client_job[ji[6:]].mean() >= 0.8
    for g in (ci, ji):
        assert np.array_equal(res.final_score[g], res.accounts.score[g])
        assert all(res.levels[i] in ("ok", "watch") for i in g)
    # Without the client link the same hydra is mostly missed: the link is what catches it.
    monkeypatch.setattr("distillguard.detect.campaigns.CLIENT_SHARE", 2.0)
    res2, _ = scan([log], tmp_path / "out2")
    flagged2 = np.isin(np.array(res2.levels, dtype=object)[oi], ["suspect", "block"])
    assert flagged2.mean() < 0.5


def test_a_client_program_hydra_at_a_persons_pace_is_caught_by_its_rotating_addresses(
    corpora, tmp_path: Path
) -> None:
    """The same hydra paced like people (Poisson arrivals): its pace no longer says script, but each account
    sends from a new network every request, which the app's users (its servers' addresses) do not. From
    one address each, at a person's pace, the hydra's accounts look like the app's users and keep their own
    scores: the rotation is what carries them. (The job on other subjects rotates through the same pool
    and still keeps its own score: it does not run the campaign's job.)"""
    log, ops, chat, jobs = _client_hydra(corpora, tmp_path, poisson=True)
    res, _ = scan([log], tmp_path / "out")
    pos = {a: i for i, a in enumerate(res.accounts.ids.tolist())}
    oi, ci, ji = (np.array([pos[a] for a in g]) for g in (ops, chat, jobs))
    rot = next(f for f in res.accounts.findings if f.name == "network.rotation")
    assert (rot.strength[oi] >= 0.5).all() and (rot.strength[np.concatenate([ci, ji[6:]])] == 0).all()
    flagged = np.isin(np.array(res.levels, dtype=object)[oi], ["suspect", "block"])
    assert flagged.mean() >= 0.9
    for g in (ci, ji):
        assert all(res.levels[i] in ("ok", "watch") for i in g)
    (tmp_path / "fixed").mkdir()
    log2, *_ = _client_hydra(corpora, tmp_path / "fixed", poisson=True, fixed_ip=True)
    res2, _ = scan([log2], tmp_path / "out2")
    pos2 = {a: i for i, a in enumerate(res2.accounts.ids.tolist())}
    flagged2 = np.isin(np.array(res2.levels, dtype=object)[[pos2[a] for a in ops]], ["suspect", "block"])
    assert flagged2.mean() < 0.5


def test_small_accounts_that_run_one_sampling_trick_over_shared_proxies_are_one_campaign(
    corpora, tmp_path: Path
) -> None:
    """A hydra whose trick is the sampling, not the words: each small account sends a few benchmark
    questions, each at five temperatures with log-probabilities, over a proxy ASN with one user agent. No
    template, frame or fixed configuration is shared (the temperature varies), but every account runs the
    sweep, and that with the network links them. People on the same network who press "regenerate" now
    and then do not run the trick."""
    rng = random.Random(23)
    b = LogBuilder(seed=13)
    ua = "python-requests/2.25.0"
    ops = [f"sweep{j:03d}" for j in range(50)]
    for acc in ops:
        t = T0 + timedelta(hours=rng.random() * 10)
        for q in rng.sample(corpora["gsm8k"] + corpora["arena"], 5):
            for temp in (0.0, 0.4, 0.8, 1.2, 1.6):
                t += timedelta(seconds=rng.uniform(5, 60))
                b.add(
                    acc,
                    t,
                    q,
                    client_ip=f"100.{rng.randrange(64, 127)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    asn=3215,
                    user_agent=ua,
                    temperature=temp,
                    max_tokens=4096,
                    logprobs=True,
                    top_logprobs=5,
                )
    users = [f"user{i:02d}" for i in range(15)]
    for i, acc in enumerate(users):
        b.chat_user(acc, corpora["arena"], 25, ip=f"100.90.{i}.9")
        rows = [r for r in b.rows if r["account_id"] == acc]
        for r in rows[:2]:  # "regenerate" twice: the same conversation again
            b.add(acc, datetime.fromisoformat(r["ts"]) + timedelta(seconds=30), r["messages"][-1]["content"])
    for row in b.rows:
        if row["account_id"].startswith("user"):
            row.update(asn=3215, user_agent=ua)
    _assert_recipe_hydra(
        b.write(tmp_path / "log.jsonl"), tmp_path, ops, users, not_shared=("template", "client")
    )


def test_the_pace_bar_rarely_takes_a_person_for_a_script() -> None:
    """A Poisson-paced user (the least bursty a person is) falls under the script-pace bar by chance at most
    about 1 time in 500 at every request count from the minimum up, while a script that waits a uniform
    10 to 40 minutes is under it most of the time from 15 requests on."""
    from distillguard.detect.pipeline import PACE_MAX_CV, PACE_MIN_EXCHANGES, pace_bar

    rng = np.random.default_rng(3)
    for n in range(PACE_MIN_EXCHANGES, 41):
        bar = float(pace_bar(np.array([n]))[0])
        assert bar <= PACE_MAX_CV
        people = rng.exponential(1.0, (50_000, n - 1))
        cv = people.std(axis=1, ddof=1) / people.mean(axis=1)
        assert (cv < bar).mean() <= 0.004, n
        if n >= 15:
            script = rng.uniform(600, 2400, (5_000, n - 1))
            cv = script.std(axis=1, ddof=1) / script.mean(axis=1)
            assert (cv < bar).mean() >= 0.8, n
