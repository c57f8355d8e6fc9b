"""Prompt embedding for the complexity estimate: WordLlama's static token table.

WordLlama (MIT, `wordllama` on PyPI, pinned to 0.4.0.post1) ships, inside its wheel, a
32,000 × 256 float16 token-embedding table distilled from an LLM's token embeddings, and
the vocabulary it indexes (Llama-2's SentencePiece pieces). A text's embedding is the mean
of its pieces' vectors.

The estimate only ever needs *linear functions* of that mean (each learned head is a
linear model over it, see scripts/train_complexity.py), and w·mean(E[ids]) =
mean((E·w)[ids]). So training multiplies the table by each head's weights once and ships
one number per piece per head in the estimate's own weights file, next to the vocabulary:
the proxy segments the text and averages a few floats per piece, in pure Python, without
the 16 MB table, numpy or the `wordllama` package. (Normalising the mean first would
break the identity; it makes no measurable difference to the heads — checked on the tune
split's cross-validation, see the training script.)

Segmentation is ours, not the tokenizer's BPE: words (`\\w+`, prefixed with `▁` as
SentencePiece marks a word start) and single punctuation marks, each looked up whole and
otherwise split greedily into the longest known pieces, with byte pieces as the fallback.
It is close to the tokenizer's output, ten times faster in pure Python, and — what
matters — the same code in training and in the proxy. Nothing here keeps any text.

`load_table()` (training only) reads the wheel's two files directly — it never imports
`wordllama`, whose loader may try the network for a file it mislays — and checks them
against pinned SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "weights/l2_supercat_256.safetensors"
VOCAB_FILE = "tokenizers/l2_supercat_tokenizer_config.json"
# wordllama 0.4.0.post1's files, as shipped in its wheel.
SHA256 = {
    WEIGHTS_FILE: "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
    VOCAB_FILE: "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68",
}
DIM = 256
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD_START = "▁"


class EmbeddingError(RuntimeError):
    """The embedding's files are missing, altered or unreadable: the message says which."""


class Segmenter:
    """Text -> piece ids over a SentencePiece vocabulary (see the module docstring)."""

    __slots__ = ("vocab", "_bytes", "_whole", "_longest")

    def __init__(self, pieces: list[str]) -> None:
        self.vocab: dict[str, int] = {piece: i for i, piece in enumerate(pieces)}
        if len(self.vocab) != len(pieces):
            raise EmbeddingError("the vocabulary repeats a piece")
        try:
            self._bytes = [self.vocab[f"<0x{b:02X}>"] for b in range(256)]
        except KeyError as exc:
            raise EmbeddingError(f"the vocabulary lacks byte piece {exc.args[0]}") from None
        self._longest = max(map(len, pieces))
        # A token found whole: a word by its `▁word` piece, a mark by its own piece.
        whole = {piece: i for piece, i in self.vocab.items() if len(piece) == 1 and not _wordlike(piece)}
        whole.update((piece[1:], i) for piece, i in self.vocab.items()
                     if piece.startswith(_WORD_START) and len(piece) > 1 and _wordlike(piece[1]))
        self._whole = whole

    def pieces(self, text: str) -> list[int]:
        tokens = _TOKEN.findall(text)
        whole = self._whole.get
        ids = [whole(token) for token in tokens]
        if None not in ids:
            return ids  # type: ignore[return-value]
        out: list[int] = []
        for token, piece in zip(tokens, ids, strict=True):
            if piece is not None:
                out.append(piece)
            else:
                self._split(token, out)
        return out

    def _split(self, token: str, out: list[int]) -> None:
        """Greedy longest known pieces of a token not found whole; bytes as the last resort."""
        get = self.vocab.get
        word = _WORD_START + token if _wordlike(token[0]) else token
        start, stop = 0, len(word)
        while start < stop:
            for end in range(min(stop, start + self._longest), start, -1):
                piece = get(word[start:end])
                if piece is not None:
                    out.append(piece)
                    start = end
                    break
            else:  # no piece: the character's UTF-8 bytes
                out.extend(self._bytes[b] for b in word[start].encode("utf-8", "surrogatepass"))
                start += 1


def _wordlike(char: str) -> bool:
    return char.isalnum() or char == "_"


# ---------------------------------------------------------------------------
# Training side: the wheel's files


def package_dir() -> Path:
    spec = importlib_util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError("the wordllama package is not installed (pip install wordllama==0.4.0.post1, "
                             "or pip install -e '.[train]'): training reads its embedding table")
    return Path(next(iter(spec.submodule_search_locations)))


def _read(root: Path, name: str) -> bytes:
    path = root / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EmbeddingError(f"cannot read {path}: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise EmbeddingError(f"{path} is not the pinned file (sha256 {digest[:16]}…, expected "
                             f"{SHA256[name][:16]}…): reinstall wordllama==0.4.0.post1")
    return data


def load_table(root: Path | None = None) -> tuple[list[str], Any]:
    """(pieces in id order, float32 numpy table n × DIM) from the installed wheel."""
    import numpy as np

    root = root or package_dir()
    try:
        vocab = json.loads(_read(root, VOCAB_FILE))["model"]["vocab"]
        pieces = [piece for piece, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        if [vocab[p] for p in pieces] != list(range(len(pieces))):
            raise ValueError("ids are not 0..n-1")
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(f"{root / VOCAB_FILE}: not a tokenizer file ({exc})") from None
    data = _read(root, WEIGHTS_FILE)
    try:  # safetensors: an 8-byte header length, a JSON header, the raw little-endian data
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
        meta = next(value for key, value in header.items() if key != "__metadata__")
        start, end = meta["data_offsets"]
        if meta["dtype"] != "F16" or meta["shape"] != [len(pieces), DIM]:
            raise ValueError(f"unexpected tensor {meta['dtype']} {meta['shape']}")
        table = np.frombuffer(data, dtype="<f2", count=(end - start) // 2, offset=8 + length + start)
    except (ValueError, KeyError, StopIteration, struct.error) as exc:
        raise EmbeddingError(f"the embedding table is not readable: {exc}") from None
    return pieces, table.reshape(meta["shape"]).astype(np.float32)
