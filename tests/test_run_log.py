"""The run's log: console lines as written, a time-stamped file kept open, nothing from other ranks."""
from __future__ import annotations

import io
import logging
import re

from modules.training.run_log import RunLog


def test_console_gets_the_message_and_the_file_a_stamp_on_every_line(tmp_path):
    console = io.StringIO()
    log = RunLog(tmp_path / "out" / "train_log.txt", None, stream=console)
    assert not (tmp_path / "out" / "train_log.txt").exists()  # nothing logged yet, no file
    log.info("vae epoch 1/2  loss 0.5")
    log.info("table\n  row 1")
    log.close()
    assert console.getvalue() == "vae epoch 1/2  loss 0.5\ntable\n  row 1\n"
    lines = (tmp_path / "out" / "train_log.txt").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  "
    assert [re.sub(stamp, "", line) for line in lines] == ["vae epoch 1/2  loss 0.5", "table", "  row 1"]
    assert all(re.match(stamp, line) for line in lines)


def test_the_file_is_opened_once_and_appended_to_by_a_resumed_run(tmp_path, monkeypatch):
    opened = []
    original = logging.FileHandler._open

    def counted(self):
        opened.append(self.baseFilename)
        return original(self)

    monkeypatch.setattr(logging.FileHandler, "_open", counted)
    for run in ("first", "resumed"):
        log = RunLog(tmp_path / "train_log.txt", None, stream=io.StringIO())
        for epoch in range(3):
            log.info(f"{run} epoch {epoch}")
        log.close()
    assert len(opened) == 2  # once per run, not once per line
    assert [line.split("  ", 1)[1] for line in (tmp_path / "train_log.txt").read_text().splitlines()] == \
        [f"{run} epoch {epoch}" for run in ("first", "resumed") for epoch in range(3)]


def test_a_disabled_log_writes_nothing_anywhere(tmp_path, capsys):
    console = io.StringIO()
    log = RunLog(tmp_path / "train_log.txt", tmp_path / "tensorboard", enabled=False, stream=console)
    log.info("rank 1 says hello")
    log.scalars("vae", {"loss": 1.0}, 1)
    log.close()
    assert console.getvalue() == "" and list(tmp_path.iterdir()) == [] and capsys.readouterr() == ("", "")
    assert not log.show_progress
