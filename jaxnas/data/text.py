"""Penn Treebank (word level, Mikolov's 10k-vocabulary version) for the RNN cell search.

Follows the DARTS / ENAS RNN data code: every line is ``line.split() + ['<eos>']``, word ids are
given in order of first appearance in the training file, ``batchify`` cuts the token stream into
``batch_size`` contiguous columns (time-major ``[T, B]``), and a BPTT window at row ``i`` is
``x = source[i:i+L]``, ``y = source[i+1:i+1+L]``.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np

from jaxnas.data.tabular import DataNotFoundError

EOS = "<eos>"
PTB_SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """Token id streams (int32 [T]) per split and the vocabulary (id -> word)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def word_to_id(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def decode(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in np.asarray(ids).reshape(-1)]

    def __repr__(self) -> str:
        return (f"Corpus(vocab={self.vocab_size}, train={len(self.train)}, valid={len(self.valid)}, "
                f"test={len(self.test)})")


def _find(directory: Path, split: str) -> Path | None:
    for name in (f"ptb.{split}.txt", f"ptb.{split}.txt.gz", f"{split}.txt", f"{split}.txt.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_tokens(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [w for line in f for w in line.split() + [EOS]]


def load_ptb(directory) -> Corpus:
    """Read ``ptb.{train,valid,test}.txt`` (or ``.txt.gz``) from ``directory``.

    The vocabulary comes from the training split (10,000 words incl. ``<eos>`` and ``<unk>`` for the
    standard files); a valid/test word outside it is an error, since the standard files have none.
    """
    d = Path(os.path.expanduser(str(directory)))
    paths = {s: _find(d, s) if d.is_dir() else None for s in PTB_SPLITS}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        raise DataNotFoundError(
            f"PTB directory {str(d)!r} lacks the {missing} split(s); it needs ptb.train.txt, "
            "ptb.valid.txt and ptb.test.txt (or the same names with .gz), as in Mikolov's "
            "simple-examples/data folder")
    train_words = _read_tokens(paths["train"])
    vocab = list(dict.fromkeys(train_words))  # first-appearance order, as DARTS' Dictionary
    index = {w: i for i, w in enumerate(vocab)}
    ids = {"train": np.fromiter((index[w] for w in train_words), np.int32, len(train_words))}
    for s in ("valid", "test"):
        words = _read_tokens(paths[s])
        unknown = sorted({w for w in words if w not in index})
        if unknown:
            raise ValueError(f"{len(unknown)} words of {paths[s]} are not in the training vocabulary "
                             f"(first: {unknown[:5]}); map rare words to <unk> as the standard PTB does")
        ids[s] = np.fromiter((index[w] for w in words), np.int32, len(words))
    return Corpus(train=ids["train"], valid=ids["valid"], test=ids["test"], vocab=tuple(vocab))


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """int32 [T // B, B]: column b is the b-th contiguous slice of the stream (DARTS ``batchify``)."""
    ids = np.asarray(ids)
    n = len(ids) // batch_size
    if n < 2:
        raise ValueError(f"{len(ids)} tokens give fewer than 2 rows at batch_size {batch_size}; "
                         "lower batch_size")
    return ids[: n * batch_size].reshape(batch_size, n).T.copy()


def bptt_window(source: np.ndarray, i: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``source[i:i+L]`` and next-token targets ``source[i+1:i+1+L]``, L clipped at the end."""
    seq_len = min(seq_len, len(source) - 1 - i)
    if seq_len < 1:
        raise ValueError(f"window start {i} leaves no targets in a source of {len(source)} rows")
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len]


def bptt_windows(source: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """All full, non-overlapping windows stacked for ``lax.scan``: ``[W, L, B]`` inputs and targets.

    The ragged last window of the DARTS loop is dropped so shapes stay static.
    """
    w = (len(source) - 1) // seq_len
    if w < 1:
        raise ValueError(f"source of {len(source)} rows has no full window of length {seq_len}")
    x = source[: w * seq_len].reshape(w, seq_len, *source.shape[1:])
    y = source[1: w * seq_len + 1].reshape(w, seq_len, *source.shape[1:])
    return x, y
