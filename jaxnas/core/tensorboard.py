"""TensorBoard event files of a run (``WORKDIR/tensorboard/``; ``tensorboard --logdir WORKDIR``).

Written with tensorboardX (numpy + protobuf, no TensorFlow). Every metric row the engine logs becomes
scalars at its step (a vector metric, e.g. one value per lane: its mean as the scalar and the values as
a histogram ``TAG/values``); at each checkpoint the derived architecture's text and, with matplotlib,
its drawing. A resume purges the events past its checkpoint (``purge_step``), as it trims
``metrics.jsonl``, so a curve has one value per step.

:func:`read_scalars` reads the files back without TensorBoard (tests, notebooks).
"""
from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np

DIR = "tensorboard"


def available() -> bool:
    """Whether the writer (tensorboardX) is installed."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


class EventLog:
    """Scalars, texts and figures of one run, written under ``logdir``."""

    def __init__(self, logdir, purge_step: int | None = None):
        from tensorboardX import SummaryWriter
        # flush_secs: a watcher sees a chunk's rows within seconds; purge_step hides a killed run's tail;
        # the suffix: tensorboardX names a file by the second it opened, so a resume within the same
        # second would reopen (truncate) the previous writer's file: nanoseconds keep the names apart
        # and in time order (TensorBoard and read_events go through the files by name)
        self._w = SummaryWriter(str(logdir), purge_step=purge_step or None, flush_secs=10,
                                filename_suffix=f".{time.time_ns()}")

    def rows(self, rows: list[dict]) -> None:
        """``metrics.jsonl`` rows (``step``, ``phase``, then ``tag: value``) as scalars."""
        for row in rows:
            step = int(row["step"])
            for tag, v in row.items():
                if tag in ("step", "phase"):
                    continue
                if isinstance(v, list):
                    a = np.asarray(v, np.float64)
                    self._w.add_scalar(tag, float(a.mean()), step)
                    self._w.add_histogram(f"{tag}/values", a, step)
                else:
                    self._w.add_scalar(tag, float(v), step)

    def architecture(self, step: int, text: str, figure=None) -> None:
        """The derived architecture at ``step``: its text, and its drawing when given (a matplotlib figure)."""
        self._w.add_text("architecture", text, step)
        if figure is not None:
            self._w.add_figure("architecture", figure, step, close=True)

    def close(self) -> None:
        self._w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _records(path: Path):
    """The payloads of a TFRecord file (u64 length, u32 crc, data, u32 crc); a torn tail is ignored."""
    data = path.read_bytes()
    at = 0
    while at + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[at:at + 8])
        if at + 12 + n + 4 > len(data):
            return
        yield data[at + 12:at + 12 + n]
        at += 12 + n + 4


def read_events(logdir) -> list:
    """Every event (``tensorboardX.proto.event_pb2.Event``) of the event files under ``logdir``, in file order."""
    from tensorboardX.proto import event_pb2
    events = []
    for f in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for payload in _records(f):
            e = event_pb2.Event()
            e.ParseFromString(payload)
            events.append(e)
    return events


def read_scalars(logdir) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of the scalars under ``logdir``; for a step written twice (a resume) the
    last write, which is what TensorBoard shows after ``purge_step``."""
    out: dict[str, dict[int, float]] = {}
    for e in read_events(logdir):
        for v in e.summary.value:
            if v.WhichOneof("value") == "simple_value":
                out.setdefault(v.tag, {})[int(e.step)] = float(v.simple_value)
    return out


def read_tags(logdir) -> dict[str, set[str]]:
    """``{kind: {tags}}`` of every summary under ``logdir`` (kind: ``scalar``, ``histogram``, ``image``,
    ``text``)."""
    out: dict[str, set[str]] = {}
    for e in read_events(logdir):
        for v in e.summary.value:
            which = v.WhichOneof("value")
            kind = {"simple_value": "scalar", "histo": "histogram", "image": "image"}.get(which)
            if kind is None and v.metadata.plugin_data.plugin_name == "text":
                kind = "text"
            out.setdefault(kind or which or "other", set()).add(v.tag)
    return out
