"""Gray-level geometry: where each flat gray of a design drawing is drawn, how much, and relative to the others."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from modules.config.schema import ConditionerConfig
from modules.models.conditioner_cnn import GrayLevelGeometry, ImageConditioner
from modules.models.conditioners import build_conditioner

LATENT = dict(latent_dim_main=4, latent_dim_hier=2, num_hier_levels=2)
LEVELS = 3  # black, mid-gray, white: each flat gray of the drawings below sits on a bin's centre


def drawing(arrow_at: tuple) -> torch.Tensor:
    """[1, 1, 33, 33]: black background, a white puff and a mid-gray arrow at pixel rows/cols `arrow_at`."""
    image = torch.zeros(1, 1, 33, 33)
    image[0, 0, 14:19, 14:19] = 1.0
    rows, cols = arrow_at
    image[0, 0, rows, cols] = 0.5
    return image


def split(features: torch.Tensor):
    """GrayLevelGeometry's output for one channel -> (log share, centroid x, centroid y, offsets x, offsets y)."""
    pairs = LEVELS * (LEVELS - 1) // 2
    return torch.split(features[0], [LEVELS, LEVELS, LEVELS, pairs, pairs])


def test_each_gray_level_reports_its_share_and_where_it_is_drawn():
    geometry = GrayLevelGeometry(LEVELS, 1)
    image = drawing((slice(16, 17), slice(19, 25)))  # an arrow pointing right from the puff
    share, centroid_x, centroid_y, offset_x, offset_y = split(geometry(image))
    to_unit = lambda pixel: -1.0 + 2.0 * pixel / 32  # noqa: E731 (pixel index -> [-1, 1])
    assert centroid_x[2].item() == pytest.approx(to_unit(16), abs=1e-4)  # the puff: pixels 14-18
    assert centroid_y[2].item() == pytest.approx(to_unit(16), abs=1e-4)
    assert centroid_x[1].item() == pytest.approx(to_unit(21.5), abs=1e-4)  # the arrow: pixels 19-24
    assert centroid_y[1].item() == pytest.approx(to_unit(16), abs=1e-4)
    assert share.exp()[2].item() == pytest.approx(25 / 33 ** 2 + 1e-4, rel=1e-3)
    assert share.exp()[1].item() == pytest.approx(6 / 33 ** 2 + 1e-4, rel=1e-3)
    # pairs (0, 1), (0, 2), (1, 2): the arrow lies right of the puff, level with it
    assert offset_x[2].item() == pytest.approx(to_unit(21.5) - to_unit(16), abs=1e-4)
    assert offset_y[2].item() == pytest.approx(0.0, abs=1e-4)


def test_turning_the_arrow_turns_the_offset_between_its_gray_and_the_puffs():
    geometry = GrayLevelGeometry(LEVELS, 1)
    right = split(geometry(drawing((slice(16, 17), slice(19, 25)))))
    up = split(geometry(drawing((slice(8, 14), slice(16, 17)))))
    # puff -> arrow offset: along +x for the right arrow, along -y (image rows grow downwards) for the up arrow
    assert right[3][2].item() > 0.2 and abs(right[4][2].item()) < 1e-4
    assert up[4][2].item() < -0.2 and abs(up[3][2].item()) < 1e-4


def test_the_features_do_not_change_with_the_drawings_brightness_scale_or_offset():
    """Each image is binned over its own black-to-white range: the run's input standardisation changes nothing."""
    geometry = GrayLevelGeometry(8, 1)
    image = drawing((slice(16, 17), slice(19, 25)))
    torch.testing.assert_close(geometry(3.0 * image - 0.7), geometry(image), rtol=1e-4, atol=1e-4)


def test_fewer_than_two_levels_or_levels_without_keypoints_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        GrayLevelGeometry(1, 1)
    with pytest.raises(ValueError, match="keypoints"):
        ImageConditioner(1, widths=(8, 8), features="pooled", gray_levels=8, **LATENT)


def test_the_factory_adds_the_geometry_to_the_keypoint_features_only_when_asked():
    image = ConditionerConfig(input_type="image", filters=(8, 16), image_gray_levels=4)
    with_levels = build_conditioner(image, **LATENT)
    without = build_conditioner(dataclasses.replace(image, image_gray_levels=0), **LATENT)
    assert with_levels.gray_geometry.levels == 4 and without.gray_geometry is None
    extra = GrayLevelGeometry(4, 1).output_size
    assert with_levels.keypoint_mix[0].in_features == without.keypoint_mix[0].in_features + extra
    pooled = build_conditioner(dataclasses.replace(image, image_features="pooled"), **LATENT)
    assert pooled.gray_geometry is None  # the key has no effect on the pooled head, it is no error there



def test_the_scale_fitted_on_training_drawings_standardises_each_feature_the_same_in_any_batch():
    torch.manual_seed(0)
    drawings = torch.cat([drawing((slice(16, 17), slice(19, 19 + length))) for length in range(2, 10)])
    drawings = drawings + 0.3 * (torch.rand(8, 1, 1, 1) > 0.5) * drawings  # some puffs brighter: more grays used
    geometry = GrayLevelGeometry(4, 1)
    geometry.fit_scale(drawings, chunk=3)
    features = geometry(drawings)
    varying = geometry.measure(drawings).std(dim=0, unbiased=False) > 1e-6
    assert varying.any() and not varying.all()  # unused gray levels give constant features: centred, not scaled
    torch.testing.assert_close(features.mean(dim=0), torch.zeros(geometry.output_size), atol=1e-4, rtol=0)
    torch.testing.assert_close(features.std(dim=0, unbiased=False)[varying], torch.ones(int(varying.sum())),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(geometry(drawings[3:4]), features[3:4], atol=1e-5, rtol=0)  # alone as in a batch
    assert torch.equal(geometry.state_dict()["scale"], geometry.scale)  # saved with the model
