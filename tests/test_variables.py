"""The variables of a sweep as channels of the VAE (node-major) and back."""
from __future__ import annotations

import numpy as np
import pytest

from modules.config.schema import DataConfig
from modules.data.variables import (as_channels, as_node_variables, axis_names, channel_edges, variable_of,
                                    variable_shares)


def test_channels_are_node_major_and_round_trip():
    window = np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)  # [cases, timesteps, nodes, variables]
    channels = as_channels(window)
    assert channels.shape == (2, 3, 8)
    assert channels[1, 2, 5] == window[1, 2, 2, 1]  # channel 5 = node 2, variable 1
    np.testing.assert_array_equal(as_node_variables(channels, 2), window)
    np.testing.assert_array_equal(variable_of(channels, 1, 2), window[..., 1])
    assert as_node_variables(channels, 1) is channels


def test_edges_join_the_same_variable_of_two_nodes():
    assert channel_edges(np.array([[0, 2], [1, 2]]), 2).tolist() == [[0, 4], [1, 5], [2, 4], [3, 5]]
    edges = np.array([[0, 1]])
    assert channel_edges(edges, 1) is edges


def test_shares_follow_the_squared_ranges():
    half_range = np.array([1.0, 10.0, 1.0, 10.0])  # two nodes, variable 1 ten times wider
    np.testing.assert_allclose(variable_shares(half_range, 2), [1 / 101, 100 / 101])
    np.testing.assert_allclose(variable_shares(np.zeros(4), 2), [0.5, 0.5])


@pytest.mark.parametrize("variables, text", [(1, "cases, timesteps, nodes"), (3, "cases, timesteps, nodes, variables")])
def test_axis_names(variables, text):
    assert axis_names(DataConfig(num_variables=variables)) == text
