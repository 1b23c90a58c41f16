"""The passes over a sweep show a bar during a run, and nothing outside one."""
from __future__ import annotations

from modules.runtime import memory, progress


def test_a_bar_counts_the_cases_of_a_pass_only_while_a_run_shows_bars(capsys):
    chunks = list(memory.chunks(list(range(10)), 4))
    assert list(progress.counted(iter(chunks), 10, "data: scan")) == chunks
    assert capsys.readouterr().err == ""
    with progress.shown_during(True):
        slices = list(progress.counted(memory.chunk_slices(10, 4), 10, "report: blocks", unit="step"))
        with progress.shown_during(False):  # a nested choice, restored afterwards
            list(progress.counted(iter(chunks), 10, "hidden"))
        list(progress.counted(iter(chunks), 10, "data: scan"))
    err = capsys.readouterr().err
    assert slices == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert "report: blocks" in err and "0/10" in err and "step/s" in err and "hidden" not in err
    assert "data: scan" in err
    list(progress.counted(iter(chunks), 10, "after the run"))
    assert capsys.readouterr().err == ""
