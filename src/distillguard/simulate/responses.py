"""Synthetic but plausible model outputs (and the filler content of templated prompts), without an LLM.

Everything is assembled from pools built once at start-up (paragraphs, code snippets, reasoning steps,
instruction records, tickets...), so one response costs a handful of random picks and a join: the
simulator has to produce tens of thousands of exchanges per second. Answers mention the prompt's topic
and expose "hooks" (phrases they contain) so that simulated follow-ups can quote the answer they follow,
as real follow-ups do. GSM8K answers reuse the dataset's worked solutions.
"""

from __future__ import annotations

import functools
import random
import re
import zlib

import orjson

from distillguard.simulate.corpora import Corpora, Item

# -- pools ---------------------------------------------------------------------------------------------
NOUNS = (
    "the overall design",
    "error handling",
    "the main trade-off",
    "performance",
    "memory usage",
    "readability",
    "the edge cases",
    "the input data",
    "the configuration",
    "the user experience",
    "the budget",
    "the timeline",
    "scalability",
    "the test suite",
    "the data model",
    "the first step",
    "security",
    "the final result",
    "the underlying assumption",
    "long-term maintenance",
    "the cost",
    "the initial setup",
    "the key metric",
    "the deployment",
    "the API surface",
    "the naming",
    "the documentation",
    "team communication",
    "the risk",
    "the dependencies",
    "the baseline",
    "the caching layer",
    "accessibility",
    "the schedule",
    "the core idea",
    "the constraints",
    "the stakeholders",
    "the requirements",
    "the output format",
    "the validation step",
)
HEADINGS = (
    "Key considerations",
    "Practical steps",
    "Common pitfalls",
    "Performance",
    "A simple example",
    "Why it matters",
    "Alternatives",
    "Getting started",
    "Best practices",
    "Trade-offs",
    "Next steps",
    "Background",
    "How it works",
    "Recommendations",
    "Things to avoid",
    "Testing",
    "Summary",
    "Cost and effort",
    "Risks",
    "Quick checklist",
)
_SENTENCES = (
    "A good starting point is to look at {n} before changing anything else.",
    "In practice, {n} tends to matter more than people expect.",
    "It helps to keep {n} simple at first and refine it once you have feedback.",
    "One common mistake is to ignore {n} until late in the process.",
    "If {n} is a concern, measure it first rather than guessing.",
    "Most teams find that {n} improves quickly with a few small, focused changes.",
    "You can think of {n} as a balance between effort and benefit.",
    "This approach keeps {n} predictable and easy to reason about.",
    "Be careful with {n}, because small mistakes there are hard to spot later.",
    "A quick way to check {n} is to try it on a small example first.",
    "Writing down {n} explicitly makes later decisions much easier.",
    "For most use cases, the default handling of {n} is good enough.",
    "When {n} changes, revisit the earlier assumptions as well.",
    "There is no single right answer here; it depends on {n}.",
    "The main benefit is that {n} becomes easier to maintain over time.",
    "Consider how {n} will behave when the amount of data grows.",
    "A useful rule of thumb is to optimise {n} only after it works correctly.",
    "Documenting {n} saves time for everyone who comes after you.",
    "If you are unsure, start with {n} and iterate from there.",
    "Keep in mind that {n} interacts with several other parts of the system.",
    "Many experienced practitioners treat {n} as the first thing to get right.",
    "Comparing two or three options for {n} side by side usually clarifies the choice.",
    "This is also where {n} can introduce subtle bugs, so test it well.",
    "The result depends heavily on {n}, so it is worth a closer look.",
    "Automating the checks around {n} pays off surprisingly quickly.",
    "It is worth asking whether {n} is really the bottleneck here.",
    "Small, incremental changes to {n} are easier to review and to roll back.",
    "Ideally, {n} should be visible in your monitoring or reports.",
    "Another option is to handle {n} in a separate, dedicated step.",
    "That said, {n} is rarely the whole story.",
)
_OPENERS = (
    "Here's an overview of {t}.",
    "Great question! When it comes to {t}, there are a few things to keep in mind.",
    "Sure, let's look at {t} step by step.",
    "There are several ways to approach {t}; here are the most useful ones.",
    "Short answer: it depends, but here is how I would think about {t}.",
    "Below is a practical guide to {t}.",
    "Certainly! Here is a clear explanation of {t}.",
    "Let me break down {t} into its main parts.",
    "{T} is a common topic, and the details matter.",
    "Here is what you need to know about {t}.",
)
_CLOSERS = (
    "Let me know if you'd like more detail on any of these points.",
    "I hope this helps! Feel free to ask follow-up questions.",
    "If you share more about your situation, I can tailor this further.",
    "In summary, start simple, measure, and iterate.",
    "Would you like an example or a shorter version?",
    "",
)
_STEPS = (
    "Identify what the question is asking: {t}.",
    "List the known facts and the quantities involved in {t}.",
    "Break the problem into smaller parts and handle {n} first.",
    "Recall the relevant definition, since it determines how {n} is treated.",
    "Apply the definition to the given input and note each intermediate result.",
    "Check whether {n} changes the conclusion; it does not, so we continue.",
    "Combine the partial results into a single answer.",
    "Verify the answer against the original constraints.",
    "Consider an alternative interpretation and explain why it is less likely.",
    "Justify the choice by pointing to the part of the task that requires it.",
    "Compute the value carefully, keeping track of units.",
    "Compare the candidate answers and eliminate the ones that contradict the facts.",
    "Summarise the reasoning in one sentence to make sure it is consistent.",
    "Re-read the task to confirm nothing was missed about {n}.",
)
_THINK = (
    "Okay, the user is asking about {t}. Let me think about what they actually need.",
    "First, I should pin down the definitions involved.",
    "Hmm, wait. That assumption about {n} might not hold, let me re-check it.",
    "Let me try a concrete example to see if this works.",
    "Alternatively, I could approach it from the other direction.",
    "So far: the key facts are established, and {n} is consistent with them.",
    "Actually, I made an arithmetic slip above; redoing that step.",
    "Is there an edge case? If {n} is empty, the answer changes.",
    "I think the cleanest explanation is to start from the basics.",
    "Now let me double-check the final result against the question.",
    "That seems right, but let me verify once more with different numbers.",
    "The user probably wants a concise answer with a short justification.",
)
_JUDGE = (
    "The response addresses the question directly and is factually accurate.",
    "It provides relevant detail, although some parts could be more concise.",
    "The explanation is clear and well organised.",
    "However, it misses one important aspect of the question.",
    "The answer contains a minor inaccuracy that affects its helpfulness.",
    "Overall, the response is helpful and appropriately detailed.",
    "Compared with the other answer, it is more complete and better structured.",
    "It follows the user's instructions closely.",
    "The reasoning is sound, but the conclusion could be stated more clearly.",
    "The level of detail is appropriate for the question.",
)
_CONSTRAINTS = (
    "The answer must also discuss {n} and give one concrete example.",
    "Include a short table that compares at least three options.",
    "Limit the response to 150 words and justify each claim.",
    "Explain the reasoning in numbered steps before giving the final answer.",
    "Assume the reader is a domain expert and avoid introductory material.",
    "Address how the answer changes if {n} is doubled.",
    "Provide the answer first in plain language and then in formal terms.",
    "Consider at least two competing viewpoints and reconcile them.",
    "The solution should also handle the case where the input is empty.",
    "Add a brief discussion of the historical context.",
    "Make the answer suitable for a ten-year-old, using an analogy.",
    "Describe one common misconception and correct it.",
)
_CODE = {
    "python": (
        "def {fn}(items: list[str]) -> dict[str, int]:\n"
        '    """Count how often each item appears."""\n'
        "    counts: dict[str, int] = {{}}\n"
        "    for item in items:\n"
        "        counts[item] = counts.get(item, 0) + 1\n"
        "    return counts\n\n\n"
        'if __name__ == "__main__":\n'
        '    print({fn}(["a", "b", "a"]))',
        "import pandas as pd\n\n\n"
        "def {fn}(path: str) -> pd.DataFrame:\n"
        "    df = pd.read_csv(path)\n"
        "    df = df.dropna(subset=['value'])\n"
        "    df['value'] = df['value'].astype(float)\n"
        "    return df.groupby('category', as_index=False)['value'].sum()",
        "import asyncio\n\n\n"
        "async def {fn}(urls, fetch, limit=8):\n"
        "    sem = asyncio.Semaphore(limit)\n\n"
        "    async def one(url):\n"
        "        async with sem:\n"
        "            return await fetch(url)\n\n"
        "    return await asyncio.gather(*(one(u) for u in urls))",
        "class {cls}:\n"
        "    def __init__(self, capacity: int) -> None:\n"
        "        self.capacity = capacity\n"
        "        self.items: list[int] = []\n\n"
        "    def push(self, x: int) -> None:\n"
        "        if len(self.items) >= self.capacity:\n"
        "            raise OverflowError('full')\n"
        "        self.items.append(x)\n\n"
        "    def pop(self) -> int:\n"
        "        return self.items.pop()",
    ),
    "javascript": (
        "function {fn}(arr) {{\n"
        "  const seen = new Set();\n"
        "  return arr.filter((x) => {{\n"
        "    if (seen.has(x)) return false;\n"
        "    seen.add(x);\n"
        "    return true;\n"
        "  }});\n"
        "}}\n\n"
        "console.log({fn}([1, 2, 2, 3]));",
        "export async function {fn}(url) {{\n"
        "  const res = await fetch(url, {{ headers: {{ Accept: 'application/json' }} }});\n"
        "  if (!res.ok) throw new Error(`HTTP ${{res.status}}`);\n"
        "  return res.json();\n"
        "}}",
    ),
    "typescript": (
        "interface {cls} {{\n  id: string;\n  name: string;\n  createdAt: Date;\n}}\n\n"
        "export function {fn}(rows: {cls}[]): Map<string, {cls}> {{\n"
        "  return new Map(rows.map((r) => [r.id, r]));\n"
        "}}",
    ),
    "sql": (
        "SELECT customer_id,\n       COUNT(*) AS orders,\n       SUM(total) AS revenue\n"
        "FROM orders\nWHERE created_at >= DATE '2024-01-01'\nGROUP BY customer_id\n"
        "HAVING COUNT(*) > 1\nORDER BY revenue DESC;",
    ),
    "bash": (
        "#!/usr/bin/env bash\nset -euo pipefail\n\n"
        'for f in "$@"; do\n  echo "processing $f"\n  gzip -k "$f"\ndone',
    ),
    "rust": (
        "fn {fn}(v: &[i64]) -> Option<i64> {{\n"
        "    v.iter().copied().max()\n"
        "}}\n\n"
        "fn main() {{\n"
        '    println!("{{:?}}", {fn}(&[3, 1, 4]));\n'
        "}}",
    ),
    "cpp": (
        "#include <bits/stdc++.h>\nusing namespace std;\n\n"
        "int main() {{\n    int t; cin >> t;\n    while (t--) {{\n        string s; cin >> s;\n"
        '        int diff = 0;\n        for (int i = 0; i < 3; ++i) diff += s[i] != "abc"[i];\n'
        '        cout << (diff <= 2 ? "YES" : "NO") << "\\n";\n    }}\n}}',
    ),
}
_LANG_HINT = (
    ("python", re.compile(r"python|pandas|django|flask|pytorch|numpy|matplotlib|jax|gradio|streamlit", re.I)),
    ("typescript", re.compile(r"typescript|angular|next\.js", re.I)),
    ("javascript", re.compile(r"javascript|node|react|js\b", re.I)),
    ("sql", re.compile(r"\bsql\b|postgres|query|database", re.I)),
    ("bash", re.compile(r"bash|shell|linux|awk|sed|grep|cron", re.I)),
    ("rust", re.compile(r"\brust\b", re.I)),
    ("cpp", re.compile(r"c\+\+|\bcpp\b", re.I)),
)
LABELS = (
    "positive",
    "negative",
    "neutral",
    "Billing",
    "Technical issue",
    "Account access",
    "Shipping",
    "Refund request",
    "Feature request",
    "Spam",
    "Not spam",
    "High",
    "Medium",
    "Low",
    "Yes",
    "No",
)
_NAMES = (
    "Alex Kim",
    "Maria Lopez",
    "Sam Patel",
    "Jordan Lee",
    "Priya Nair",
    "Tom Becker",
    "Chen Wei",
    "Ana Souza",
    "Lucas Martin",
    "Emma Schmidt",
    "Yuki Tanaka",
    "Omar Haddad",
    "Grace Okafor",
    "Liam O'Brien",
)
_PRODUCTS = (
    "wireless earbuds",
    "standing desk",
    "coffee grinder",
    "running shoes",
    "laptop sleeve",
    "air purifier",
    "smart thermostat",
    "yoga mat",
    "backpack",
    "phone case",
    "electric kettle",
    "monitor arm",
    "subscription plan",
    "mobile app",
    "online course",
    "hotel stay",
    "meal kit",
    "car rental",
)
_ISSUES = (
    "I was charged twice for my last order",
    "the app crashes when I open the settings page",
    "my package has not arrived after two weeks",
    "I can't log in after resetting my password",
    "the item arrived damaged",
    "I'd like to cancel my subscription before renewal",
    "the invoice shows the wrong company address",
    "the discount code was not applied",
    "I never received the confirmation email",
    "the product stopped working after a month",
    "I want to change the delivery address",
    "the export to CSV produces an empty file",
)
_MOODS = (
    "Honestly, I'm pretty frustrated.",
    "Thanks in advance for your help.",
    "This is urgent for us.",
    "Not a big deal, just wanted to let you know.",
    "Please advise as soon as possible.",
    "Otherwise I'm really happy with the service.",
    "This is the second time this has happened.",
)
_REVIEW = (
    "Works exactly as described and the battery lasts all day.",
    "Stopped working after three weeks.",
    "Great value for the price, would buy again.",
    "Shipping was slow but the product is fine.",
    "The build quality feels cheap and the buttons stick.",
    "Setup took five minutes, very intuitive.",
    "Customer service never answered my emails.",
    "It's okay, nothing special.",
    "Much quieter than my old one.",
    "Instructions were confusing and parts were missing.",
)
_FACTS = (
    "The warranty covers manufacturing defects for 24 months from the date of purchase.",
    "Refunds are issued to the original payment method within 5 to 10 business days.",
    "Enterprise plans include single sign-on and a dedicated support contact.",
    "Orders above 50 EUR ship free within the European Union.",
    "Passwords must be at least 12 characters and are rotated every 90 days.",
    "The API rate limit is 600 requests per minute per organisation.",
    "Support is available Monday to Friday, 8:00 to 18:00 CET.",
    "Data is stored in the EU region and encrypted at rest.",
    "Annual subscriptions can be cancelled within 14 days for a full refund.",
    "Exports are limited to 100,000 rows per file.",
    "Invoices are generated on the first business day of each month.",
    "Accounts inactive for 24 months are archived after a notice email.",
)
_GEN_TASKS = (
    "Write a short poem about {n}.",
    "Give three tips for improving {n}.",
    "Explain {n} to a beginner.",
    "Classify the following sentence as formal or informal.",
    "Summarize the paragraph below in one sentence.",
    "Rewrite the following text in a more polite tone.",
    "Generate a catchy title for an article about {n}.",
    "What are the pros and cons of focusing on {n}?",
    "Translate the sentence into French.",
    "Suggest a name for a startup that works on {n}.",
    "Is the following statement true or false?",
    "Create a multiple-choice question about {n}.",
    "Find the odd one out in the list.",
    "Write a product description for a {p}.",
    "Convert the list into a comma-separated sentence.",
    "Describe a typical day of someone who works on {n}.",
    "Give an example of a metaphor about {n}.",
    "Sort the following numbers in ascending order.",
    "Write a tweet announcing a new {p}.",
    "Identify the main verb in the sentence.",
    "Draft a two-sentence apology email about a delayed {p}.",
    "Propose an experiment to test an idea about {n}.",
    "List five words that rhyme with 'light'.",
    "How would you explain {n} using a cooking analogy?",
    "Edit the sentence to remove redundancy.",
)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@functools.lru_cache(maxsize=8192)
def code_language(prompt: str) -> str:
    """The language a coding prompt asks for (cached: the same corpus prompts come back again and again)."""
    head = prompt[:600]
    for name, rx in _LANG_HINT:
        if rx.search(head):
            return name
    return "python"


_NUM = re.compile(r"\d[\d,.]*\d|\d")
_STYLES = ("plain", "bullet", "h3")
_SEP = {"plain": "\n\n", "bullet": "\n", "h3": "\n\n"}


class Bank:
    """Pre-built text pools plus fast assemblers. One per simulation; deterministic for its seed.

    Assembling is a few random picks and one join: paragraphs are pre-formatted in each layout, numbered
    step lists, reasoning blocks and instruction lists are pre-built (lazily, per size), and GSM8K answers are
    formatted once per problem and style.
    """

    def __init__(self, corpora: Corpora, seed: int = 0) -> None:
        r = random.Random(seed * 7919 + 17)
        self.seed = seed
        self.c = corpora
        real = []
        # Real sentences from the corpora's reference outputs make the pool less repetitive.
        for it in corpora.user_oriented + corpora.seed_tasks:
            for s in re.split(r"(?<=[.!?])\s+", it.answer.replace("\n", " ")):
                if 8 <= s.count(" ") <= 40 and s[:1].isupper():
                    real.append(s)
        self.real = tuple(real)

        def sentence() -> str:
            if real and r.random() < 0.3:
                return r.choice(real)
            return _cap(r.choice(_SENTENCES).format(n=r.choice(NOUNS)))

        self.sentences = tuple(sentence() for _ in range(3000))
        texts, hooks = [], []
        for _ in range(2000):
            ss = [sentence() for _ in range(r.randint(3, 6))]
            texts.append(" ".join(ss))
            s = r.choice(ss).split()
            i = r.randint(0, max(0, len(s) - 4))
            hooks.append(" ".join(s[i : i + r.randint(3, 5)]).strip(".,;:!?\"'"))
        self.hooks = tuple(hooks)
        # The same paragraphs pre-formatted in each layout (the layout is picked per answer).
        self.paras: dict[str, tuple[str, ...]] = {
            "plain": tuple(texts),
            "bullet": tuple(f"- **{r.choice(HEADINGS)}**: {t}" for t in texts),
            "h3": tuple(f"### {r.choice(HEADINGS)}\n{t}" for t in texts),
        }
        self.step_lines = tuple(
            _cap(r.choice(_STEPS)).replace("{n}", r.choice(NOUNS)).replace("{t}", "the task")
            + " "
            + self.sentences[i]
            for i in range(1200)
        )
        thoughts = [
            r.choice(_THINK).replace("{n}", r.choice(NOUNS)).replace("{t}", "this") for _ in range(3000)
        ]
        self.thought_blocks = tuple("\n".join(thoughts[i : i + 5]) for i in range(0, 3000, 5))
        inputs = [x for it in corpora.seed_tasks + corpora.user_oriented for x in it.extra if x.strip()]
        outputs = [it.answer for it in corpora.seed_tasks + corpora.user_oriented if it.answer.strip()]
        self.inputs = tuple(inputs)
        self.outputs = tuple(o if len(o) < 600 else o[:600].rsplit(" ", 1)[0] for o in outputs)
        # Generated "instructions" as an Alpaca run would produce them: templated tasks and app tasks.
        instr = [
            r.choice(_GEN_TASKS).format(n=r.choice(NOUNS).removeprefix("the "), p=r.choice(_PRODUCTS))
            for _ in range(3000)
        ]
        instr += [it.text for it in corpora.user_oriented if len(it.text) < 300]
        self.instructions = tuple(instr)
        self.items = tuple(self._item(r) for _ in range(2500))
        self.tickets = tuple(self._ticket(r) for _ in range(800))
        self.reviews = tuple(
            f"{r.choice(_REVIEW)} {r.choice(_REVIEW)} Rating: {r.randint(1, 5)}/5. Product: {r.choice(_PRODUCTS)}."
            for _ in range(800)
        )
        self.emails = tuple(self._email(r) for _ in range(800))
        self.passages = tuple(" ".join(r.sample(_FACTS, 3)) + " " + self.sentences[i] for i in range(800))
        self._steps: dict[int, tuple[str, ...]] = {}
        self._lists: dict[int, tuple[str, ...]] = {}
        self._gsm: dict[tuple[int, int], str] = {}
        self._lines: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    # -- prompt filler -------------------------------------------------------------------------------
    def _item(self, r: random.Random) -> tuple[str, str, str]:
        inp = r.choice(self.inputs) if r.random() < 0.6 and self.inputs else ""
        if len(inp) > 500:
            inp = inp[:500].rsplit(" ", 1)[0]
        out = r.choice(self.outputs) if self.outputs else r.choice(self.sentences)
        return r.choice(self.instructions), inp, out

    def _ticket(self, r: random.Random) -> str:
        return (
            f"Ticket #{r.randint(10000, 99999)}\nFrom: {r.choice(_NAMES)}\nProduct: {r.choice(_PRODUCTS)}\n\n"
            f"Hi, {r.choice(_ISSUES)}. {r.choice(_ISSUES).capitalize()} as well. {r.choice(_MOODS)}"
        )

    def _email(self, r: random.Random) -> str:
        company = r.choice(["acme-supplies", "northwind", "globex", "initech"])
        return (
            f"From: {r.choice(_NAMES)} <billing@{company}.com>\n"
            f"Subject: Invoice INV-{r.randint(10000, 99999)}\n\nHello,\nplease find attached invoice "
            f"INV-{r.randint(10000, 99999)} dated 2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} for "
            f"{r.randint(2, 40)} units of {r.choice(_PRODUCTS)}, total {r.randint(100, 9000)}.{r.randint(0, 99):02d} "
            f"{r.choice(['EUR', 'USD', 'GBP'])}. Payment is due within 30 days.\nBest regards"
        )

    def instruction_item(self, rnd: random.Random) -> tuple[str, str]:
        """A generated instruction with its input ("" when none), as an Alpaca-style run would ask."""
        instr, inp, _ = self.items[int(rnd.random() * len(self.items))]
        return instr, inp

    # -- responses -----------------------------------------------------------------------------------
    def chat(self, rnd: random.Random, topic: str, words: int) -> tuple[str, str]:
        """A chat answer of about `words` words, and a hook phrase from it that a follow-up can quote."""
        style = _STYLES[int(rnd.random() * 3)]
        pool = self.paras[style]
        n = len(pool)
        idx = [int(rnd.random() * n) for _ in range(max(1, words // 70))]
        opener = _OPENERS[int(rnd.random() * len(_OPENERS))].format(t=topic, T=_cap(topic))
        body = _SEP[style].join([pool[i] for i in idx])
        closer = _CLOSERS[int(rnd.random() * len(_CLOSERS))]
        return f"{opener}\n\n{body}\n\n{closer}".rstrip(), self.hooks[idx[0]]

    def code(self, rnd: random.Random, prompt: str, topic: str, words: int) -> tuple[str, str]:
        lang = code_language(prompt)
        snippets = _CODE[lang]
        slug = "_".join(topic.split()[:2]).replace("-", "_").replace("'", "") or "solve"
        cls = "".join(w.capitalize() for w in slug.split("_"))
        snippet = snippets[int(rnd.random() * len(snippets))].format(fn=slug, cls=cls)
        text, hook = self.chat(rnd, topic, max(60, words - 80))
        first, _, rest = text.partition("\n\n")
        return f"{first}\n\n```{lang}\n{snippet}\n```\n\n{rest}", hook

    def steps_answer(self, rnd: random.Random, topic: str, n_steps: int, final: str = "") -> str:
        """Numbered step-by-step reasoning (what Orca-style system prompts ask for)."""
        pool = self._steps.get(n_steps)
        if pool is None:
            # Seeded by size, not by first use, so pools never depend on the order requests come in.
            r, sl = random.Random(self.seed * 1_000_003 + n_steps), self.step_lines
            pool = tuple(
                "\n".join(f"Step {i + 1}: {r.choice(sl)}" for i in range(n_steps)) for _ in range(150)
            )
            self._steps[n_steps] = pool
        end = (
            f"Therefore, the final answer is {final}." if final else self.sentences[int(rnd.random() * 3000)]
        )
        return (
            f"To complete this task ({topic}), I will work through it step by step.\n\n"
            f"{pool[int(rnd.random() * 150)]}\n\n{end}"
        )

    def gsm8k(self, rnd: random.Random, item: Item, style: int) -> str:
        """A worked GSM8K answer: 0 terse as the dataset, 1 a tutor's numbered steps, 2 step-by-step CoT."""
        key = (id(item), style)
        text = self._gsm.get(key)
        if text is not None:
            return text
        lines = [x for x in item.answer.split("\n") if x.strip()]
        if style == 0:
            text = "\n".join(lines) + f"\nThe answer is {item.final}."
        elif style == 1:
            body = "\n".join(f"**Step {i + 1}:** {x}" for i, x in enumerate(lines))
            text = (
                f"Let's work through this together, one step at a time.\n\n{body}\n\n"
                f"So the answer is **{item.final}**. Does each step make sense?"
            )
        else:
            sl = self.step_lines
            body = "\n".join(
                f"{i + 1}. {x} {sl[zlib.crc32(x.encode()) % len(sl)]}" for i, x in enumerate(lines)
            )
            text = f"Let's think step by step.\n\n{body}\n\nTherefore, the final answer is {item.final}."
        self._gsm[key] = text
        return text

    def solution_lines(self, item: Item) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A GSM8K solution's lines and the last number on each (cached: students ask about them a lot)."""
        got = self._lines.get(id(item))
        if got is None:
            lines = tuple(x for x in item.answer.split("\n") if x.strip()) or (item.final,)
            nums = tuple((_NUM.findall(x) or [item.final])[-1] for x in lines)
            got = self._lines[id(item)] = (lines, nums)
        return got

    def explain_step(self, rnd: random.Random, item: Item, step: int) -> str:
        """A tutor's re-explanation of one step of a GSM8K solution."""
        lines = self.solution_lines(item)[0]
        x = lines[min(step, len(lines) - 1)]
        return (
            f"Of course! In step {step + 1} we have: {x}\n\n"
            f"{self.sentences[int(rnd.random() * 3000)]} Think of it this way: we only use the numbers the "
            f"problem gives us, and each step builds on the one before. After that step, the rest follows, "
            f"and we get {item.final}. Want me to try another example like this?"
        )

    def instruction_list(self, rnd: random.Random, k: int = 20) -> str:
        """What a Self-Instruct / Alpaca meta-prompt gets back: `k` numbered instruction/input/output records."""
        pool = self._lists.get(k)
        if pool is None:
            r, items = random.Random(self.seed * 1_000_003 + 500 + k), self.items
            lists = []
            for _ in range(120):
                recs = []
                for i in range(1, k + 1):
                    ins, inp, out = r.choice(items)
                    recs.append(
                        f"{i}. Instruction: {ins}\n{i}. Input:\n{inp or '<noinput>'}\n{i}. Output:\n{out}"
                    )
                lists.append("\n###\n".join(recs))
            pool = tuple(lists)
            self._lists[k] = pool
        return pool[int(rnd.random() * len(pool))]

    def rewrite(self, rnd: random.Random, prompt: str) -> str:
        """An Evol-Instruct rewrite: the prompt with one more requirement."""
        base = prompt if len(prompt) < 1500 else prompt[:1500].rsplit(" ", 1)[0]
        return f"{base} {self.constraint(rnd)}"

    def constraint(self, rnd: random.Random) -> str:
        return _CONSTRAINTS[int(rnd.random() * len(_CONSTRAINTS))].format(
            n=NOUNS[int(rnd.random() * len(NOUNS))]
        )

    def judge(self, rnd: random.Random, style: int) -> str:
        """A grader's output: 0 "Rating: [[n]]", 1 a pairwise verdict, 2 JSON."""
        j = rnd.sample(_JUDGE, 3 + int(rnd.random() * 3))
        text = " ".join(j)
        if style == 0:
            return f"{text}\n\nRating: [[{1 + int(rnd.random() * 10)}]]"
        if style == 1:
            return (
                f"{text}\n\nFinal verdict: [[{'AAB'[int(rnd.random() * 3)] if rnd.random() < 0.9 else 'C'}]]"
            )
        return orjson.dumps({"score": 1 + int(rnd.random() * 10), "rationale": text}).decode()

    def reasoning_dump(self, rnd: random.Random, topic: str, n: int, final: str) -> str:
        """A 'complete internal reasoning' answer of about `n` lines, as coercion prompts ask for."""
        blocks = self.thought_blocks
        body = "\n".join([blocks[int(rnd.random() * len(blocks))] for _ in range(max(1, n // 5))])
        return (
            f"<thinking>\nOkay, the question is about {topic}. Let me think it through.\n{body}\n</thinking>\n\n"
            f"Final answer: {final}"
        )

    def short(self, rnd: random.Random, kind: str, reference: str = "") -> str:
        """Short structured output of a back-office job: a label, extracted JSON, a triage record."""
        if kind == "label":
            return LABELS[int(rnd.random() * len(LABELS))]
        if kind == "json":
            d = {
                "invoice_number": f"INV-{int(rnd.random() * 99999):05d}",
                "date": f"2026-{1 + int(rnd.random() * 12):02d}-{1 + int(rnd.random() * 28):02d}",
                "total": f"{int(rnd.random() * 9000)}.{int(rnd.random() * 100):02d}",
                "currency": ("EUR", "USD", "GBP")[int(rnd.random() * 3)],
            }
            return orjson.dumps(d).decode()
        if kind == "triage":
            d = {
                "category": LABELS[3 + int(rnd.random() * 7)],
                "priority": ("high", "medium", "low")[int(rnd.random() * 3)],
                "summary": self.sentences[int(rnd.random() * 3000)],
            }
            return orjson.dumps(d).decode()
        if kind == "reference" and reference:
            return reference
        return self.sentences[int(rnd.random() * 3000)]
