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


def _check_not_empty(path: Path, split: str) -> None:
    """A split file without a word (empty, or blank lines only) is an error naming it."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if any(line.split() for line in f):
            return
    raise ValueError(f"the PTB {split} file {path} is empty (no words): a truncated copy or a failed download? "
                     f"Copy it again from simple-examples/data/ (see jaxnas/data/text.py)")


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
            "simple-examples/data folder. Get them from "
            "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz (untar; the files are in "
            "simple-examples/data/) or any copy of that archive, and set data.data_dir to the folder")
    for s in PTB_SPLITS:
        _check_not_empty(paths[s], s)
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


# ---- a language-modelling data set for searches (jaxnas.config.experiment registers it as data.name='ptb') ---
@dataclasses.dataclass(frozen=True, eq=False)
class LMData:
    """Token streams of a language-modelling corpus, as a search reads them.

    ``x_train`` / ``x_val`` / ``x_test``: int32 token ids (prefixes of the splits when
    ``max_train`` / ``max_val`` cut them); the vocabulary is always the full training split's.
    The search cuts ``x_train`` into ``batch`` contiguous streams (:func:`batchify`) and walks
    them window by window (:func:`window_count`), carrying the hidden state; a window's position is
    a function of the step, so a resumed search reads the same windows.
    """
    corpus: Corpus
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray

    @property
    def vocab_size(self) -> int:
        return self.corpus.vocab_size

    @property
    def num_classes(self) -> int:
        return self.corpus.vocab_size

    def __repr__(self) -> str:
        return (f"LMData(vocab={self.vocab_size}, train={len(self.x_train)}, val={len(self.x_val)}, "
                f"test={len(self.x_test)} tokens)")


def load_lm_data(directory, max_train: int | None = None, max_val: int | None = None) -> LMData:
    """PTB from ``directory`` (:func:`load_ptb`); ``max_train`` keeps the first tokens of the
    training stream, ``max_val`` those of the validation and of the test streams (CPU-sized runs)."""
    if directory is None:
        raise ValueError("data.name='ptb' reads ptb.{train,valid,test}.txt(.gz) from data.data_dir: set "
                         "it to the folder (Mikolov's simple-examples/data, see jaxnas/data/text.py)")
    c = load_ptb(directory)
    cut = lambda a, n: a if n is None else a[: int(n)]
    return LMData(c, cut(c.train, max_train), cut(c.valid, max_val), cut(c.test, max_val))


def window_count(rows: int, bptt: int) -> int:
    """Full BPTT windows in a batchified stream of ``rows`` rows: ``(rows - 1) // bptt`` (the ragged
    tail of the DARTS loop is left out in training so that shapes stay static)."""
    return max((int(rows) - 1) // int(bptt), 0)


def windows_per_epoch(num_tokens: int, batch_size: int, bptt: int) -> int:
    """Training steps in one epoch over ``num_tokens`` tokens at ``batch_size`` streams."""
    return window_count(int(num_tokens) // int(batch_size), bptt)
