import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from modules.models.conditioner_cnn import (ImageConditioner, SpatialAttention, SpatialKeypoints, group_count,
                                            with_pixel_coordinates)
from modules.models.conditioner_mlp import ParametricConditioner, block_dropout_rates
from modules.models.conditioner_vit import VisionTransformerConditioner
from modules.config.conditioner_rules import resolve_architecture
from modules.models.conditioners import build_conditioner, count_parameters
from modules.models.latent_layout import LatentLayout, LatentPrediction
from modules.config.schema import ConditionerConfig
from modules.errors import ConfigError

pytestmark = pytest.mark.usefixtures("single_thread")


LATENT = dict(latent_dim_main=6, latent_dim_hier=3, num_hier_levels=2)
FLAT_WIDTH = 6 + 2 * 3


def tiny_mlp(dropout_rate=0.0):
    return ParametricConditioner(num_params=4, hidden_widths=(16, 32, 16), dropout_rate=dropout_rate, **LATENT)


def tiny_cnn(dropout_rate=0.0, in_channels=1, **kwargs):
    return ImageConditioner(in_channels=in_channels, widths=(8, 16), dropout_rate=dropout_rate, **kwargs, **LATENT)


def tiny_vit(dropout_rate=0.0, image_size=16):
    return VisionTransformerConditioner(in_channels=1, image_size=image_size, patch_size=4, embed_dim=16, depth=2,
                                        num_heads=2, dropout_rate=dropout_rate, **LATENT)


def assert_latent_shapes(prediction, batch):
    assert isinstance(prediction, LatentPrediction)
    assert prediction.main.shape == (batch, 6)
    assert prediction.hier.shape == (batch, 2, 3)
    assert prediction.flat().shape == (batch, FLAT_WIDTH)


# ---------------------------------------------------------------- LatentPrediction

def test_flat_puts_main_first_then_each_level_in_order():
    main = torch.tensor([[1.0, 2.0]])
    hier = torch.tensor([[[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]]])
    flat = LatentPrediction(main=main, hier=hier).flat()
    assert flat.tolist() == [[1.0, 2.0, 10.0, 11.0, 12.0, 20.0, 21.0, 22.0]]
    back_main, back_hier = LatentLayout(main=2, hier=3, levels=2).split(flat)
    assert torch.equal(back_main, main) and torch.equal(torch.stack(back_hier, dim=1), hier)


def test_splitting_a_flat_latent_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"expected a flat latent of shape \[B, 8\] \(2 \+ 2 x 3\), got \[1, 7\]"):
        LatentLayout(main=2, hier=3, levels=2).split(torch.zeros(1, 7))


def test_zero_hierarchical_levels_give_an_empty_hier_tensor():
    model = ParametricConditioner(num_params=4, latent_dim_main=5, latent_dim_hier=3, num_hier_levels=0,
                                  hidden_widths=(8,))
    prediction = model(torch.randn(2, 4))
    assert prediction.hier.shape == (2, 0, 3)
    assert torch.equal(prediction.flat(), prediction.main)


def test_count_parameters_by_hand():
    module = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))  # (3*2+2) + (2*1+1) = 11
    assert count_parameters(module) == 11
    module[1].weight.requires_grad_(False)
    assert count_parameters(module) == 9
    assert count_parameters(module, trainable_only=False) == 11


# ---------------------------------------------------------------- MLP

def test_mlp_shapes_and_input_check():
    model = tiny_mlp()
    assert_latent_shapes(model(torch.randn(5, 4)), 5)
    with pytest.raises(ValueError, match=r"expected parameters of shape \[B, 4\] \(num_param\), got \[5, 3\]"):
        model(torch.randn(5, 3))


def test_mlp_gates_lie_strictly_between_zero_and_one():
    model = tiny_mlp()
    gates = model.gate_values(torch.randn(7, 4) * 5)
    assert [tuple(g.shape) for g in gates] == [(7, 32), (7, 16)]
    for gate in gates:
        assert bool((gate > 0).all()) and bool((gate < 1).all())


def test_mlp_dropout_grows_with_depth():
    assert block_dropout_rates(0.1, 2) == pytest.approx([0.1, 0.15])
    assert block_dropout_rates(0.4, 4) == pytest.approx([0.4, 0.5, 0.5, 0.5])
    assert block_dropout_rates(0.7, 2) == pytest.approx([0.7, 0.7])
    assert block_dropout_rates(0.0, 3) == [0.0, 0.0, 0.0]
    model = ParametricConditioner(num_params=4, hidden_widths=(8, 8, 8, 8), dropout_rate=0.2, **LATENT)
    assert [block.dropout.p for block in model.blocks] == pytest.approx([0.2, 0.2 * 4 / 3, 0.2 * 5 / 3])


# ---------------------------------------------------------------- CNN

@pytest.mark.parametrize("attention, spectral, channels, size", [
    (False, False, 1, 64),
    (True, True, 3, 48),
    (True, False, 1, 48),
    (False, True, 3, 64),
])
def test_cnn_shapes_for_any_size_and_channel_count(attention, spectral, channels, size):
    model = tiny_cnn(in_channels=channels, use_spatial_attention=attention, spectral_norm=spectral)
    assert_latent_shapes(model(torch.rand(2, channels, size, size)), 2)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels != 2]
    assert all(parametrize.is_parametrized(c, "weight") == spectral for c in convs)
    assert (model.spatial_attention is not None) == attention


def test_cnn_rejects_the_wrong_channel_count():
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 3, H, W\], got \[2, 1, 32, 32\]"):
        tiny_cnn(in_channels=3)(torch.rand(2, 1, 32, 32))


def test_pixel_coordinates_run_from_minus_one_to_one_along_each_axis():
    images = torch.rand(2, 3, 4, 5)
    out = with_pixel_coordinates(images)
    assert out.shape == (2, 5, 4, 5) and torch.equal(out[:, :3], images)
    x, y = out[0, 3], out[0, 4]
    assert torch.equal(x[2], torch.linspace(-1, 1, 5)) and torch.equal(x[:, 1], torch.full((4,), -0.5))
    assert torch.equal(y[:, 4], torch.linspace(-1, 1, 4)) and torch.equal(y[0], torch.full((5,), -1.0))
    assert torch.equal(out[1, 3:], out[0, 3:])


def test_coordinate_channels_let_the_cnn_tell_where_a_spot_is():
    """A spot moved by the network's total stride (16 px) is the same drawing to a plain CNN (global pooling
    forgets where it was); with the coordinate channels its features differ by far more."""
    spots = torch.zeros(2, 1, 128, 128)
    spots[0, 0, 48:56, 48:56] = 1
    spots[1, 0, 64:72, 64:72] = 1
    change = {}
    for coordinates in (False, True):
        torch.manual_seed(0)
        model = ImageConditioner(1, widths=(8, 16, 16), dropout_rate=0.0, coordinate_channels=coordinates,
                                 **LATENT).eval()
        with torch.no_grad():
            features = model.features(spots)
        change[coordinates] = (features[0] - features[1]).abs().max().item() / features.abs().max().item()
    assert change[False] < 1e-3
    assert change[True] > 20 * change[False]


def test_the_factory_gives_the_cnn_coordinate_channels_and_keypoints_unless_told_not_to():
    image = ConditionerConfig(input_type="image", filters=(8, 16))
    shipped = build_conditioner(image, **LATENT)
    assert shipped.coordinate_channels and shipped.stem[0].in_channels == 3 and shipped.feature_kind == "keypoints"
    previous = build_conditioner(dataclasses.replace(image, image_coordinates=False, image_features="pooled"), **LATENT)
    assert not previous.coordinate_channels and previous.feature_kind == "pooled"


def test_spatial_keypoints_report_where_each_channel_peaks():
    maps = torch.zeros(2, 3, 5, 9)
    maps[0, 0, 0, 0] = maps[0, 1, 4, 8] = maps[0, 2, 2, 6] = 50.0  # a sharp peak per channel
    expected_x, expected_y = SpatialKeypoints()(maps).view(2, 2, 3)[0]
    assert torch.allclose(expected_x, torch.tensor([-1.0, 1.0, 0.5]), atol=1e-4)
    assert torch.allclose(expected_y, torch.tensor([-1.0, 1.0, 0.0]), atol=1e-4)
    assert torch.allclose(SpatialKeypoints()(maps)[1], torch.zeros(6), atol=1e-6)  # a flat map: the centre


def test_keypoint_features_tell_a_drawing_from_the_same_drawing_twice_as_bright():
    """Per-image GroupNorm makes the pooled CNN blind to a global brightness factor (a drawn load's strength);
    the keypoint head keeps the stem's gray levels before the norm."""
    drawing = torch.zeros(1, 1, 32, 32)
    drawing[0, 0, 10:14, 20:24] = 0.4
    drawing[0, 0, 20:30, 2:8] = 0.2
    pair = torch.cat([drawing, 2 * drawing])
    change = {}
    for kind in ("pooled", "keypoints"):
        torch.manual_seed(0)
        model = ImageConditioner(1, widths=(8, 16, 16), dropout_rate=0.0, features=kind, **LATENT).eval()
        with torch.no_grad():
            features = model.features(pair)
        change[kind] = (features[0] - features[1]).abs().max().item() / features.abs().max().item()
    assert change["pooled"] < 1e-2  # GroupNorm's epsilon, not the brightness, makes the difference
    assert change["keypoints"] > 20 * change["pooled"]


def test_the_keypoint_cnn_keeps_a_map_of_an_eighth_of_the_image_and_rejects_an_unknown_head():
    model = ImageConditioner(1, widths=(8, 16, 16, 16), features="keypoints", **LATENT)
    with torch.no_grad():
        hidden = model.stages(model.stem(torch.rand(2, 1, 64, 64)))
    assert hidden.shape == (2, 16, 8, 8)
    assert model(torch.rand(2, 1, 64, 64)).main.shape == (2, LATENT["latent_dim_main"])
    with pytest.raises(ValueError, match="features must be one of"):
        ImageConditioner(1, widths=(8,), features="maxpool", **LATENT)


def test_group_count_divides_the_channels():
    assert [group_count(c) for c in (1, 6, 8, 12, 16, 20, 7)] == [1, 6, 8, 6, 8, 5, 7]


def test_spatial_attention_map_is_a_per_pixel_gate():
    attention = SpatialAttention()
    features = torch.randn(2, 5, 6, 7)
    gate = attention.attention_map(features)
    assert gate.shape == (2, 1, 6, 7)
    assert bool((gate > 0).all()) and bool((gate < 1).all())
    assert torch.allclose(attention(features), features * gate)


# ---------------------------------------------------------------- ViT

def test_vit_shapes_at_two_image_sizes():
    model = tiny_vit(image_size=16)
    assert_latent_shapes(model(torch.rand(3, 1, 16, 16)), 3)
    assert_latent_shapes(model(torch.rand(3, 1, 24, 24)), 3)
    assert model.position_embeddings(6, 6).shape == (1, 36, 16)


def test_vit_position_table_is_used_as_is_at_the_construction_size():
    model = tiny_vit(image_size=16)
    expected = model.patch_positions.flatten(2).transpose(1, 2)
    assert torch.equal(model.position_embeddings(4, 4), expected)


# ---------------------------------------------------------------- shared behaviour

MODELS = {
    "mlp": (tiny_mlp, lambda: torch.randn(8, 4)),
    "cnn": (lambda dropout_rate: tiny_cnn(dropout_rate, use_spatial_attention=True), lambda: torch.rand(8, 1, 16, 16)),
    "vit": (tiny_vit, lambda: torch.rand(8, 1, 16, 16)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dropout_is_off_in_eval_and_on_in_train(name):
    torch.manual_seed(0)
    make, make_input = MODELS[name]
    model, inputs = make(0.5), make_input()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(inputs).flat(), model(inputs).flat())
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(inputs).flat(), model(inputs).flat())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_overfits_a_tiny_batch(name):
    torch.manual_seed(0)
    make, make_input = MODELS[name]
    model, inputs = make(0.0), make_input()
    targets = torch.randn(8, FLAT_WIDTH)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_now():
        return nn.functional.mse_loss(model(inputs).flat(), targets)

    with torch.no_grad():
        initial = loss_now().item()
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_now()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = loss_now().item()
    assert final < initial / 5, (initial, final)


# ---------------------------------------------------------------- factory

def test_factory_picks_by_architecture_and_input_type():
    def build(**changes):
        return build_conditioner(dataclasses.replace(ConditionerConfig(num_params=3, filters=(8, 16)), **changes),
                                 **LATENT)

    mlp = build()
    assert isinstance(mlp, ParametricConditioner)
    assert_latent_shapes(mlp(torch.randn(2, 3)), 2)
    assert isinstance(build(architecture="mlp"), ParametricConditioner)

    cnn = build(input_type="image", use_spatial_attention=True)
    assert isinstance(cnn, ImageConditioner) and cnn.spatial_attention is not None
    assert_latent_shapes(cnn(torch.rand(2, 1, 32, 32)), 2)
    rgb = build_conditioner(ConditionerConfig(input_type="image", architecture="cnn", filters=(8,)), **LATENT,
                            in_channels=3, spectral_norm=True)
    assert rgb.in_channels == 3 and parametrize.is_parametrized(rgb.stem[0], "weight")

    vit = build(input_type="image", architecture="vit", image_size=16, filters=(6, 10))
    assert isinstance(vit, VisionTransformerConditioner)
    assert vit.patch_embedding.out_channels == 12  # max(filters)=10 rounded up to a multiple of 4 heads
    assert len(vit.layers) == 2
    assert_latent_shapes(vit(torch.rand(2, 1, 16, 16)), 2)


def test_the_mlp_widths_size_the_mlp_only():
    cfg = ConditionerConfig(num_params=3, filters=(8, 16), mlp_widths=(32, 32, 24))
    mlp = build_conditioner(cfg, **LATENT)
    assert [block.main_path[0].out_features for block in mlp.blocks] == [32, 24]
    assert mlp.input_layer[0].out_features == 32
    cnn = build_conditioner(dataclasses.replace(cfg, input_type="image"), **LATENT)
    plain = build_conditioner(dataclasses.replace(cfg, input_type="image", mlp_widths=()), **LATENT)
    assert count_parameters(cnn) == count_parameters(plain)  # the CNN still reads latent_conditioner_filter
    assert [issue.key for issue in dataclasses.replace(cfg, mlp_widths=(0,)).problems()] == ["mlp_widths"]


def test_mlp_with_image_input_is_a_config_error():
    cfg = ConditionerConfig(input_type="image", architecture="mlp")
    with pytest.raises(ConfigError) as caught:
        build_conditioner(cfg, **LATENT)
    (issue,) = caught.value.issues
    assert issue.key == "conditioner_type"
    assert issue.message == ("'mlp' reads a vector of num_param CSV values, but input_type is 'image'; "
                             "images are not flattened into an MLP")
    assert "set conditioner_type to cnn, vit or auto" in issue.fix
    assert str(caught.value).startswith("1 configuration problem found:\n  - key 'conditioner_type': 'mlp' reads")


@pytest.mark.parametrize("architecture", ["cnn", "vit"])
def test_image_networks_with_csv_input_are_a_config_error(architecture):
    cfg = ConditionerConfig(input_type="csv", architecture=architecture)
    with pytest.raises(ConfigError, match=f"'{architecture}' reads images, but input_type is 'csv'"):
        resolve_architecture(cfg)


def test_unknown_architecture_is_a_config_error_not_a_fallback():
    with pytest.raises(ConfigError, match="cannot build a conditioner for architecture 'resnet'"):
        resolve_architecture(ConditionerConfig(architecture="resnet"))
