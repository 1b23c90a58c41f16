"""Which design parameters are read as logarithms (log_parameters), and the setting's checks."""
import numpy as np
import pytest
from scipy.stats import qmc

from modules.config.log_parameters import listed_columns, setting_problem
from modules.config.schema import ConditionerConfig
from modules.data.log_spacing import (MIN_LOG_SPAN, describe_columns, is_log_spaced, log_columns, spread_text,
                                      unevenness)
from modules.errors import DataError


def latin_hypercube(cases: int, columns: int, seed: int = 0) -> np.ndarray:
    return qmc.LatinHypercube(d=columns, seed=seed).random(cases)


def test_unevenness_is_near_0_for_an_even_sample_and_large_for_a_crowded_one():
    even = latin_hypercube(128, 1)[:, 0]
    assert unevenness(even) < 0.03
    assert unevenness(even ** 3) > 0.3  # crowded at the low end
    assert unevenness(np.full(5, 2.0)) == 1.0  # a constant column is not spread at all
    # Scale and offset do not matter: the distance is over the column's own range.
    assert unevenness(3.0 + 7.0 * even) == pytest.approx(unevenness(even))


def test_a_log_uniform_column_is_read_as_its_logarithm_and_a_uniform_one_over_the_same_range_is_not():
    unit = latin_hypercube(128, 1, seed=3)[:, 0]
    log_uniform = 1e-5 * 6.0 ** unit  # the demo's diffusivity: 1e-5..6e-5, log-uniform
    uniform = 0.05 + 1.45 * unit  # impact-dev's damping: 0.05..1.5 (a factor of 29), uniform
    assert is_log_spaced(log_uniform)
    assert not is_log_spaced(uniform)


def test_a_narrow_range_or_a_value_that_is_not_positive_is_never_read_as_a_logarithm():
    unit = latin_hypercube(64, 1, seed=1)[:, 0]
    narrow = (MIN_LOG_SPAN * 0.9) ** unit  # log-uniform, but spanning less than MIN_LOG_SPAN
    assert not is_log_spaced(narrow)
    assert is_log_spaced((MIN_LOG_SPAN * 2) ** unit)
    with_zero = np.append(10.0 ** (3 * unit), 0.0)
    assert not is_log_spaced(with_zero)
    assert not is_log_spaced(-(10.0 ** (3 * unit)))


def test_auto_picks_the_log_uniform_columns_on_the_training_designs_and_spares_the_kept_linear_ones():
    unit = latin_hypercube(100, 3, seed=2)
    designs = np.column_stack([unit[:, 0], 1e-5 * 10.0 ** (2 * unit[:, 1]), 2.0 * 50.0 ** unit[:, 2]])
    train = np.arange(80)
    assert log_columns("auto", designs, train) == [1, 2]
    assert log_columns("auto", designs, train, keep_linear=[2]) == [1]  # an amplitude parameter stays linear
    assert log_columns("none", designs, train) == []
    assert log_columns("1", np.abs(designs) + 1, train) == [0]  # an explicit list is obeyed as it is
    assert log_columns("auto", np.zeros((4, 1, 8, 8)), [0, 1]) == []  # images have no parameter columns
    # A test design that is not positive keeps the column linear: it would have no logarithm.
    negative = designs.copy()
    negative[95, 1] = -1.0
    assert log_columns("auto", negative, train) == [2]


def test_an_explicit_column_with_a_value_that_is_not_positive_names_the_design_and_the_fix():
    designs = np.array([[1.0, 2.0], [2.0, 0.0], [3.0, 4.0]])
    with pytest.raises(DataError) as error:
        log_columns("2", designs, [0, 1, 2])
    assert "log_parameters 2: parameter 2 of design 2 is 0" in str(error.value)
    assert "fix: leave column 2 out of log_parameters" in str(error.value)


def test_the_log_names_the_columns_and_their_spread():
    assert describe_columns([]) == "no parameter"
    assert describe_columns([4]) == "parameter 5"
    assert describe_columns([1, 4]) == "parameters 2, 5"
    designs = np.column_stack([np.linspace(1, 2, 9), 10.0 ** np.linspace(0, 2, 9)])
    text = spread_text(designs, np.arange(9), [1])
    assert "parameter 2 " in text and f"{unevenness(np.log(designs[:, 1])):.2f}" in text


def test_the_setting_accepts_auto_none_or_columns_in_range_and_says_what_else_is_wrong():
    assert setting_problem("auto", 5) == "" and setting_problem("none", 5) == ""
    assert setting_problem("2, 5", 5) == ""
    assert "1-5" in setting_problem("6", 5)
    assert setting_problem("0", 5) and setting_problem("log", 5) and setting_problem("1;2", 5)
    assert listed_columns("5,2,5") == [1, 4]
    assert listed_columns("auto") == [] and listed_columns("none") == []


def test_the_config_refuses_a_bad_value_and_the_amplitude_parameter_read_as_a_logarithm():
    assert not ConditionerConfig(num_params=5).problems()
    bad = ConditionerConfig(num_params=5, log_parameters="7").problems()
    assert [problem.key for problem in bad] == ["log_parameters"] and "got '7'" in bad[0].message
    clash = ConditionerConfig(num_params=5, log_parameters="3,4", amplitude_parameter="4").problems()
    assert [problem.key for problem in clash] == ["log_parameters"]
    assert "amplitude_parameter" in clash[0].message and "leave column 4 out" in clash[0].fix
    assert not ConditionerConfig(num_params=5, log_parameters="3", amplitude_parameter="4").problems()
