"""BLIP caption decoding: greedy and beam search over a "decoder step" component (torch-free).

Written once for every backend. A :class:`DecoderSteps` turns the exported (or torch) decoder
graphs into "logits of the next token" calls, with the key/value caches when the export has them;
:func:`generate` runs the search with the generation settings the BLIP weights carry, the way
transformers' ``generate(do_sample=False)`` does (token-identical on tiny weights, tested):

- greedy: logits processors on the raw logits, argmax, finished rows continue with PAD;
- beam search: processors on log-softmax scores, the top ``2 * num_beams`` continuations, finished
  hypotheses scored with ``length_penalty``, ``early_stopping`` as in transformers' vectorised
  beam search.

Settings honoured: ``max_length`` / ``max_new_tokens``, ``min_length`` / ``min_new_tokens``,
``num_beams``, ``no_repeat_ngram_size``, ``repetition_penalty``, ``length_penalty``,
``early_stopping``. A generation config asking for anything else (sampling, bad words, ...) is
refused with a clear error, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Mapping

import numpy as np

from ..errors import SemgirError

NEG = np.float32(-1.0e9)

#: generation-config keys with the value that means "off"; anything else set is refused
_UNSUPPORTED_OFF = {"do_sample": False, "num_beam_groups": 1, "diversity_penalty": 0.0, "bad_words_ids": None,
                    "force_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                    "encoder_no_repeat_ngram_size": 0, "suppress_tokens": None, "begin_suppress_tokens": None,
                    "exponential_decay_length_penalty": None, "sequence_bias": None, "constraints": None}


@dataclass(frozen=True)
class GenerationSettings:
    """How captions are decoded. Built from the BLIP generation config (:meth:`from_config`)."""

    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    max_length: int = 20  # prompt (BOS) included, as transformers counts it
    min_length: int = 0
    num_beams: int = 1
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool | str = False

    @classmethod
    def from_config(cls, generation: Mapping, bos: int, eos: int, pad: int, max_new_tokens: int | None = None,
                    num_beams: int | None = None) -> "GenerationSettings":
        """``generation``: the weights' generation config (a dict); ``max_new_tokens`` / ``num_beams``
        override it like the arguments of ``generate``."""
        g = {k: v for k, v in dict(generation).items() if v is not None}
        bad = sorted(k for k, off in _UNSUPPORTED_OFF.items() if k in g and g[k] not in (off, [], {}))
        if bad:
            raise SemgirError(f"the captioner's generation config sets {', '.join(bad)}, which this engine does not "
                              "implement (greedy and beam search only)")
        prompt = 1  # BOS
        max_length = int(g.get("max_length", 20))
        if max_new_tokens is not None:
            max_length = prompt + int(max_new_tokens)
        min_length = int(g.get("min_length", 0) or 0)
        if g.get("min_new_tokens"):
            min_length = max(min_length, prompt + int(g["min_new_tokens"]))
        beams = int(num_beams if num_beams is not None else g.get("num_beams", 1) or 1)
        if beams < 1 or max_length <= prompt:
            raise SemgirError(f"invalid generation settings: num_beams {beams}, max_length {max_length}")
        return cls(bos_token_id=int(bos), eos_token_id=int(eos), pad_token_id=int(pad), max_length=max_length,
                   min_length=min_length, num_beams=beams,
                   no_repeat_ngram_size=int(g.get("no_repeat_ngram_size", 0) or 0),
                   repetition_penalty=float(g.get("repetition_penalty", 1.0) or 1.0),
                   length_penalty=float(g.get("length_penalty", 1.0)),
                   early_stopping=g.get("early_stopping", False))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------------
# the decoder step component
# ------------------------------------------------------------------------------------------
Session = Callable[..., dict]


class DecoderSteps:
    """Next-token logits from the decoder graphs: ``blip_text_decoder_init`` + ``..._with_past`` (key/value
    caches for self- and cross-attention) when given, else ``blip_text_decoder`` on the whole prefix."""

    def __init__(self, init: Session | None = None, with_past: Session | None = None, full: Session | None = None):
        if not ((init and with_past) or full):
            raise SemgirError("caption decoding needs the blip_text_decoder_init and blip_text_decoder_with_past "
                              "graphs (or blip_text_decoder)")
        self.init, self.with_past, self.full = init, with_past, full
        self.kv = bool(init and with_past)
        self._enc = self._past = self._cross = None

    def start(self, encoder_hidden_states: np.ndarray) -> None:
        self._enc, self._past, self._cross = encoder_hidden_states, None, None

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """(rows, prefix) token ids -> (rows, vocab) float32 logits of the next token."""
        if not self.kv:
            out = self.full(input_ids=ids, encoder_hidden_states=self._enc)
        elif self._past is None:
            out = self.init(input_ids=ids, encoder_hidden_states=self._enc)
            self._cross = out["cross_present"]
        else:
            out = self.with_past(input_ids=ids[:, -1:], past=self._past, cross_past=self._cross)
        if self.kv:
            self._past = out["present"]
        return np.asarray(out["logits"][:, -1, :], np.float32).copy()

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the caches of ``rows`` (beam search picks which hypotheses continue)."""
        if self._past is not None:  # stacked caches: (layers, key/value, batch, heads, tokens, head_dim)
            self._past = self._past[:, :, rows]
            self._cross = self._cross[:, :, rows]
        if not self.kv:
            self._enc = self._enc[rows]


# ------------------------------------------------------------------------------------------
# logits processors (transformers' order: repetition penalty, n-gram ban, minimum length)
# ------------------------------------------------------------------------------------------
def _banned_ngram_tokens(seq: np.ndarray, n: int) -> list[int]:
    cur = len(seq)
    if cur + 1 < n:
        return []
    prefix = tuple(seq[cur - n + 1:].tolist())
    s = seq.tolist()
    return [s[i + n - 1] for i in range(cur - n + 1) if tuple(s[i:i + n - 1]) == prefix]


def process(ids: np.ndarray, scores: np.ndarray, g: GenerationSettings) -> np.ndarray:
    """Apply the generation settings' processors to next-token ``scores`` (rows, vocab), in place."""
    if g.repetition_penalty != 1.0:
        for r in range(ids.shape[0]):
            seen = np.unique(ids[r])
            s = scores[r, seen]
            scores[r, seen] = np.where(s < 0, s * np.float32(g.repetition_penalty), s / np.float32(g.repetition_penalty))
    if g.no_repeat_ngram_size > 0:
        for r in range(ids.shape[0]):
            banned = _banned_ngram_tokens(ids[r], g.no_repeat_ngram_size)
            if banned:
                scores[r, banned] = -np.inf
    if ids.shape[1] < g.min_length:
        scores[:, g.eos_token_id] = -np.inf
    return scores


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    z = x - m
    return (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float32)


def _top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries along the last axis, largest first (ties: lower index first)."""
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[b, idx[b, j], ...]`` for every batch row ``b``."""
    return np.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=1)


# ------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------
def generate(steps: DecoderSteps, encoder_hidden_states: np.ndarray, g: GenerationSettings) -> np.ndarray:
    """Token ids (rows, length) for each image's encoder states, BOS first."""
    if g.num_beams == 1:
        return greedy(steps, encoder_hidden_states, g)
    return beam_search(steps, encoder_hidden_states, g)


def greedy(steps: DecoderSteps, enc: np.ndarray, g: GenerationSettings) -> np.ndarray:
    n = enc.shape[0]
    steps.start(enc)
    ids = np.full((n, 1), g.bos_token_id, np.int64)
    unfinished = np.ones(n, bool)
    while ids.shape[1] < g.max_length:
        scores = process(ids, steps(ids), g)
        nxt = scores.argmax(-1).astype(np.int64)
        nxt = np.where(unfinished, nxt, g.pad_token_id)
        ids = np.concatenate([ids, nxt[:, None]], 1)
        unfinished &= nxt != g.eos_token_id
        if not unfinished.any():
            break
    return ids


def beam_search(steps: DecoderSteps, enc: np.ndarray, g: GenerationSettings) -> np.ndarray:
    """transformers' vectorised beam search (``_beam_search``), one EOS token, one returned sequence."""
    B, K, L = enc.shape[0], g.num_beams, g.max_length
    keep = 2 * K  # max(2, 1 + n_eos) * num_beams
    top_mask = np.arange(keep) < K
    prompt = cur = 1
    fill = g.pad_token_id if g.pad_token_id else g.eos_token_id  # transformers: `pad or eos`
    running = np.full((B, K, L), fill, np.int64)
    running[:, :, 0] = g.bos_token_id
    sequences = running.copy()
    running_scores = np.zeros((B, K), np.float32)
    running_scores[:, 1:] = NEG
    beam_scores = np.full((B, K), NEG, np.float32)
    finished = np.zeros((B, K), bool)
    unsatisfied = np.ones((B, 1), bool)
    running_idx = np.full((B, K, L - cur), -1, np.int64)
    beam_idx = running_idx.copy()
    steps.start(np.repeat(enc, K, axis=0))
    lp = g.length_penalty
    while True:
        flat = running[:, :, :cur].reshape(B * K, cur)
        scores = process(flat, _log_softmax(steps(flat)), g)
        V = scores.shape[-1]
        acc = (scores.reshape(B, K, V) + running_scores[:, :, None]).reshape(B, K * V)
        top = _top(acc, keep)
        top_lp = np.take_along_axis(acc, top, 1)
        src_beam = top // V
        top_idx = _gather(running_idx, src_beam).copy()
        top_seq = _gather(running, src_beam).copy()
        top_ids = top % V
        top_seq[:, :, cur] = top_ids
        top_idx[:, :, cur - prompt] = src_beam + np.arange(B)[:, None] * K
        hits = (top_ids == g.eos_token_id) | (cur + 1 >= L)
        # the best unfinished continuations run on
        run_lp = top_lp + hits.astype(np.float32) * NEG
        nxt = _top(run_lp, K)
        running = _gather(top_seq, nxt)
        running_scores = np.take_along_axis(run_lp, nxt, 1)
        running_idx = _gather(top_idx, nxt)
        # finished hypotheses that beat the current ones replace them
        just = hits & top_mask[None, :]
        fin_lp = top_lp / np.float32((cur + 1 - prompt) ** lp)
        full = finished.all(-1, keepdims=True) & (g.early_stopping is True)
        fin_lp = fin_lp + full.astype(np.float32) * NEG + (~unsatisfied).astype(np.float32) * NEG \
            + (~just).astype(np.float32) * NEG
        m_seq = np.concatenate([sequences, top_seq], 1)
        m_scores = np.concatenate([beam_scores, fin_lp], 1)
        m_idx = np.concatenate([beam_idx, top_idx], 1)
        m_fin = np.concatenate([finished, just], 1)
        best = _top(m_scores, K)
        sequences, beam_scores = _gather(m_seq, best), np.take_along_axis(m_scores, best, 1)
        beam_idx, finished = _gather(m_idx, best), np.take_along_axis(m_fin, best, 1)
        steps.reorder(running_idx[:, :, cur - prompt].reshape(-1))
        cur += 1
        # can a running beam still beat the worst finished one?
        best_len = (L - prompt) if (g.early_stopping == "never" and lp > 0) else (cur - prompt)
        best_possible = running_scores[:, :1] / np.float32(best_len ** lp)
        worst = np.where(finished, beam_scores.min(1, keepdims=True), NEG)
        unsatisfied = unsatisfied & (best_possible > worst).any(-1, keepdims=True)
        go_on = unsatisfied.any() and not (finished.all() and g.early_stopping is True) and not hits.all()
        if not go_on:
            break
    out_len = prompt + int((beam_idx[:, 0] >= 0).sum(-1).max())
    return sequences[:, 0, :out_len]
