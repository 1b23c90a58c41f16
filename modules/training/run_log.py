"""What a run tells the user: console lines, a plain-text log and TensorBoard scalars.

Only rank 0 writes anything; other ranks get a silent log. TensorBoard is
imported lazily so commands that never train do not pay for it.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, TextIO


class RunLog:
    """Console + `log_file` + TensorBoard event files under `tensorboard_dir`."""

    def __init__(self, log_file: Optional[Path], tensorboard_dir: Optional[Path], enabled: bool = True,
                 show_progress: bool = True, stream: TextIO = sys.stdout):
        self.enabled = enabled
        self.show_progress = show_progress and enabled
        self.stream = stream
        self.log_file = log_file if enabled else None
        self.tensorboard_dir = tensorboard_dir if enabled else None
        self._writers: Dict[str, Any] = {}
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        print(message, file=self.stream, flush=True)
        self._append(message)

    def epoch_line(self, message: str) -> None:
        """Per-epoch summary: always in the log file, on the console too."""
        self.info(message)

    def _append(self, message: str) -> None:
        if self.log_file is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_file, "a", encoding="utf-8") as handle:
            for line in message.splitlines() or [""]:
                handle.write(f"{stamp}  {line}\n")

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
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
