"""A small decoder-only transformer student trained from scratch on CPU, readable in reading mode.

The radioactivity demonstration (benchmarks/forensics_radioactivity.py) trains this student on corpora
that are partly a teacher's watermarked output and tests it with `reading.read_suspect`. It uses the
teacher's token ids, but its vocabulary is reduced to the ids that occur in its training corpus (at most the
`max_vocab` most frequent, plus an unknown id): with a 49k-token teacher vocabulary and a corpus of a few hundred thousand tokens, the full
embedding and output layer would be most of the parameters and most of the training time.

Needs torch (the `forensics` extra). Training is bounded by a number of steps and a wall-clock budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from distillguard.forensics.scheme import SchemeError

IntArray = npt.NDArray[np.int64]
UNK, SEP = 0, 1  # compact ids: an id the corpus never had, and the boundary between documents


@dataclass(frozen=True)
class StudentConfig:
    """Size and training budget of a transformer student."""

    layers: int = 2
    d_model: int = 128
    heads: int = 4
    seq_len: int = 128
    batch_size: int = 32
    max_vocab: int = 8192  # the most frequent ids of the corpus; rarer ones read as UNK
    steps: int = 1000
    lr: float = 3e-3
    warmup: int = 50
    max_seconds: float = 600.0
    seed: int = 0


@dataclass
class TrainLog:
    """What training did: steps run, seconds, corpus tokens and the loss curve (every step)."""

    steps: int = 0
    seconds: float = 0.0
    corpus_tokens: int = 0
    vocab: int = 0
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, float | int]:
        k = max(1, len(self.losses) // 20)  # mean of the first / last 5% of steps: less noise
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "corpus_tokens": self.corpus_tokens,
            "vocab": self.vocab,
            "loss_first": float(np.mean(self.losses[:k])) if self.losses else math.nan,
            "loss_last": float(np.mean(self.losses[-k:])) if self.losses else math.nan,
        }


class _Decoder(nn.Module):
    """Token + learned position embeddings, pre-norm causal self-attention blocks, tied output layer."""

    def __init__(self, vocab: int, cfg: StudentConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.heads, 4 * cfg.d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device)
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.norm(x) @ self.tok.weight.T  # tied: the output layer is the embedding


class TransformerStudent:
    """A trained decoder over a reduced vocabulary; `top1` answers in the teacher's token ids."""

    def __init__(self, model: _Decoder, vocab_ids: IntArray, cfg: StudentConfig) -> None:
        self.model = model
        self.vocab_ids = vocab_ids  # compact id c >= 2 is teacher id vocab_ids[c - 2]; sorted
        self.cfg = cfg

    def encode(self, seq: npt.ArrayLike) -> IntArray:
        """Teacher ids -> compact ids (unknown ids -> UNK), vectorised by a sorted lookup."""
        s = np.asarray(seq, dtype=np.int64)
        pos = np.searchsorted(self.vocab_ids, s)
        pos = np.minimum(pos, max(self.vocab_ids.size - 1, 0))
        hit = self.vocab_ids[pos] == s if self.vocab_ids.size else np.zeros(s.shape, bool)
        return np.where(hit, pos + 2, UNK).astype(np.int64)

    @classmethod
    def fit(
        cls, corpus: Sequence[npt.ArrayLike], cfg: StudentConfig | None = None
    ) -> tuple[TransformerStudent, TrainLog]:
        """Train from scratch on documents of teacher ids, packed with a separator, next-token loss."""
        cfg = cfg or StudentConfig()
        docs = [np.asarray(d, dtype=np.int64) for d in corpus]
        docs = [d for d in docs if d.size]
        if not docs:
            raise SchemeError("cannot train a transformer student on an empty corpus")
        if cfg.d_model % cfg.heads:
            raise SchemeError(f"d_model {cfg.d_model} must be a multiple of heads {cfg.heads}")
        flat = np.concatenate(docs)
        ids, counts = np.unique(flat, return_counts=True)
        if ids.size > cfg.max_vocab:  # keep the most frequent (ties: smaller id), sorted for lookup
            ids = np.sort(ids[np.lexsort((ids, -counts))[: cfg.max_vocab]])
        vocab_ids = ids
        torch.manual_seed(cfg.seed)
        model = _Decoder(vocab_ids.size + 2, cfg)
        student = cls(model, vocab_ids, cfg)
        # one stream: SEP d1 SEP d2 ...; a training window starts anywhere in it
        stream = np.concatenate([np.r_[SEP, student.encode(d)] for d in docs])
        if stream.size < cfg.seq_len + 2:
            stream = np.tile(stream, (cfg.seq_len + 2) // stream.size + 1)
        data = torch.from_numpy(stream)
        log = TrainLog(corpus_tokens=int(flat.size), vocab=int(vocab_ids.size))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))

        def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
            if step < cfg.warmup:
                return (step + 1) / cfg.warmup
            frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        gen = torch.Generator().manual_seed(cfg.seed)
        offsets = torch.arange(cfg.seq_len + 1)
        model.train()
        t0 = time.perf_counter()
        for _ in range(cfg.steps):  # bounded by steps and by the wall-clock budget
            starts = torch.randint(0, data.numel() - cfg.seq_len - 1, (cfg.batch_size,), generator=gen)
            batch = data[starts[:, None] + offsets]
            logits = model(batch[:, :-1])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            log.losses.append(float(loss.detach()))
            log.steps += 1
            if time.perf_counter() - t0 > cfg.max_seconds:
                break
        log.seconds = time.perf_counter() - t0
        model.eval()
        return student, log

    def top1(self, sequences: Sequence[npt.ArrayLike]) -> list[IntArray]:
        """p[i] = the most likely next teacher id given x[:i] (p[0] = -1); never the unknown id.

        A sequence longer than the trained context is read in windows of `seq_len` with a stride of
        half that, each position predicted from at least half a window of context.
        """
        seqs = [self.encode(s) for s in sequences]
        n, half = self.cfg.seq_len, self.cfg.seq_len // 2
        # (sequence, window start, first position to keep) for every window, then batched
        jobs: list[tuple[int, int, int]] = []
        for k, s in enumerate(seqs):  # over sequences, not tokens
            jobs.append((k, 0, 1))
            jobs.extend((k, st, st + half) for st in range(half, max(s.size - half, half), half))
        out = [np.full(s.size, -1, dtype=np.int64) for s in seqs]
        bs = max(1, self.cfg.batch_size)
        with torch.no_grad():
            for lo in range(0, len(jobs), bs):  # bounded: ceil(windows / batch) forward passes
                chunk = jobs[lo : lo + bs]
                ids = np.full((len(chunk), n), SEP, dtype=np.int64)
                for r, (k, st, _) in enumerate(chunk):
                    w = seqs[k][st : st + n]
                    ids[r, : w.size] = w
                logits = self.model(torch.from_numpy(ids))
                logits[..., UNK] = -torch.inf  # an unknown id is no prediction
                logits[..., SEP] = -torch.inf
                best = logits.argmax(-1).numpy()  # best[:, j] predicts window position j + 1
                for r, (k, st, keep) in enumerate(chunk):
                    end = min(st + n, seqs[k].size)
                    pos = np.arange(max(keep, st + 1), end)
                    out[k][pos] = self.vocab_ids[best[r, pos - st - 1] - 2]
        return out
