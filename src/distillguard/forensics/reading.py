"""Open setting (reading mode): does a suspect model predict our watermark? (Sander et al., 2024, §5).

Watermarked texts are fed through the suspect; at every position i its top-1 prediction p_i is paired
with the text's own context (x_{i-h}, ..., x_{i-1}) and that window is scored with the scheme as if the
suspect had written p_i. A model trained on our watermarked outputs prefers green continuations, so its
predictions are green more often than γ.

Two filters make the null hold for a model that never saw our outputs (Sander et al. use both):
- dedup: a repeated (context, prediction) window is scored once;
- exclusion: a window that occurs in the texts read or in their prompts is dropped. Any decent model
  often predicts the token actually written, and that token is green because the *teacher* was
  watermarked; scoring it would "detect" the text, not the model. Dropping every window present in
  the input leaves only predictions the input did not dictate.
After both, each scored window's keyed coin is independent of the suspect under H0, and the scheme's
exact test (binomial for KGW, Gamma for Gumbel) gives the p-value; attribution tests many account keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from distillguard.forensics.attribution import Attribution, Correction, attribute
from distillguard.forensics.keyed_hash import U64, fingerprints
from distillguard.forensics.keys import KeyRing, WatermarkKey
from distillguard.forensics.scheme import SchemeError, ScoreResult, WatermarkScheme, token_windows
from distillguard.forensics.student import Predictor

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ReadingWindows:
    """The (text context, suspect prediction) windows to score, one row each: (n, h + 1) ids."""

    windows: IntArray
    exclude: U64  # fingerprints of every window present in the texts and prompts
    positions_read: int  # positions with a full context and a prediction


@dataclass(frozen=True)
class ReadingResult:
    """What reading mode found for one key, or for a ring of keys."""

    positions_read: int
    windows_scored: int
    p_value: float
    z: float
    attribution: Attribution | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "positions_read": self.positions_read,
            "windows_scored": self.windows_scored,
            "p_value": self.p_value,
            "z": self.z,
            **self.details,
        }
        if self.attribution is not None:
            out["attribution"] = self.attribution.to_dict()
        return out


def reading_windows(
    texts: Sequence[npt.ArrayLike],
    predictions: Sequence[npt.ArrayLike],
    width: int,
    *,
    prompts: Sequence[npt.ArrayLike] | None = None,
) -> ReadingWindows:
    """Pair each position's context from the text with the suspect's prediction there (vectorised).

    `predictions[k][i]` is the suspect's top-1 for text k at position i given text k's ids before i
    (-1 where it made none). Positions need `width` ids of context within their own text.
    """
    if len(texts) != len(predictions):
        raise SchemeError(f"{len(texts)} texts but {len(predictions)} prediction arrays")
    for k, (t, p) in enumerate(zip(texts, predictions, strict=True)):
        if np.size(t) != np.size(p):
            raise SchemeError(f"text {k}: {np.size(t)} tokens but {np.size(p)} predictions")
    txt = [np.asarray(t, dtype=np.int64) for t in texts]
    win = token_windows(txt, width)  # contexts of every position with a full context, all texts at once
    flat_pred = (
        np.concatenate([np.asarray(p, dtype=np.int64) for p in predictions]) if txt else np.zeros(0, np.int64)
    )
    pred = flat_pred[win.positions]
    ok = pred >= 0
    windows = np.concatenate([win.contexts[ok].astype(np.int64), pred[ok, None]], axis=1)
    # every window of the input itself (the texts and their prompts) is excluded from scoring
    own = [win.fingerprints]
    if prompts is not None:
        p_list = [np.asarray(p, dtype=np.int64) for p in prompts]
        own.append(token_windows(p_list, width).fingerprints)
        # windows that straddle the prompt/answer boundary are text the teacher was conditioned on too
        joined = [np.r_[p, t] for p, t in zip(p_list, txt, strict=True)]
        own.append(token_windows(joined, width).fingerprints)
    return ReadingWindows(windows, np.unique(np.concatenate(own)), int(ok.sum()))


def _window_fingerprints(windows: IntArray) -> U64:
    return fingerprints(windows) if windows.size else np.zeros(0, np.uint64)


def score_reading(
    scheme: WatermarkScheme,
    rw: ReadingWindows,
    *,
    key: WatermarkKey | None = None,
    ring: KeyRing | None = None,
    alpha: float = 1e-3,
    correction: Correction = "holm",
) -> ReadingResult:
    """Score the windows against one key, or against every key of a ring (attribution, FWER-controlled).

    Each window is passed to the scheme as its own (h + 1)-token sequence, so the scheme's own scoring
    (dedup, exclusion, exact tail) applies unchanged to windows that do not form one text.
    """
    if (key is None) == (ring is None):
        raise SchemeError("score reading windows against a key or a key ring (exactly one)")
    details: dict[str, Any] = {"excluded_input_windows": int(rw.exclude.size), "dedup": True}
    if rw.windows.shape[0] == 0:
        raise SchemeError("no position could be read: texts shorter than the scheme's context?")
    if np.isin(_window_fingerprints(rw.windows), rw.exclude).all():
        # every prediction repeats the input (a pure copier): nothing is left to test, so no evidence;
        # handled here because the scheme's dedup does not accept an empty selection
        details["all_windows_in_input"] = True
        none = None
        if ring is not None:
            ones = np.ones(len(ring))
            none = Attribution(
                scheme.name, 0, alpha, correction, ring.labels, ones, ones, np.zeros(len(ring))
            )
        return ReadingResult(rw.positions_read, 0, 1.0, 0.0, none, details)
    if ring is not None:
        a = attribute(
            scheme, rw.windows, ring, alpha=alpha, correction=correction, exclude=rw.exclude, dedup=True
        )
        best = int(np.argmin(a.p_values))
        return ReadingResult(rw.positions_read, a.n_scored, a.family_p_value, float(a.z[best]), a, details)
    assert key is not None
    r: ScoreResult = scheme.score(rw.windows, key, exclude=rw.exclude, dedup=True)
    return ReadingResult(rw.positions_read, r.n_scored, r.p_value, r.z, None, details)


def read_suspect(
    suspect: Predictor,
    scheme: WatermarkScheme,
    texts: Sequence[npt.ArrayLike],
    *,
    prompts: Sequence[npt.ArrayLike] | None = None,
    key: WatermarkKey | None = None,
    ring: KeyRing | None = None,
    alpha: float = 1e-3,
    correction: Correction = "holm",
) -> ReadingResult:
    """Feed `texts` through the suspect and test its top-1 predictions for the mark.

    With prompts, the suspect reads prompt + text (as the teacher saw them) and only the text's
    positions are scored; prompt windows are excluded.
    """
    if prompts is not None and len(prompts) != len(texts):
        raise SchemeError(f"{len(prompts)} prompts for {len(texts)} texts")
    txt = [np.asarray(t, dtype=np.int64) for t in texts]
    if prompts is None:
        preds = suspect.top1(txt)
    else:
        p_list = [np.asarray(p, dtype=np.int64) for p in prompts]
        full = suspect.top1([np.r_[p, t] for p, t in zip(p_list, txt, strict=True)])
        preds = [f[p.size :] for f, p in zip(full, p_list, strict=True)]
    rw = reading_windows(txt, preds, scheme.context_width, prompts=prompts)
    return score_reading(scheme, rw, key=key, ring=ring, alpha=alpha, correction=correction)
