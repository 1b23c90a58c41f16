"""What a run tells the user: console lines, a plain-text log and TensorBoard scalars.

Messages go through a `logging.Logger` of this run: one handler prints them as they are, a FileHandler
(opened at the first message, then kept open) adds a time stamp to each line of the log file. Only rank 0 writes anything;
other ranks get a silent log. TensorBoard is imported lazily so commands that never train do not pay for it.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict, Optional, TextIO

STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


class StampedLines(logging.Formatter):
    """Each line of a message after the record's time: a multi-line table stays aligned in the file."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, STAMP_FORMAT)
        return "\n".join(f"{stamp}  {line}" for line in (record.getMessage().splitlines() or [""]))


class RunLog:
    """Console + `log_file` + TensorBoard event files under `tensorboard_dir`."""

    def __init__(self, log_file: Optional[Path], tensorboard_dir: Optional[Path], enabled: bool = True,
                 show_progress: bool = True, stream: TextIO = sys.stdout):
        self.enabled = enabled
        self.show_progress = show_progress and enabled
        self.tensorboard_dir = tensorboard_dir if enabled else None
        self._writers: Dict[str, Any] = {}
        # A logger of its own, outside logging's tree: nothing the user's or a library's logging setup does
        # reaches this run's console lines or file, and two runs in one process stay apart.
        self.logger = logging.Logger("simulgenvae.run", logging.INFO)
        if not enabled:
            return
        console = logging.StreamHandler(stream)
        console.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(console)
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            # delay: the file appears with the first line, so a run refused before it logs leaves no file.
            file = logging.FileHandler(log_file, mode="a", encoding="utf-8", delay=True)
            file.setFormatter(StampedLines())
            self.logger.addHandler(file)

    def info(self, message: str) -> None:
        self.logger.info(message)

    def scalars(self, stage: str, values: Dict[str, float], step: int) -> None:
        if self.tensorboard_dir is None:
            return
        writer = self._writers.get(stage)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(log_dir=str(self.tensorboard_dir / stage))
            self._writers[stage] = writer
        for key, value in values.items():
            writer.add_scalar(key, value, step)
        writer.flush()

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
