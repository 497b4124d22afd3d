"""End-to-end scans of small hand-built logs: verdicts, evidence, campaigns, outputs."""

import csv
import random
from datetime import timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.detect.pipeline import scan
from distillguard.exchange import tool_set_key

from ..conftest import T0, LogBuilder


def _mixed_log(builder: LogBuilder, corpora: dict[str, list[str]], tmp_path: Path) -> Path:
    for i in range(40):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 10 + i % 15, ip=f"198.51.100.{i}")
    ips = [f"203.0.113.{k}" for k in range(6)]
    for j in range(4):
        builder.orca_harvester(f"farm{j}", corpora["gsm8k"] + corpora["arena"], 400, ips)
    return builder.write(tmp_path / "log.jsonl")


def test_scan_flags_harvesters_and_links_them(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    log = _mixed_log(builder, corpora, tmp_path)
    res, summary = scan([log], tmp_path / "out")
    verdict = dict(zip(res.accounts.ids.tolist(), res.levels, strict=True))
    for j in range(4):
        assert verdict[f"farm{j}"] == "block"
    assert all(verdict[f"user{i:02d}"] == "ok" for i in range(40))
    assert summary["exchanges"] == len(builder.rows)
    # The four farm accounts share IPs, template and system prompt: one campaign, nothing else.
    assert len(res.campaigns.ids) == 1
    assert sorted(res.accounts.ids[res.campaigns.members[0]].tolist()) == [f"farm{j}" for j in range(4)]
    # Evidence names the signal, its value, threshold and example exchange ids.
    i = res.accounts.ids.tolist().index("farm0")
    ev = {e.signal: e for e in res.evidence[i]}
    assert ev["fingerprint.orca_system"].value == 1.0
    assert ev["fingerprint.orca_system"].examples
    assert ev["shape.max_tokens"].weight > 0
    assert ev["open_loop.single_turn"].threshold == 0.99


def test_scan_outputs(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    log = _mixed_log(builder, corpora, tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["scan", str(log), "--out", str(out)])
    assert r.exit_code == 0, r.output
    with open(out / "accounts.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"account_id", "score", "verdict", "campaign_id", "reasons"} <= set(rows[0])
    farm = next(r for r in rows if r["account_id"] == "farm1")
    assert farm["verdict"] == "block" and farm["campaign_id"] and "fingerprint.orca_system" in farm["reasons"]
    assert pq.read_table(out / "accounts.parquet").num_rows == len(rows)
    camps = orjson.loads((out / "campaigns.json").read_bytes())
    assert camps[0]["n_accounts"] == 4 and camps[0]["evidence"]
    ev_lines = (out / "evidence.jsonl").read_bytes().splitlines()
    assert len(ev_lines) == len(rows)
    # The packaged calibration states the benign false-positive rate of each level.
    summary = orjson.loads((out / "summary.json").read_bytes())
    levels = summary["calibration"]["levels"]
    assert set(levels) == {"watch", "suspect", "block"}
    assert 0.0 <= levels["block"]["benign_fpr"] <= levels["watch"]["benign_fpr"] <= 1.0


def test_follow_ups_explain_away_soft_evidence(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    """A tutoring-style account asks for steps at volume but converses: not above watch."""
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 12, ip=f"198.51.100.{i}")
    t = T0 + timedelta(hours=8)
    for k in range(600):
        t += timedelta(seconds=30 + (k % 7) * 20)
        q = corpora["gsm8k"][k % len(corpora["gsm8k"])]
        if k % 3 == 0:
            hist = [
                {"role": "user", "content": q},
                {
                    "role": "assistant",
                    "content": "First we add the apples and the oranges to find the total fruit.",
                },
            ]
            builder.add(
                "tutor",
                t,
                "Why do we add the apples and oranges first to get the total fruit?",
                history=hist,
                end_user=f"student{k % 90}",
                max_tokens=600,
            )
        else:
            builder.add(
                "tutor",
                t,
                q + " Explain step by step.",
                end_user=f"student{k % 90}",
                max_tokens=600,
                system_prompt="You are a patient maths tutor for children.",
            )
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    i = res.accounts.ids.tolist().index("tutor")
    assert res.levels[i] in ("ok", "watch")
    assert any(e.signal == "open_loop.follow_ups" and e.weight < 0 for e in res.evidence[i])


def test_strict_exit_code_and_quarantine(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    log = _mixed_log(builder, corpora, tmp_path)
    with open(log, "ab") as f:
        f.write(b"{not json\n")
        f.write(
            orjson.dumps(
                {
                    "exchange_id": "bad",
                    "ts": "2026-11-01T00:00:00Z",
                    "account_id": "x",
                    "model": "m",
                    "temperature": "hot",
                }
            )
            + b"\n"
        )
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["scan", str(log), "--out", str(out), "--strict"])
    assert r.exit_code == 3
    q = [orjson.loads(x) for x in (out / "quarantine.jsonl").read_bytes().splitlines()]
    n = len(builder.rows)
    assert [x["line"] for x in q] == [n + 1, n + 2]
    assert "temperature" in q[1]["reason"]
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["exchanges"] == n and summary["quarantined"] == 2
    r = CliRunner().invoke(app, ["scan", str(log), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 0


def test_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["scan", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "not found" in r.output


def _harness_run(builder: LogBuilder, account: str, questions: list[str], runs: int, **kw: object) -> None:
    """A benchmark run: every question once, a fraction of a second apart, repeated `runs` times a few hours
    apart; single-turn, step-by-step format and a fixed large output budget, as a GSM8K harness sends."""
    for r in range(runs):
        t = T0 + timedelta(hours=1 + 7 * r)
        for k, q in enumerate(questions):
            t += timedelta(seconds=0.4)
            builder.add(
                account,
                t,
                f"{q}\nLet's think step by step.",
                max_tokens=4096,
                exchange_id=f"{account}-{r}-{k}",
                **kw,
            )


def test_deterministic_reruns_explain_away_soft_evidence(
    builder: LogBuilder, corpora, tmp_path: Path
) -> None:
    """A harness re-running one benchmark at temperature 0 repeats its requests exactly, which a harvester
    pays for and learns nothing from: the replay mitigates its sweep-like shape. The same traffic sampled at
    temperature 0.9, and a temperature sweep that sends each prompt once per temperature, get no mitigation."""
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 12, ip=f"198.51.100.{i}")
    qs = corpora["gsm8k"][:150]
    _harness_run(builder, "harness", qs, 3, temperature=0.0)
    _harness_run(builder, "sampler", qs, 3, temperature=0.9)
    _harness_run(builder, "twice", qs, 2, temperature=0.0)
    # a harvester drawing its questions at random from a pool as large as its traffic repeats some by chance
    pool = corpora["gsm8k"][200:500]
    draw = random.Random(5)
    for k in range(len(pool)):
        builder.add("drawer", T0 + timedelta(hours=3, seconds=5 * k), draw.choice(pool), temperature=0.0)
    # a sweep: each question at temperatures 0.0 and 0.2 (both "deterministic"), never the same one twice
    for k, q in enumerate(qs * 3):
        builder.add(
            "sweep",
            T0 + timedelta(hours=2, seconds=2 * k),
            f"{q}\nLet's think step by step.",
            temperature=(0.0, 0.2, 0.0)[k // len(qs)] if k < 2 * len(qs) else 1.0,
            max_tokens=4096,
        )
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    ids = res.accounts.ids.tolist()

    def replay(acct: str) -> list[float]:
        return [e.weight for e in res.evidence[ids.index(acct)] if e.signal == "shape.deterministic_replay"]

    h, s = ids.index("harness"), ids.index("sampler")
    assert replay("harness") and replay("harness")[0] < 0  # 2 of 3 runs repeat the first: 67% replayed
    assert not replay("sampler") and not replay("sweep") and not replay("drawer")
    assert replay("twice") == [-2.5]  # a second full run of the set: every request sent twice, full strength
    # the mitigation lowers the harness below the identical traffic that samples new answers
    assert res.accounts.score[h] < res.accounts.score[s]
    assert res.levels[h] in ("ok", "watch")


def test_requests_offering_tools_count_as_the_tool_use_capability(
    builder: LogBuilder, tmp_path: Path
) -> None:
    """A function-calling harvest asks about weather, travel and shopping, topics no keyword makes a
    capability; the tools it offers with every request do. The same questions without tools do not."""
    cities = ["Paris", "Lima", "Osaka", "Accra", "Oslo", "Quito", "Perth", "Cairo", "Hanoi", "Dakar"]
    asks = [
        "What will the weather be in {c} on day {k}?",
        "Book a table for {k} people in {c} tonight.",
        "Find me a flight to {c} that leaves after {k} pm.",
        "Order {k} bags of coffee to my address in {c}.",
    ]
    for acct, tools in (("toolfarm", 4), ("plain", 0)):
        for k in range(600):
            builder.add(
                acct,
                T0 + timedelta(seconds=40 * k),
                asks[k % len(asks)].format(c=cities[k % len(cities)], k=k),
                n_tools=tools + k % 3 if tools else 0,
                max_tokens=1024,
                temperature=0.7,
            )
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    focus = {f.name: f for f in res.accounts.findings}["coverage.capability_focus"]
    assert focus.value[ids.index("toolfarm")] == 1.0 and focus.strength[ids.index("toolfarm")] > 0.5
    assert focus.value[ids.index("plain")] == 0.0 and focus.strength[ids.index("plain")] == 0.0


JUDGE = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant "
    "to the user question displayed below. Rate the response on a scale of 1 to 10 by strictly following "
    'this format: "[[rating]]".\n\n[Question]\n{q}\n\n[The Start of Assistant\'s Answer]\n{a}\n'
    "[The End of Assistant's Answer]"
)


def test_grading_its_own_answers_is_evaluation_not_harvest(
    builder: LogBuilder, corpora, tmp_path: Path
) -> None:
    """An evaluation harness grades the answers it got from the API; a judge harvest grades answers from
    elsewhere. Same prompts, same shape: only the harness's grading is explained away."""
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 12, ip=f"198.51.100.{i}")
    qs = corpora["arena"][:200]
    for acct in ("harness", "harvest"):
        t = T0 + timedelta(hours=2)
        for k, q in enumerate(qs):
            t += timedelta(seconds=3)
            first = f"Here is how I would approach question {k} of this set, {acct}, in a few steps."
            ans = f"{first}\nFirst, consider what is being asked.\nThen weigh the options."
            if acct == "harness":
                builder.add(acct, t, q, temperature=0.0, max_tokens=2048, response=ans)
            else:  # graded answers from its own student model: never an answer this API gave it
                ans = f"A student model's answer {k} to the question, written elsewhere.\n{ans}"
            builder.add(
                acct,
                t + timedelta(hours=1),
                JUDGE.format(q=q, a=ans),
                temperature=0.0,
                max_tokens=2048,
                response="The answer is clear and correct. Rating: [[8]]",
            )
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    own = {f.name: f for f in res.accounts.findings}["open_loop.grades_own_answers"]
    h, v = ids.index("harness"), ids.index("harvest")
    assert own.value[h] == 1.0 and own.strength[h] == 1.0
    assert own.value[v] == 0.0 and own.strength[v] == 0.0
    assert any(e.signal == "open_loop.grades_own_answers" and e.weight < 0 for e in res.evidence[h])
    assert res.final_score[h] < res.final_score[v]


PERSONAS = [
    "a retired ship captain who restores sailing boats",
    "a night-shift nurse in a rural clinic",
    "a high-school chemistry teacher preparing lab safety rules",
    "a freelance translator of Japanese comics",
    "an urban beekeeper selling honey at markets",
]


def test_persona_driven_synthesis_is_recipe_evidence(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    """A Persona Hub harvest: every prompt is a different persona, wrapped in the recipe's meta-prompt, so no
    template repeats whole and no question recurs; the recipe names it. The chat users beside it, one of
    whom once asks for a dialogue between a user and an AI, stay ok."""
    for i in range(30):
        builder.chat_user(f"user{i:02d}", corpora["arena"], 15, ip=f"198.51.100.{i}")
    builder.add("user00", T0 + timedelta(hours=9), "Write a dialogue between a user and an AI about trains.")
    t = T0
    for k in range(120):
        t += timedelta(seconds=420)
        persona = f"{PERSONAS[k % len(PERSONAS)]}, {corpora['arena'][k][:60]}"
        builder.add(
            "synth",
            t,
            f"Create a {['math problem', 'coding task', 'logic puzzle'][k % 3]} related to the following "
            f"persona:\n\n{persona}\n\nNote: make full use of the persona description.",
            client_ip="203.0.113.9",
            max_tokens=2048,
        )
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    verdict = dict(zip(res.accounts.ids.tolist(), res.levels, strict=True))
    assert verdict["synth"] == "block"
    ev = {e.signal: e for e in res.evidence[res.accounts.ids.tolist().index("synth")]}
    assert ev["fingerprint.persona_synthesis"].value == 1.0 and ev["fingerprint.persona_synthesis"].examples
    assert all(verdict[f"user{i:02d}"] == "ok" for i in range(30))


def _agent_step_history(rng_i: int, task: str, steps: int) -> list[dict]:
    """An agent's request `steps` deep into a task: the task, then its tool calls and their results."""
    hist: list[dict] = []
    for s in range(steps):
        call = {"id": f"call_{rng_i}_{s}", "type": "function"}
        call["function"] = {
            "name": ["read_file", "run_tests", "grep"][s % 3],
            "arguments": f'{{"step": {s}}}',
        }
        hist.append({"role": "assistant", "content": None, "tool_calls": [call]})
        hist.append(
            {"role": "tool", "tool_call_id": call["id"], "content": f"output of step {s} for {task[:30]}"}
        )
    return hist


def test_agent_loops_are_not_resampling(builder: LogBuilder, corpora, tmp_path: Path) -> None:
    """A coding agent sends its task as the last user message at every step of the loop, followed by the
    tool calls and results so far: the same user message many times, but never the same request. Nor is a
    harvest's agent loop at temperature 0 a benchmark re-run."""
    t = T0 + timedelta(hours=9)
    for k, task in enumerate(corpora["arena"][:25]):
        for steps in range(8):
            t += timedelta(seconds=40 + 7 * steps)
            for acc, temp in (("agent", 0.7), ("agent_t0", 0.0)):
                builder.add(
                    acc,
                    t,
                    task,
                    history=[],
                    temperature=temp,
                    n_tools=3,
                    client_ip="198.51.100.77",
                )
                row = builder.rows[-1]
                row["messages"] = [{"role": "user", "content": task}, *_agent_step_history(k, task, steps)]
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    f = {x.name: x for x in res.accounts.findings}
    for acc in ("agent", "agent_t0"):
        i = ids.index(acc)
        assert f["shape.multi_sample"].value[i] == 0.0, acc
        assert f["shape.deterministic_replay"].value[i] == 0.0, acc


def test_a_tool_loop_is_one_prompt_not_single_turn_prompts(
    builder: LogBuilder, corpora, tmp_path: Path
) -> None:
    """Each step of an agent's loop repeats its task as the one user message, after the tool calls and
    results so far. The steps after the first are not new single-turn prompts, nor a template reused,
    nor a person's follow-ups; the first step is the task's prompt. The same goes for the older API's
    "function" role. A prompt that merely quotes `"role":"tool"` is an ordinary prompt."""
    t = T0 + timedelta(hours=9)
    tasks = corpora["arena"][:40]
    for k, task in enumerate(tasks):
        for steps in range(6):
            t += timedelta(seconds=30)
            for acc in ("agent", "legacy"):
                builder.add(
                    acc, t, task, temperature=0.0, max_tokens=8192, n_tools=3, client_ip="198.51.100.8"
                )
                hist = _agent_step_history(k, task, steps)
                if acc == "legacy":
                    hist = [
                        {"role": "function", "name": "read_file", "content": m["content"]}
                        if m["role"] == "tool"
                        else {"role": "assistant", "content": "calling read_file"}
                        for m in hist
                    ]
                builder.rows[-1]["messages"] = [{"role": "user", "content": task}, *hist]
        quoting = f'Why does my client send {{"role":"tool","content":"{k}"}} back? {task[:200]}'
        builder.add("quoting", t, quoting, client_ip="198.51.100.9")
    res, _ = scan([builder.write(tmp_path / "log.jsonl")], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    f = {x.name: x for x in res.accounts.findings}
    for acc in ("agent", "legacy"):
        i = ids.index(acc)
        # 40 tasks, 240 requests: only each task's first request is a single-turn prompt.
        assert f["open_loop.single_turn"].value[i] == 40 / 240, acc
        assert f["open_loop.single_turn"].strength[i] == 0.0, acc
        assert f["open_loop.follow_ups"].value[i] == 0.0, acc
        # Each task is one prompt, sent once: no template is reused.
        assert f["skeleton.reuse"].value[i] == 0.0, acc
    assert f["open_loop.single_turn"].value[ids.index("quoting")] == 1.0


def test_a_new_set_of_tools_per_task_is_synthetic_tool_use(
    builder: LogBuilder, corpora, tmp_path: Path
) -> None:
    """Synthetic tool-use data samples a new set of tools for every task; an application offers its own."""
    t = T0 + timedelta(hours=8)
    for k in range(80):
        t += timedelta(seconds=300)
        task = corpora["arena"][k]
        builder.add("toolsynth", t, task, n_tools=3 + (k * 5) % 8, client_ip="203.0.113.40")
        builder.add("agent_app", t, task, n_tools=6, client_ip="198.51.100.41")
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    f = next(x for x in res.accounts.findings if x.name == "shape.tool_variety")
    assert f.value[ids.index("toolsynth")] == 8 and f.strength[ids.index("toolsynth")] == 1.0
    assert f.value[ids.index("agent_app")] == 1 and f.strength[ids.index("agent_app")] == 0.0
    ev = {e.signal for e in res.evidence[ids.index("toolsynth")]}
    assert "shape.tool_variety" in ev


def test_a_harvest_that_always_offers_five_tools_is_seen_by_their_names(
    builder: LogBuilder, corpora, tmp_path: Path
) -> None:
    """A synthetic tool-use harvest can keep the number of tools fixed; the names still change with every
    task. An application offering its five tools, and one logged with counts only, keep one set."""
    t = T0 + timedelta(hours=8)
    pool = [f"api_{i}" for i in range(60)]
    for k in range(80):
        t += timedelta(seconds=300)
        task = corpora["arena"][k]
        names = [pool[(7 * k + j * 11) % 60] for j in range(5)]
        builder.add("fivesynth", t, task, n_tools=5, tool_set=tool_set_key([{"name": x} for x in names]))
        app = tool_set_key([{"name": x} for x in ("search", "fetch", "sql", "mail", "calendar")])
        builder.add("agent_app", t, task, n_tools=5, tool_set=app, client_ip="198.51.100.41")
        builder.add("counted", t, task, n_tools=5, client_ip="198.51.100.42")
    res, _ = scan([builder.write(tmp_path / "log.jsonl")], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    f = next(x for x in res.accounts.findings if x.name == "shape.tool_variety")
    assert f.value[ids.index("fivesynth")] >= 60 and f.strength[ids.index("fivesynth")] == 1.0
    for acc in ("agent_app", "counted"):
        assert f.value[ids.index(acc)] == 1 and f.strength[ids.index(acc)] == 0.0


def test_an_account_rotating_through_proxies_comes_from_many_networks(
    builder: LogBuilder, corpora, tmp_path: Path
) -> None:
    """A new /24 every request or two is a rotating proxy pool; a person's home, office and phone are
    three networks, and a phone's IPv6 privacy addresses within its /64 are one."""
    t = T0 + timedelta(hours=8)
    for k in range(30):
        t += timedelta(seconds=700)
        p = corpora["arena"][k]
        builder.add("rotator", t, p, client_ip=f"203.0.{k // 2}.{10 + k}")
        builder.add("v6rotator", t, p, client_ip=f"2001:db8:{k:x}::1")
        builder.add(
            "traveller", t, p, client_ip=("198.51.100.7", "192.0.2.33", "100.64.9.1", "100.64.9.200")[k % 4]
        )
        v6 = f"2001:db8:aa:1:{k:x}:{3 * k:x}:9:{k + 1:x}"
        builder.add("v6phone", t, p, client_ip=v6.upper() if k % 2 else v6)  # either case is the same address
    log = builder.write(tmp_path / "log.jsonl")
    res, _ = scan([log], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    f = next(x for x in res.accounts.findings if x.name == "network.rotation")
    value = {a: f.value[ids.index(a)] for a in ("rotator", "v6rotator", "traveller", "v6phone")}
    strength = {a: f.strength[ids.index(a)] for a in value}
    assert value == {"rotator": 15, "v6rotator": 30, "traveller": 3, "v6phone": 1}
    assert strength["rotator"] == 1.0 and strength["v6rotator"] == 1.0
    assert strength["traveller"] == 0.0 and strength["v6phone"] == 0.0
    assert "network.rotation" in {e.signal for e in res.evidence[ids.index("rotator")]}


def test_log_probabilities_count_over_whole_answers_not_over_labels(
    builder: LogBuilder, corpora, tmp_path: Path
) -> None:
    """A classifier asks for log-probabilities to read its label's confidence (a few tokens, whatever output
    budget it sets); a logit-distillation harvest asks for them over whole answers."""
    t = T0 + timedelta(hours=8)
    for k in range(60):
        t += timedelta(seconds=120)
        p = corpora["arena"][k]
        builder.add(
            "classifier",
            t,
            f"Label the ticket as bug or feature: {p}",
            logprobs=True,
            top_logprobs=5,
            max_tokens=512,
            completion_tokens=2,
            client_ip="198.51.100.60",
        )
        builder.add(
            "kd_harvest",
            t,
            p,
            logprobs=True,
            top_logprobs=20,
            max_tokens=2048,
            completion_tokens=420,
            client_ip="198.51.100.61",
        )
    res, _ = scan([builder.write(tmp_path / "log.jsonl")], tmp_path / "out")
    ids = res.accounts.ids.tolist()
    f = next(x for x in res.accounts.findings if x.name == "shape.logprobs")
    assert f.value[ids.index("classifier")] == 0.0 and f.strength[ids.index("classifier")] == 0.0
    assert f.value[ids.index("kd_harvest")] == 1.0 and f.strength[ids.index("kd_harvest")] == 1.0
