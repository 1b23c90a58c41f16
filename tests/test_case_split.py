"""Train / validation / test split: seeded shares, or fixed by a split file, always disjoint and explained."""
from __future__ import annotations

import json

import numpy as np
import pytest

from modules.config.schema import DataConfig
from modules.data.case_split import split_cases
from modules.errors import DataError


def seeded(num_cases: int, validation: float, test: float = 0.0, seed: int = 3):
    return split_cases(DataConfig(num_cases=num_cases, validation_fraction=validation, test_fraction=test,
                                  split_seed=seed), base_dir=None)


@pytest.mark.parametrize("num_cases, validation, test", [(2, 0.2, 0.0), (10, 0.2, 0.1), (7, 0.5, 0.2), (5, 0.6, 0.3)])
def test_seeded_split_is_disjoint_complete_sorted_and_repeatable(num_cases, validation, test):
    split = seeded(num_cases, validation, test)
    parts = (split.train, split.validation, split.test)
    assert len(split.train) >= 1 and len(split.validation) >= 1
    assert all(np.all(np.diff(part) > 0) for part in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_cases))
    again = seeded(num_cases, validation, test)
    for first, second in zip(parts, (again.train, again.validation, again.test)):
        np.testing.assert_array_equal(first, second)


def test_split_sizes_and_seed_dependence():
    split = seeded(100, 0.2, 0.1, seed=0)
    assert (len(split.train), len(split.validation), len(split.test)) == (70, 20, 10)
    assert any(not np.array_equal(split.test, seeded(100, 0.2, 0.1, seed=s).test) for s in (1, 2, 3))


def test_without_a_test_share_the_validation_cases_are_those_of_earlier_versions():
    # Earlier versions held out order[:num_val] of the same seeded permutation for validation.
    order = np.random.default_rng(3).permutation(20)
    np.testing.assert_array_equal(seeded(20, 0.2).validation, np.sort(order[:4]))
    assert len(seeded(20, 0.2).test) == 0


def test_a_split_file_fixes_train_and_test_and_draws_validation_from_train(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"train": list(range(0, 16)), "test": [16, 17, 18, 19]}))
    data = DataConfig(num_cases=20, validation_fraction=0.25, split_file="split.json", split_seed=1)
    split = split_cases(data, tmp_path)
    np.testing.assert_array_equal(split.test, [16, 17, 18, 19])
    assert len(split.validation) == 4 and set(split.validation) <= set(range(16))
    np.testing.assert_array_equal(np.sort(np.concatenate([split.train, split.validation])), np.arange(16))
    (tmp_path / "explicit.json").write_text(json.dumps({"train": [0, 1, 2], "validation": [3], "test": [4]}))
    explicit = split_cases(DataConfig(num_cases=6, split_file="explicit.json"), tmp_path)
    assert (explicit.train.tolist(), explicit.validation.tolist(), explicit.test.tolist()) == ([0, 1, 2], [3], [4])


@pytest.mark.parametrize("content, message", [
    ("not json", "not readable JSON"),
    ('[1, 2]', 'expected an object with a "train" list'),
    ('{"train": [0, 1, "2"], "test": [3]}', '"train" must be a list of whole numbers'),
    ('{"train": [0, 1, 2], "test": [9]}', '"test" holds [9], outside 0..5'),
    ('{"train": [0, 1, 2], "validation": [3], "test": [2]}', 'cases [2] are in both "train" and "test"'),
    ('{"train": [0], "test": [1]}', "needs at least one training and one validation case"),
])
def test_a_bad_split_file_names_the_file_the_problem_and_the_fix(tmp_path, content, message):
    (tmp_path / "split.json").write_text(content)
    with pytest.raises(DataError) as error:
        split_cases(DataConfig(num_cases=6, split_file="split.json"), tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'split.json'} (split_file): ")
    assert message in str(error.value)
    assert "fix: " in str(error.value)


def test_a_missing_split_file_says_which_key_to_correct(tmp_path):
    with pytest.raises(DataError, match=r"missing.json \(split_file\): not found\n    fix: correct split_file"):
        split_cases(DataConfig(num_cases=6, split_file="missing.json"), tmp_path)
