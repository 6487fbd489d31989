"""Tokenizers for the exported pipeline, loaded from files the export wrote (torch-free).

- :class:`ClipBpeTokenizer`: CLIP's byte-level BPE (open_clip's ``bpe_simple_vocab_16e6.txt.gz``)
  built with the ``tokenizers`` library; ids equal open_clip's ``SimpleTokenizer`` (and HF's
  CLIPTokenizer apart from the padding id, which is configurable).
- :class:`WordPieceDecoder`: BLIP's BERT WordPiece ids -> text, as ``batch_decode(...,
  skip_special_tokens=True)`` does.
"""

from __future__ import annotations

import gzip
import html
import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..deps import require

SOT, EOT = "<start_of_text>", "<end_of_text>"
_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _clean(text: str) -> str:
    try:  # open_clip runs ftfy when installed; so do we (captions are plain ASCII in practice)
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class ClipBpeTokenizer:
    def __init__(self, bpe_path: str | Path, context_length: int = 77, pad_id: int = 0):
        tk = require("tokenizers", "the CLIP tokenizer of the ONNX Runtime backend")
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
        base = list(bytes_to_unicode().values())
        vocab = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + [SOT, EOT]
        self.vocab = {t: i for i, t in enumerate(vocab)}
        self.sot, self.eot = self.vocab[SOT], self.vocab[EOT]
        self.context_length, self.pad_id = context_length, pad_id
        model = tk.models.BPE(vocab=self.vocab, merges=merges, end_of_word_suffix="</w>",
                              continuing_subword_prefix="", unk_token=None)
        tok = tk.Tokenizer(model)
        tok.pre_tokenizer = tk.pre_tokenizers.Sequence([
            tk.pre_tokenizers.Split(tk.Regex(_PATTERN), behavior="removed", invert=True),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(_clean(text), add_special_tokens=False).ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(N, context_length) int64: [SOT] tokens [EOT] then padding; truncated keeping EOT last."""
        out = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        for i, t in enumerate(texts):
            ids = [self.sot] + self.encode(t) + [self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[i, : len(ids)] = ids
        return out


class WordPieceDecoder:
    """BERT WordPiece ids -> text: special ids dropped, ``##`` pieces glued, punctuation spacing
    cleaned up as ``transformers``' ``clean_up_tokenization`` does."""

    def __init__(self, vocab_file: str | Path, special_ids: Sequence[int], cleanup: bool = True):
        self.vocab = Path(vocab_file).read_text(encoding="utf-8").split("\n")
        if self.vocab and self.vocab[-1] == "":
            self.vocab.pop()
        self.special = set(int(i) for i in special_ids)
        self.cleanup = cleanup

    def decode(self, ids: Sequence[int]) -> str:
        toks = [self.vocab[i] for i in ids if int(i) not in self.special and 0 <= int(i) < len(self.vocab)]
        text = " ".join(toks).replace(" ##", "").strip()
        if self.cleanup:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text.strip()

    def batch_decode(self, seqs) -> list[str]:
        return [self.decode(s) for s in seqs]
