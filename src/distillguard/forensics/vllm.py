"""vLLM integration: per-account watermarks applied inside a self-hosted vLLM server.

vLLM cannot be imported here (it needs CUDA torch), so nothing in this module imports it at import time:

- `WatermarkBatchProcessor` follows vLLM's V1 batch-level interface by duck typing: `__init__(vllm_config,
  device, is_pin_memory)`, `validate_params(sampling_params)`, `is_argmax_invariant()`,
  `update_state(batch_update)` (reads `.removed`, `.added`, `.moved` of vLLM's `BatchUpdate`) and
  `apply(logits)`. vLLM only loads subclasses of its own `LogitsProcessor`, so the name vLLM is pointed
  at, `distillguard.forensics.vllm:WatermarkLogitsProcessor`, is built on first access (a module
  `__getattr__`) as a subclass of both, importing vLLM only then, in the vLLM process.
- `RequestWatermarkProcessor` is the per-request callable of vLLM's V0 `SamplingParams.logits_processors`
  (`(output_ids, logits)` or `(prompt_ids, output_ids, logits)`, one row of logits).

Both apply `scheme.bias(...)`, so the marked logits equal the transformers `WatermarkLogitsProcessor`'s
on the same ids and logits (tests/forensics/test_vllm.py). On an accelerator the batch processor computes
`kgw` and `gumbel` with a torch twin of the keyed hash on the logits' device (`_DeviceBias`, the same
64-bit values), so no (rows, vocab) block is copied to the CPU at each step.

Which requests are marked, and with which key: a request carries `extra_args["dg_watermark"] =
"<scheme>:<epoch>:<account id>"` (the OpenAI server fills `SamplingParams.extra_args` from the body's
`vllm_xargs`; the gateway's `upstream` watermark mode sets it, see gateway/watermark.py). The key itself
never travels: the processor derives the account key with HKDF from the provider secret that only the
model server holds (`DISTILLGUARD_WATERMARK_SECRET_FILE` or `DISTILLGUARD_WATERMARK_SECRET`). Requests
without the argument are not touched. See docs/watermarking.md.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from distillguard.forensics.keys import ProviderSecret, WatermarkKey
from distillguard.forensics.scheme import FloatArray, SchemeError, WatermarkScheme, get_scheme, scheme_names

__all__ = [
    "ARG",
    "PARAMS_ENV",
    "SECRET_FILE_ENV",
    "KeyResolver",
    "RequestWatermarkProcessor",
    "WatermarkArg",
    "WatermarkBatchProcessor",
    "request_processor",
]

ARG = "dg_watermark"  # the key of SamplingParams.extra_args (and of the body's vllm_xargs)
SECRET_FILE_ENV = "DISTILLGUARD_WATERMARK_SECRET_FILE"
# JSON object of scheme parameters per scheme name, e.g. {"kgw": {"gamma": 0.25, "delta": 2.0}}:
# the model server's choice; detection must use the same parameters
PARAMS_ENV = "DISTILLGUARD_WATERMARK_PARAMS"
_MAX_ACCOUNT_CHARS = 256


@dataclass(frozen=True)
class WatermarkArg:
    """Which key marks a request: a scheme, a key epoch and an account id (no key material)."""

    scheme: str
    epoch: int
    account_id: str

    def encode(self) -> str:
        return f"{self.scheme}:{self.epoch}:{self.account_id}"

    @classmethod
    def parse(cls, value: object) -> WatermarkArg:
        """From `"<scheme>:<epoch>:<account id>"` (the account id may itself contain ':')."""
        if not isinstance(value, str):
            raise ValueError(
                f"{ARG} must be a string '<scheme>:<epoch>:<account id>', got {type(value).__name__}"
            )
        parts = value.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"{ARG} must look like '<scheme>:<epoch>:<account id>'")
        scheme, epoch, account = parts
        if scheme not in scheme_names():
            raise ValueError(
                f"{ARG}: unknown watermark scheme {scheme!r}; known: {', '.join(scheme_names())}"
            )
        if not epoch.isdigit():
            raise ValueError(f"{ARG}: the key epoch must be a non-negative integer")
        if not account or len(account) > _MAX_ACCOUNT_CHARS:
            raise ValueError(f"{ARG}: the account id must have 1 to {_MAX_ACCOUNT_CHARS} characters")
        return cls(scheme, int(epoch), account)


def _extra_args(params: Any) -> dict[str, Any]:
    extra = getattr(params, "extra_args", None)
    return extra if isinstance(extra, dict) else {}


def _scheme_params_from_env() -> dict[str, dict[str, Any]]:
    raw = os.environ.get(PARAMS_ENV)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SchemeError(f"${PARAMS_ENV} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SchemeError(
            f'${PARAMS_ENV} must be a JSON object of objects, e.g. {{"kgw": {{"gamma": 0.25}}}}'
        )
    return data


class KeyResolver:
    """Account keys from the provider secret (derived on the model server), and schemes, both cached.

    HKDF costs a few microseconds, a scheme build a little more; a request reuses them at every step
    of its generation and an account across requests, so both are kept (the keys in a bounded LRU).
    """

    def __init__(
        self,
        secret: ProviderSecret,
        scheme_params: dict[str, dict[str, Any]] | None = None,
        max_keys: int = 65536,
    ) -> None:
        self.secret = secret
        self.scheme_params = scheme_params or {}
        self.max_keys = max_keys
        self._keys: OrderedDict[tuple[str, int], WatermarkKey] = OrderedDict()
        self._schemes: dict[str, WatermarkScheme] = {}

    @classmethod
    def from_env(cls) -> KeyResolver:
        """The secret from `$DISTILLGUARD_WATERMARK_SECRET_FILE` (else `$DISTILLGUARD_WATERMARK_SECRET`)."""
        path = os.environ.get(SECRET_FILE_ENV)
        return cls(ProviderSecret.load(Path(path) if path else None), _scheme_params_from_env())

    def key(self, account_id: str, epoch: int) -> WatermarkKey:
        k = (account_id, epoch)
        hit = self._keys.get(k)
        if hit is not None:
            self._keys.move_to_end(k)
            return hit
        key = self.secret.account_key(account_id, epoch)
        self._keys[k] = key
        if len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return key

    def scheme(self, name: str) -> WatermarkScheme:
        s = self._schemes.get(name)
        if s is None:
            s = self._schemes[name] = get_scheme(name, **self.scheme_params.get(name, {}))
        return s

    def resolve(self, arg: WatermarkArg) -> tuple[WatermarkScheme, WatermarkKey]:
        return self.scheme(arg.scheme), self.key(arg.account_id, arg.epoch)


def _context(prompt_tail: Sequence[int], output: Sequence[int], width: int) -> list[int]:
    """The last `width` ids of prompt + output (fewer when the whole sequence is shorter)."""
    n_out = len(output)
    if n_out >= width:
        return list(output[n_out - width :])
    need = width - n_out
    return [*prompt_tail[-need:], *output] if need else list(output)


def _to_numpy(rows: Any) -> tuple[FloatArray, Callable[[FloatArray], Any]]:
    """Logits rows as float32 numpy, and the way back to the caller's type, device and dtype.

    Converted exactly as the transformers processor does (to float32, bias in float64, back to float32),
    so both integrations give the same numbers.
    """
    if isinstance(rows, np.ndarray):
        dtype = rows.dtype
        return rows.astype(np.float32), lambda out: np.asarray(out, dtype=np.float32).astype(dtype)
    import torch  # present wherever vLLM runs; only reached with a torch tensor

    arr = rows.detach().to(torch.float32).cpu().numpy()
    device, tdtype = rows.device, rows.dtype
    return arr, lambda out: torch.from_numpy(np.asarray(out, dtype=np.float32)).to(
        device=device, dtype=tdtype
    )


# -- the schemes' bias on the logits' own device ----------------------------------------------------------
# `kgw` and `gumbel` decide with keyed_hash's SplitMix64 arithmetic; the same arithmetic in torch int64
# (multiplication wraps mod 2^64 as uint64's does; a logical shift is an arithmetic one masked) gives the
# same 64-bit values, so the mark is computed where the logits are (a GPU in vLLM) instead of copying
# (rows, vocab) to the CPU and back at every step. The per-row part (context hash, key) is a few scalars
# done by keyed_hash itself; the token term of every vocabulary id is computed once per device.
def _i64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_M1, _M2 = _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)
_TOKEN_SALT = _i64(0xD6E8FEB86659FD93)
_SIGN = -(1 << 63)


def _lsr(z: Any, s: int) -> Any:
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64_t(z: Any) -> Any:
    z = z ^ _lsr(z, 30)
    z = z * _M1
    z = z ^ _lsr(z, 27)
    z = z * _M2
    return z ^ _lsr(z, 31)


def _device_bias_applies(scheme: WatermarkScheme, ids: npt.NDArray[Any]) -> bool:
    from distillguard.forensics.gumbel import Gumbel
    from distillguard.forensics.kgw import KGW

    return type(scheme) in (KGW, Gumbel) and ids.shape[1] >= scheme.context_width


class _DeviceBias:
    """`KGW.bias` / `Gumbel.bias` in torch on the logits' device, equal to the numpy versions."""

    def __init__(self) -> None:
        self._token_terms: dict[tuple[str, int], Any] = {}

    def _token_term(self, device: Any, vocab: int) -> Any:
        import torch

        k = (str(device), vocab)
        t = self._token_terms.get(k)
        if t is None:
            t = self._token_terms[k] = (
                torch.arange(vocab, dtype=torch.int64, device=device) + 1
            ) * _TOKEN_SALT
        return t

    def apply(
        self, scheme: Any, key: WatermarkKey, ids: npt.NDArray[Any], logits: Any, rows: list[int]
    ) -> None:
        import torch

        from distillguard.forensics.gumbel import Gumbel
        from distillguard.forensics.keyed_hash import context_hash, mix64

        h = scheme.context_width
        base = mix64(np.uint64(key.seed) ^ context_hash(np.asarray(ids)[:, -h:]))  # (n,) one per row
        idx = torch.as_tensor(rows, dtype=torch.long, device=logits.device)
        block = logits.index_select(0, idx).to(torch.float32)
        base_t = torch.from_numpy(base.view(np.int64)).to(logits.device)
        keyed = _mix64_t(base_t[:, None] ^ self._token_term(logits.device, block.shape[1])[None, :])
        if isinstance(scheme, Gumbel):
            lg = block.to(torch.float64)
            shifted = lg - lg.max(dim=1, keepdim=True).values
            logp = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
            r = (_lsr(keyed, 11).to(torch.float64) + 0.5) * (1.0 / float(1 << 53))
            choice = torch.argmax(logp - torch.log(-torch.log(r)), dim=1)
            out = torch.full_like(block, float("-inf"))
            out[torch.arange(out.shape[0], device=out.device), choice] = 0.0
        else:  # KGW: green when the hash is below gamma * 2^64 (unsigned order = signed order of x ^ 2^63)
            green = (keyed ^ _SIGN) < (int(scheme._threshold) + _SIGN)
            out = (block.to(torch.float64) + scheme.delta * green).to(torch.float32)
        logits.index_copy_(0, idx, out.to(logits.dtype))


@dataclass
class _Request:
    scheme: WatermarkScheme
    key: WatermarkKey
    prompt_tail: list[int]  # the last context_width ids of the prompt
    output: Sequence[int]  # vLLM's running output list (a reference: it grows as tokens are sampled)


class WatermarkBatchProcessor:
    """vLLM V1 batch-level logits processor (duck-typed; see `WatermarkLogitsProcessor` for vLLM's class).

    State: one entry per marked request, by its row in vLLM's persistent batch. `apply` groups the marked
    rows by key and calls `scheme.bias` once per (scheme, key) group on the (rows, vocab) block.
    """

    def __init__(
        self,
        vllm_config: Any = None,
        device: Any = None,
        is_pin_memory: bool = False,
        *,
        keys: KeyResolver | None = None,
        device_bias: bool | None = None,
    ) -> None:
        # the secret is read when vLLM builds the processor at startup: a server without one fails to start
        self.keys = keys if keys is not None else KeyResolver.from_env()
        self.device = device
        self.rows: dict[int, _Request] = {}
        self._device = _DeviceBias()
        # compute the mark with torch where the logits are (None: when they are not on the CPU)
        self.device_bias: bool | None = device_bias

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Reject a malformed `dg_watermark` at the API server (a 400 there, not a failed step later)."""
        value = _extra_args(sampling_params).get(ARG)
        if value is not None:
            WatermarkArg.parse(value)

    def is_argmax_invariant(self) -> bool:
        return False  # the green-list bias and the Gumbel choice both change the argmax

    def _new_request(
        self, params: Any, prompt_ids: Sequence[int] | None, output: Sequence[int]
    ) -> _Request | None:
        value = _extra_args(params).get(ARG)
        if value is None:
            return None
        scheme, key = self.keys.resolve(WatermarkArg.parse(value))
        h = scheme.context_width
        tail = list(prompt_ids[-h:]) if prompt_ids else []
        return _Request(scheme, key, tail, output)

    def update_state(self, batch_update: Any) -> None:
        """Apply vLLM's batch changes in its documented order: removed, added, moved."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt_ids, output in batch_update.added:
            req = self._new_request(params, prompt_ids, output)
            if req is None:
                self.rows.pop(index, None)  # an unmarked request replaces whatever held the row
            else:
                self.rows[index] = req
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            # a swap puts b's request at a; a one-way move leaves a empty
            if rb is not None and getattr(direction, "name", str(direction)).upper().endswith("SWAP"):
                self.rows[a] = rb

    def apply(self, logits: Any) -> Any:
        """Mark the rows of marked requests in place; other rows are not touched."""
        if not self.rows:
            return logits
        groups: dict[tuple[int, int], list[int]] = {}
        for row, req in self.rows.items():
            groups.setdefault((id(req.scheme), req.key.seed), []).append(row)
        for rows in groups.values():  # bounded by the batch size (one group per scheme and key)
            first = self.rows[rows[0]]
            h = first.scheme.context_width
            ctxs = [_context(self.rows[r].prompt_tail, self.rows[r].output, h) for r in rows]
            full = [i for i, c in enumerate(ctxs) if len(c) == h]
            short = [i for i, c in enumerate(ctxs) if len(c) < h]
            if full:
                self._bias_rows(logits, [rows[i] for i in full], np.asarray([ctxs[i] for i in full]), first)
            for i in short:  # fewer ids than the context so far: at most the first steps of a tiny prompt
                ids = np.asarray([ctxs[i]], dtype=np.int64).reshape(1, len(ctxs[i]))
                self._bias_rows(logits, [rows[i]], ids, first)
        return logits

    def _bias_rows(self, logits: Any, rows: list[int], ids: npt.NDArray[Any], req: _Request) -> None:
        on_device = self.device_bias
        if on_device is None:  # auto: on an accelerator; on a CPU numpy's arithmetic is faster than torch's
            on_device = not isinstance(logits, np.ndarray) and logits.device.type != "cpu"
        if on_device and _device_bias_applies(req.scheme, ids):
            self._device.apply(req.scheme, req.key, ids, logits, rows)
            return
        block, back = _to_numpy(logits[rows])
        logits[rows] = back(req.scheme.bias(ids, block, req.key))


class RequestWatermarkProcessor:
    """A per-request logits processor: vLLM V0 `SamplingParams(logits_processors=[...])`, or the callable
    that a V1 `AdapterLogitsProcessor.new_req_logits_processor` returns.

    Called as `(output_ids, logits)` or `(prompt_ids, output_ids, logits)` with one row of logits
    (vocab,); returns the marked row.
    """

    def __init__(self, scheme: WatermarkScheme, key: WatermarkKey) -> None:
        self.scheme = scheme
        self.key = key

    def __call__(self, *args: Any) -> Any:
        if len(args) == 2:
            prompt_ids: Sequence[int] = ()
            output, logits = args
        elif len(args) == 3:
            prompt_ids, output, logits = args
        else:
            raise TypeError("call as (output_ids, logits) or (prompt_ids, output_ids, logits)")
        h = self.scheme.context_width
        ctx = _context(list(prompt_ids[-h:]) if prompt_ids else [], output, h)
        row, back = _to_numpy(logits)
        ids = np.asarray(ctx, dtype=np.int64).reshape(1, len(ctx))
        return back(self.scheme.bias(ids, row.reshape(1, -1), self.key).reshape(row.shape))


def request_processor(params_or_arg: Any, keys: KeyResolver) -> RequestWatermarkProcessor | None:
    """The per-request processor for `SamplingParams` (or a `dg_watermark` value); None when unmarked."""
    value = params_or_arg if isinstance(params_or_arg, str) else _extra_args(params_or_arg).get(ARG)
    if value is None:
        return None
    scheme, key = keys.resolve(WatermarkArg.parse(value))
    return RequestWatermarkProcessor(scheme, key)


_VLLM_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """`WatermarkLogitsProcessor`: the batch processor as a subclass of vLLM's `LogitsProcessor`.

    Built on first access, importing vLLM then (only the vLLM server process gets here), because vLLM's
    `--logits-processors` loader requires a subclass of its own class.
    """
    if name != "WatermarkLogitsProcessor":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = _VLLM_CLASSES.get(name)
    if cls is None:
        try:
            from vllm.v1.sample.logits_processor import LogitsProcessor
        except ImportError as exc:
            raise ImportError(
                "distillguard.forensics.vllm:WatermarkLogitsProcessor needs vLLM (V1 engine); "
                "without vLLM use WatermarkBatchProcessor"
            ) from exc
        cls = type(
            name,
            (WatermarkBatchProcessor, LogitsProcessor),
            {"__module__": __name__, "__doc__": WatermarkBatchProcessor.__doc__},
        )
        _VLLM_CLASSES[name] = cls
    return cls
