from __future__ import annotations

import io
import time

from temseg.progress import progress_bar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_fast_loop_writes_nothing():
    buf = io.StringIO()
    for _ in progress_bar(range(100_000), desc="epoch 1/3", unit="batch", file=buf):
        pass
    assert buf.getvalue() == ""


def test_off_a_terminal_lines_are_plain_and_spaced():
    buf = io.StringIO()
    bar = progress_bar(range(300), desc="epoch 1/3", unit="batch", file=buf, interval=0.05)
    for _ in bar:
        time.sleep(0.001)
        bar.set_postfix(loss="0.123")
    text = buf.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert 1 <= len(lines) <= 300 * 0.0015 / 0.05 * 4 + 2  # about one per interval, not 300
    assert all(line.startswith("epoch 1/3: ") and "batch" in line for line in lines)
    assert lines[-1].startswith("epoch 1/3: 300/300") and "loss=0.123" in lines[-1]


def test_on_a_terminal_it_is_tqdm():
    buf = Tty()
    for _ in progress_bar(range(10), desc="x", file=buf, mininterval=0):
        pass
    assert "\r" in buf.getvalue()
