"""Atomic writes leave files with the permissions the user's umask gives, without ever setting the umask."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from modules.storage import atomic_files

REPO = Path(__file__).resolve().parents[1]


def test_a_written_file_gets_the_permissions_the_umask_allows(tmp_path):
    for umask, expected in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        target = tmp_path / f"report_{umask:o}.txt"
        script = ("import os, sys; os.umask(int(sys.argv[2], 8)); "
                  "from modules.storage.atomic_files import replace_atomically; "
                  "replace_atomically(sys.argv[1], lambda stream: stream.write('x'), 'w')")
        subprocess.run([sys.executable, "-c", script, str(target), f"{umask:o}"], check=True, cwd=REPO)
        assert target.stat().st_mode & 0o777 == expected
        assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_writing_never_touches_the_process_umask(tmp_path, monkeypatch):
    def refuse(mask):
        raise AssertionError("os.umask changes the whole process's umask; atomic writes must not call it")

    monkeypatch.setattr(atomic_files.os, "umask", refuse)
    path = atomic_files.replace_atomically(tmp_path / "state.pt", lambda stream: stream.write(b"data"))
    assert path.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["state.pt"]
