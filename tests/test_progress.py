"""The passes over a sweep show a bar during a run on a terminal, and nothing outside a run."""
from __future__ import annotations

import io
import sys

from modules.runtime import memory, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_counts_the_cases_of_a_pass_only_while_a_run_shows_bars(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    chunks = list(memory.chunks(list(range(10)), 4))
    assert list(progress.counted(iter(chunks), 10, "data: scan")) == chunks
    assert terminal.getvalue() == ""
    with progress.shown_during(True):
        slices = list(progress.counted(memory.chunk_slices(10, 4), 10, "report: blocks", unit="step"))
        with progress.shown_during(False):  # a nested choice, restored afterwards
            list(progress.counted(iter(chunks), 10, "hidden"))
        list(progress.counted(iter(chunks), 10, "data: scan"))
    shown = terminal.getvalue()
    assert slices == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert "report: blocks" in shown and "0/10" in shown and "step/s" in shown and "hidden" not in shown
    assert "data: scan" in shown
    list(progress.counted(iter(chunks), 10, "after the run"))
    assert terminal.getvalue() == shown


def test_no_bar_goes_to_a_log_file(monkeypatch):
    log_file = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log_file)
    with progress.shown_during(True):
        assert list(progress.counted(iter([[0, 1]]), 2, "data: scan")) == [[0, 1]]
    assert log_file.getvalue() == ""
