"""A tiny CLIP-style BPE vocabulary for tests (importable from every test folder: tests/ is on sys.path)."""
from __future__ import annotations

import json

from geospot.encoders.clip_tokenizer import BOS, EOS, bytes_to_unicode


def tiny_vocab(folder) -> int:
    """A byte-level BPE vocabulary laid out like CLIP's: 256 bytes, 256 word-final bytes, a few merges, specials."""
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges = [("t", "h"), ("th", "e</w>"), ("s", "t"), ("st", "r"), ("p", "h"), ("ph", "o"), ("pho", "t"),
              ("phot", "o</w>"), ("i", "n</w>"), ("e", "e"), ("a", "n"), ("c", "e</w>"), ("o", "o"), ("v", "i"),
              ("vi", "e"), ("vie", "w</w>"), ("r", "e"), ("str", "ee"), ("stree", "t</w>"), ("'", "s</w>")]
    vocab += ["".join(m) for m in merges] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    return len(vocab)
