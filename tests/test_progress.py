"""The passes over a sweep (and the POD + GP fit) show a bar during a run on a terminal, and nothing outside a run."""
from __future__ import annotations

import io
import sys

import numpy as np

from modules.evaluation.baselines import PODGaussianProcessBaseline
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


def test_the_pod_gp_fit_counts_its_modes_during_a_run(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    rng = np.random.default_rng(0)
    designs, coefficients = rng.normal(size=(12, 2)), rng.normal(size=(12, 3))
    assert list(progress.each(range(3), "outside", unit="mode")) == [0, 1, 2]
    with progress.shown_during(True):
        fitted = PODGaussianProcessBaseline().fit_coefficients(designs, coefficients)
    assert fitted.num_modes == 3
    shown = terminal.getvalue()
    assert "one Gaussian process per mode" in shown and "0/3" in shown and "outside" not in shown
