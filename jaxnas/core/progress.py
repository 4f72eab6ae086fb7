"""The progress display of a search: phase, steps, rate, ETA and the latest loss/reward (tqdm).

Shown only when the stream is a terminal (or ``force``): in a log file, a notebook cell's captured
stream or CI a bar is noise, and the run's messages still go to the same stream. A ``None`` stream
(``--quiet``) shows nothing.
"""
from __future__ import annotations


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):    # no isatty, or a closed stream
        return False


class Progress:
    """``update(n, phase, **values)`` after each chunk; ``close()`` at the end (also a context manager)."""

    def __init__(self, total: int, stream, initial: int = 0, force: bool = False):
        self._bar = None
        if stream is not None and (force or _is_terminal(stream)):
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, file=stream, unit="step", dynamic_ncols=True,
                             smoothing=0.1, bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                       "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")

    def update(self, n: int, phase: str, **values: float) -> None:
        if self._bar is None:
            return
        self._bar.set_description_str(phase, refresh=False)
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
