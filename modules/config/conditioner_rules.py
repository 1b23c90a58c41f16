"""Which conditioner network a configuration builds, and the conditioner settings that cannot work.

Part of validating the configuration: `issues` finds these problems before any work starts (network vs
input type, more image PCA components than the training cases support); `resolve_architecture` and
ImagePCA.fit raise the same errors when called directly.
"""
from __future__ import annotations

import dataclasses
from typing import List

from modules.config.legacy_keys import legacy_key
from modules.config.schema import CONDITIONER_ARCHITECTURES, ConditionerConfig, RunConfig
from modules.errors import ConfigError, ConfigIssue

# The key users write in condition.txt to choose the network.
ARCHITECTURE_KEY = legacy_key("conditioner.architecture")
# The key that turns on PCA scores of the images as the MLP's input.
COMPONENTS_KEY = legacy_key("conditioner.image_pca_components")


def max_components(num_training_images: int) -> int:
    """Most components k training images support: centred on their mean they span k - 1 directions."""
    return max(num_training_images - 1, 0)


def too_many_components_issue(requested: int, num_training_images: int) -> ConfigIssue:
    limit = max_components(num_training_images)
    return ConfigIssue(
        key=COMPONENTS_KEY,
        message=(f"asks for {requested} PCA components, but the {num_training_images} training images span at most "
                 f"{limit} directions (images centred on their mean lose one)"),
        fix=(f"set {COMPONENTS_KEY} to at most {limit}, or hold out fewer cases (validation_fraction)"
             if limit > 0 else "use a sweep with more training cases, or set image_pca_components 0"),
    )


def resolve_architecture(cfg: ConditionerConfig) -> str:
    """The network `build_conditioner` will make: 'mlp', 'cnn' or 'vit'.

    image_pca_components > 0 needs input_type image and makes the network an MLP (auto or mlp).
    Raises ConfigError when the architecture cannot read the configured input type.
    """
    architecture = cfg.architecture
    if cfg.image_pca_components > 0 and architecture in CONDITIONER_ARCHITECTURES:
        return _architecture_for_pca(cfg)
    if architecture == "auto":
        if cfg.input_type == "csv":
            return "mlp"
        if cfg.input_type == "image":
            return "cnn"
    if architecture == "mlp" and cfg.input_type == "csv":
        return "mlp"
    if architecture in ("cnn", "vit") and cfg.input_type == "image":
        return architecture
    raise ConfigError([_mismatch_issue(cfg)])


def resolve_decoder_start(config: RunConfig) -> RunConfig:
    """e2e_decoder_start auto -> 'vae' for designs read as image pixels (the CNN/ViT) or an untrained decoder,
    'fresh' otherwise. Measured
    on the wave sweep's held-out designs (README, ablations): the CNN on the design images predicted at 0.464
    from the VAE's decoder against 0.549 from a fresh one, while the parameter MLP on the advection sweep
    predicted at 0.466 from a fresh decoder against 0.589 from the VAE's."""
    end_to_end = config.end_to_end
    if end_to_end.decoder_start != "auto":
        return config
    pixels = config.conditioner.input_type == "image" and config.conditioner.image_pca_components == 0
    trained = end_to_end.enabled and end_to_end.finetune_decoder  # a fresh decoder must be trained
    return dataclasses.replace(config, end_to_end=dataclasses.replace(
        end_to_end, decoder_start="fresh" if trained and not pixels else "vae"))


def _architecture_for_pca(cfg: ConditionerConfig) -> str:
    """PCA scores are a vector, so only the MLP reads them, and only images have pixels to project."""
    if cfg.input_type != "image":
        raise ConfigError([ConfigIssue(
            key=COMPONENTS_KEY,
            message=(f"{cfg.image_pca_components} projects design images onto PCA components, "
                     f"but input_type is '{cfg.input_type}'"),
            fix="set image_pca_components to 0 for CSV parameters, or set input_type to image",
        )])
    if cfg.architecture in ("auto", "mlp"):
        return "mlp"
    raise ConfigError([ConfigIssue(
        key=COMPONENTS_KEY,
        message=(f"{cfg.image_pca_components} feeds PCA scores of the images to an MLP, but {ARCHITECTURE_KEY} "
                 f"is '{cfg.architecture}', which reads pixels"),
        fix=(f"set {ARCHITECTURE_KEY} to mlp or auto to use the PCA scores, or set image_pca_components "
             f"to 0 to feed the pixels to the {cfg.architecture}"),
    )])


def _mismatch_issue(cfg: ConditionerConfig) -> ConfigIssue:
    if cfg.architecture == "mlp":
        return ConfigIssue(
            key=ARCHITECTURE_KEY,
            message=(f"'mlp' reads a vector of num_param CSV values, but input_type is '{cfg.input_type}'; "
                     "images are not flattened into an MLP"),
            fix=("for images set conditioner_type to cnn, vit or auto, or keep mlp and set image_pca_components "
                 "to e.g. 32 to feed it PCA scores of the images; for parameters set input_type to csvs"),
        )
    if cfg.architecture in ("cnn", "vit"):
        return ConfigIssue(
            key=ARCHITECTURE_KEY,
            message=f"'{cfg.architecture}' reads images, but input_type is '{cfg.input_type}'",
            fix="for CSV parameters set conditioner_type to mlp or auto; for images set input_type to image",
        )
    return ConfigIssue(
        key=ARCHITECTURE_KEY,
        message=(f"cannot build a conditioner for architecture '{cfg.architecture}' "
                 f"and input_type '{cfg.input_type}'"),
        fix="use conditioner_type auto, mlp, cnn or vit and input_type csvs or image",
    )


def issues(config: RunConfig) -> List[ConfigIssue]:
    """The conditioner problems of a whole configuration: the network cannot read the input type, or the
    training cases of the split cannot support the image PCA components asked for."""
    try:
        resolve_architecture(config.conditioner)
    except ConfigError as error:
        return error.issues
    requested = config.conditioner.image_pca_components
    num_training = config.data.num_training_cases
    if requested > 0 and requested > max_components(num_training):
        return [too_many_components_issue(requested, num_training)]
    return []
