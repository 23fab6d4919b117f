"""Progress bars that suit both a terminal and a log file.

On a terminal :func:`progress_bar` is a plain ``tqdm`` bar. When the stream is not a terminal
(CI, ``nohup``, cluster jobs, ``make demo > log``) a redrawn bar floods the log with
carriage-return frames; there it writes a plain newline-terminated status line at most every
``interval`` seconds, and nothing at all for a loop that ends sooner.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between status lines off a terminal
_LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _LogLines(tqdm):
    """tqdm that writes whole lines (no ``\\r``, no bar): for streams that are not terminals."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing its bar: there is nothing to clear in a log
            return False
        self.fp.write(f"{self if msg is None else msg}\n")
        self.fp.flush()
        return True

    # tqdm redraws on every set_postfix/set_description: here only update()'s timed refresh
    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kw: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kw)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description_str(desc, refresh=False)

    def close(self) -> None:
        if not self.disable and self.leave and self.last_print_t >= self.start_t + self.delay \
                and self.n != self.last_print_n:
            self.display()  # the final state, once, if a line was printed before
        self.leave = False  # tqdm's own close would add a blank line
        super().close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None,
                 desc: str | None = None, unit: str = "it", disable: bool = False,
                 interval: float = LOG_INTERVAL, **kw: Any) -> tqdm:
    """A ``tqdm`` over ``iterable`` (keywords as tqdm's) that behaves in logs: on a terminal
    (``kw['file']``, default stderr) a normal bar; elsewhere a status line every ``interval``
    seconds at most, the first after ``interval`` seconds."""
    stream = kw.get("file") or sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, **kw)
    kw.setdefault("bar_format", _LOG_FORMAT if desc else _LOG_FORMAT.replace("{desc}: ", ""))
    kw.update(mininterval=interval, maxinterval=max(interval, kw.get("maxinterval", 0)),
              delay=interval, file=stream)
    return _LogLines(iterable, total=total, desc=desc, unit=unit, disable=disable, **kw)
