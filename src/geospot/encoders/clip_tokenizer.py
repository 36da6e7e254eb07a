"""CLIP's byte-level BPE tokenizer, our own implementation (reads the model's `vocab.json` + `merges.txt`).

It follows Hugging Face's `CLIPTokenizer` (transformers 5): NFC, whitespace
runs to one space, lower case; split into words with CLIP's pattern
(contractions, letter runs, single digits, other-symbol runs); map each word's
UTF-8 bytes to GPT-2's printable byte alphabet, mark the word end with `</w>`,
apply the BPE merges by rank; wrap in `<|startoftext|>` ... `<|endoftext|>`,
truncated to the 77-token context. Needs the `regex` package for Unicode
letter/number classes (`pip install regex`; transformers installs it too).
"""
from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


class ClipTokenizer:
    """`encode(text) -> list[int]` and `batch(texts) -> (ids [N, L] int64, eos positions [N])`."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], context_length: int = CONTEXT_LENGTH):
        try:
            import regex
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("the CLIP tokenizer needs the `regex` package: pip install regex") from None
        self.vocab = vocab
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.context_length = context_length
        self.bos_id, self.eos_id = vocab[BOS], vocab[EOS]
        self._split = regex.compile(_PATTERN, regex.IGNORECASE)
        self._byte_chars = bytes_to_unicode()
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ClipTokenizer":
        """From a Hugging Face folder holding `vocab.json` and `merges.txt`."""
        folder = Path(folder)
        try:
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc.filename}: missing (the CLIP text tower needs vocab.json + merges.txt)") from None
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
        bad = [m for m in merges if len(m) != 2]
        if bad or not isinstance(vocab, dict) or BOS not in vocab or EOS not in vocab:
            raise ValueError(f"{folder}: not a CLIP BPE vocabulary (vocab.json needs {BOS} and {EOS}; "
                             f"merges.txt pairs)")
        return cls(vocab, merges)  # type: ignore[arg-type]

    def _bpe(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 60), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, _ = min(pairs)
            if rank == 1 << 60:
                break
            a, b = next((parts[i], parts[i + 1]) for r, i in pairs if r == rank)
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids with start/end tokens, truncated to the context length."""
        text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
        unk = self.vocab.get(EOS)
        ids = []
        for word in self._split.findall(text):
            if word in (BOS, EOS):
                ids.append(self.vocab[word])
                continue
            chars = "".join(self._byte_chars[b] for b in word.encode("utf-8"))
            ids.extend(self.vocab.get(tok, unk) for tok in self._bpe(chars))
        return [self.bos_id] + ids[: self.context_length - 2] + [self.eos_id]

    def batch(self, texts: list[str]):
        """Padded ids [N, L] (int64, padded with the end token) and the end-token position of each row."""
        import numpy as np

        encoded = [self.encode(t) for t in texts]
        width = max(len(e) for e in encoded)
        ids = np.full((len(encoded), width), self.eos_id, np.int64)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = e
        return ids, np.asarray([len(e) - 1 for e in encoded], np.int64)
