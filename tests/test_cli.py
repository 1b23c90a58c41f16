"""Command-line mistakes: a clear message, a non-zero exit, and nothing written."""
from __future__ import annotations


import pytest

from tiny_sweep import load_entry

@pytest.fixture(scope="module")
def entry():
    return load_entry("simulgen_entry_cli")


def test_unknown_flag_is_refused(entry, capsys):
    with pytest.raises(SystemExit) as stop:
        entry.main(["--epoch", "3"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --epoch 3" in capsys.readouterr().err  # no prefix matching of --epochs


def test_conflicting_flags_are_refused(entry, capsys):
    with pytest.raises(SystemExit) as stop:
        entry.main(["--resume", "--overwrite"])
    assert stop.value.code == 2
    assert "--resume continues the run in --out while --overwrite starts it afresh; choose one" in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["--plot=5"], "argument --plot: invalid choice: 5"),
    (["--lc_only=2"], "argument --lc_only: expected 0 or 1, got '2'"),
    (["--epochs=0"], "argument --epochs: expected a positive number, got 0"),
    (["--training-minutes=-1"], "argument --training-minutes: expected 0 or a positive number of minutes, got -1.0"),
    (["--training-minutes=soon"], "argument --training-minutes: expected a number, got 'soon'"),
    (["predict", "--model", "x", "--out", "p.npy"], "one of the arguments --params --images is required"),
])
def test_bad_values_name_the_flag(entry, capsys, argv, fragment):
    with pytest.raises(SystemExit) as stop:
        entry.main(argv)
    assert stop.value.code == 2
    assert fragment in capsys.readouterr().err


def test_missing_config_files_are_reported_together_and_nothing_is_created(entry, tmp_path, capsys):
    out = tmp_path / "out"
    code = entry.main(["--condition", str(tmp_path / "nope.txt"), "--preset-file", str(tmp_path / "nopreset.txt"),
                       "--out", str(out)])
    message = capsys.readouterr().err
    assert code == 1
    assert "2 configuration problems found" in message
    assert f"{tmp_path / 'nope.txt'}: file not found" in message and f"{tmp_path / 'nopreset.txt'}: file not found" in message
    assert not out.exists()


def test_help_lists_every_flag_with_examples(entry, capsys):
    with pytest.raises(SystemExit) as stop:
        entry.main(["--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0
    for flag in ("--preset", "--plot", "--lc_only", "--size", "--load_all", "--use_ddp", "--condition", "--preset-file",
                 "--epochs", "--batch-size", "--lr", "--device", "--seed", "--out", "--resume", "--overwrite"):
        assert flag in text
    assert "examples:" in text and "predict --help" in text


def test_predict_output_must_be_npy_and_existing_outputs_are_kept(entry, tmp_path, capsys):
    existing = tmp_path / "pred.npy"
    existing.write_bytes(b"keep me")
    code = entry.main(["predict", "--model", str(tmp_path), "--params", str(tmp_path / "d.csv"), "--out", str(existing)])
    assert code == 1
    assert "already exists and was left unchanged; pass --overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
