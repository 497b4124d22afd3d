"""Closed setting: query a suspect's OpenAI-compatible API with our prompts and test its answers for our mark.

Every answer is tokenized with our tokenizer and scored against every account key (deduplicated
windows, prompt windows excluded, as in reading mode). Queries cost money and alert the suspect, so the
test is sequential and stops as soon as the evidence suffices, without inflating the error rate:
for each key, a mixture of likelihood-ratio martingales over the scored windows is an e-process under
H0 ("no window carries this key's mark"), so by Ville's inequality P(sup_t M_t >= 1/α) <= α whenever
we look. Keys are combined by Bonferroni (reject key k when M_k >= K/α). The anytime-valid p-value is
min(1, K / max_t M_t).
- KGW (binary green flags, null Bernoulli(γ)): M = mean_q (q/γ)^G ((1-q)/(1-γ))^(n-G) over a grid of q > γ;
- Gumbel (per-window score Exp(1) under H0): M = mean_θ (1-θ)^n e^(θS) over a grid of θ in (0, 1).
Both are functions of the running counts, so all keys are updated in one array expression.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp

from distillguard.forensics.keys import KeyRing
from distillguard.forensics.scheme import KeyScores, SchemeError, WatermarkScheme

API_KEY_ENV = "DISTILLGUARD_SUSPECT_API_KEY"
FloatArray = npt.NDArray[np.float64]
# alternatives of the mixture: excess over the null spread geometrically, so both strong and faint
# marks are caught within a factor ~2 of the best fixed alternative
_EXCESS = np.array([0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64])


class RemoteError(SchemeError):
    """The suspect endpoint could not be queried or answered something unusable."""


class TextCodec(Protocol):
    """Text <-> token ids with the tokenizer our watermark was applied in."""

    def encode(self, texts: list[str]) -> list[list[int]]: ...


class IdsCodec:
    """Texts that are space-separated token ids (toy endpoints and tests)."""

    def encode(self, texts: list[str]) -> list[list[int]]:
        out = []
        for i, t in enumerate(texts):
            try:
                out.append([int(w) for w in t.split()])
            except ValueError as exc:
                raise RemoteError(f"text {i}: expected space-separated token ids") from exc
        return out


class HFCodec:
    """A transformers tokenizer, without special tokens (as the watermark saw the answer's ids)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def encode(self, texts: list[str]) -> list[list[int]]:
        ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return ids


class MixtureEProcess:
    """Log e-values of a mixture martingale for every key, from running (windows scored, statistic)."""

    def __init__(self, scheme: WatermarkScheme) -> None:
        gamma = getattr(scheme, "gamma", None)
        if gamma is not None:
            self.kind = "bernoulli"
            self.gamma = float(gamma)
            self.grid = self.gamma + (1.0 - self.gamma) * _EXCESS
        elif scheme.name == "gumbel":
            self.kind = "exponential"
            self.gamma = 1.0
            self.grid = np.minimum(_EXCESS * 1.4, 0.9)
        else:
            raise SchemeError(f"no sequential test for scheme {scheme.name!r} (KGW-like or gumbel)")

    def log_e(self, n: float, statistic: FloatArray) -> FloatArray:
        """log M for each key, given n scored windows and each key's summed statistic."""
        s = np.asarray(statistic, dtype=np.float64)[:, None]
        q = self.grid[None, :]
        if self.kind == "bernoulli":
            terms = s * np.log(q / self.gamma) + (n - s) * np.log((1.0 - q) / (1.0 - self.gamma))
        else:
            terms = q * s + n * np.log1p(-q)
        return np.asarray(logsumexp(terms, axis=1) - np.log(self.grid.size), dtype=np.float64)


@dataclass
class SequentialResult:
    """The outcome of a sequential closed-setting test."""

    queries: int
    budget: int
    tokens_scored: int
    rejected: bool
    alpha: float
    labels: list[str]
    max_log_e: FloatArray  # per key, running maximum
    implicated: list[str] = field(default_factory=list)
    fixed_sample_p: FloatArray | None = (
        None  # exact p at the stopping time: NOT valid under optional stopping
    )
    errors: list[str] = field(default_factory=list)
    # the answers' ids and the prompts' window fingerprints, for controls; never serialised
    answers: list[list[int]] = field(default_factory=list, repr=False)
    excluded: npt.NDArray[np.uint64] | None = field(default=None, repr=False)

    @property
    def anytime_p_values(self) -> FloatArray:
        """Bonferroni-adjusted anytime-valid p-values: min(1, K / max_t M_t)."""
        k = len(self.labels)
        return np.minimum(1.0, k * np.exp(-self.max_log_e))

    @property
    def family_p_value(self) -> float:
        return float(self.anytime_p_values.min()) if self.labels else 1.0

    def to_dict(self, top: int = 5) -> dict[str, Any]:
        order = np.argsort(-self.max_log_e, kind="stable")[:top]
        anytime = self.anytime_p_values
        return {
            "test": "mixture e-process per key, Bonferroni over keys (anytime-valid)",
            "queries": self.queries,
            "budget": self.budget,
            "stopped_early": self.rejected and self.queries < self.budget,
            "tokens_scored": self.tokens_scored,
            "alpha": self.alpha,
            "rejected": self.rejected,
            "keys_tested": len(self.labels),
            "family_p_value": self.family_p_value,
            "implicated": self.implicated,
            "errors": self.errors,
            "top": [
                {
                    "key": self.labels[i],
                    "anytime_p_value": float(anytime[i]),
                    "log_e_value": float(self.max_log_e[i]),
                    "fixed_sample_p_value": None
                    if self.fixed_sample_p is None
                    else float(self.fixed_sample_p[i]),
                }
                for i in order
            ],
        }


class ChatEndpoint:
    """An OpenAI-compatible chat completions endpoint (`{base}/v1/chat/completions`)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "default",
        max_tokens: int = 200,
        temperature: float = 1.0,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise RemoteError(f"endpoint must be an http(s) URL, got {base_url!r}")
        headers = {}
        api_key = os.environ.get(API_KEY_ENV)
        if api_key:  # sent, never logged or written to the evidence
            headers["Authorization"] = f"Bearer {api_key}"
        base = base_url.rstrip("/")
        self.url = (
            base if base.endswith("/chat/completions") else base.removesuffix("/v1") + "/v1/chat/completions"
        )
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)

    def ask(self, prompt: str, index: int) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise RemoteError(f"query {index}: {type(exc).__name__} talking to {self.url}") from exc
        if resp.status_code != 200:
            raise RemoteError(f"query {index}: {self.url} answered HTTP {resp.status_code}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise RemoteError(
                f"query {index}: not an OpenAI chat completion (choices[0].message.content)"
            ) from exc
        if not isinstance(content, str):
            raise RemoteError(f"query {index}: message content is not a string")
        return content

    def close(self) -> None:
        self._client.close()


def sequential_test(
    ask: Callable[[str, int], str],
    prompts: Sequence[str],
    codec: TextCodec,
    scheme: WatermarkScheme,
    ring: KeyRing,
    *,
    alpha: float = 1e-3,
    budget: int = 100,
    check_every: int = 1,
    max_errors: int = 5,
) -> SequentialResult:
    """Query prompts one by one (at most `budget`); stop when some key's e-value reaches K/α.

    Prompts are cycled if the budget exceeds them (repeated prompts add new sampled answers; their
    repeated windows are deduplicated). A failed query is recorded (by index, without the prompt) and
    skipped; more than `max_errors` failures abort the test.
    """
    if not 0.0 < alpha < 1.0:
        raise SchemeError(f"alpha must lie in (0, 1), got {alpha}")
    if not prompts:
        raise SchemeError("no prompts to query the suspect with")
    if len(ring) == 0:
        raise SchemeError("the key ring is empty")
    score_keys = getattr(scheme, "score_keys", None)
    windows = getattr(scheme, "windows", None)
    if score_keys is None or windows is None:
        raise SchemeError(f"scheme {scheme.name!r} cannot score many keys")
    ep = MixtureEProcess(scheme)
    seeds = ring.seeds
    threshold = np.log(len(ring) / alpha)
    answers: list[list[int]] = []
    excluded: list[npt.NDArray[np.uint64]] = []
    max_log_e = np.full(len(ring), -np.inf)
    errors: list[str] = []
    ks: KeyScores | None = None
    q = 0
    for q in range(1, budget + 1):  # bounded by the query budget
        idx = (q - 1) % len(prompts)
        try:
            text = ask(prompts[idx], q)
        except RemoteError as exc:
            errors.append(str(exc))
            if len(errors) > max_errors:
                raise RemoteError(f"{len(errors)} queries failed; last: {exc}") from exc
            continue
        ans, prm = codec.encode([text, prompts[idx]])
        answers.append(ans)
        excluded.append(windows(np.asarray(prm, dtype=np.int64)))
        if q % check_every and q != budget:
            continue
        # recomputed over everything so far: dedup keeps each window's first occurrence, so the set of
        # scored windows only grows, in query order, and the running counts define the martingale
        ks = score_keys(answers, seeds, exclude=np.concatenate(excluded), dedup=True)
        max_log_e = np.maximum(max_log_e, ep.log_e(float(ks.n_scored), ks.statistic))
        if (max_log_e >= threshold).any():
            break
    hits = np.flatnonzero(max_log_e >= threshold)
    hits = hits[np.argsort(-max_log_e[hits], kind="stable")]
    labels = ring.labels
    return SequentialResult(
        queries=q,
        budget=budget,
        tokens_scored=0 if ks is None else ks.n_scored,
        rejected=bool(hits.size),
        alpha=alpha,
        labels=labels,
        max_log_e=max_log_e,
        implicated=[labels[i] for i in hits],
        fixed_sample_p=None if ks is None else ks.p_value,
        errors=errors,
        answers=answers,
        excluded=np.concatenate(excluded) if excluded else None,
    )
