"""Line-aware readers for preset.txt and condition.txt, and the one place legacy keys are mapped.

Both files must parse exactly as existing users keep them: free-text lines,
`'` separator lines, `%` section headers, `RESERVED` placeholders, keys and
values separated by tabs or runs of spaces, inline `#` comments, Windows line
endings and a UTF-8 byte-order mark.

`load_run_config` builds the `RunConfig` (defaults < files < command line) and
reports every problem at once, each with its file, line and key.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from modules.config.schema import RunConfig
from modules.errors import ConfigError, ConfigIssue


@dataclass(frozen=True)
class Origin:
    """Where a value came from, for error messages."""

    file: str
    line: Optional[int]
    key: str


class _BadValue(ValueError):
    """A value that does not have the expected type; the message says what was expected."""


def _to_int(text: str) -> int:
    try:
        number = float(text)
    except ValueError:
        raise _BadValue(f"expected an integer, got '{text}'") from None
    if not number.is_integer():
        raise _BadValue(f"expected an integer, got '{text}'")
    return int(number)


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _BadValue(f"expected a number, got '{text}'") from None


def _to_flag(text: str) -> bool:
    if text in ("0", "1"):
        return text == "1"
    raise _BadValue(f"expected 0 or 1, got '{text}'")


def _to_text(text: str) -> str:
    return text


def _to_optional_path(text: str) -> Optional[str]:
    return None if text.lower() in ("", "none") else text


def _to_input_type(text: str) -> str:
    lowered = text.lower()
    if lowered in ("csv", "csvs"):
        return "csv"
    if lowered == "image":
        return "image"
    raise _BadValue(f"expected csvs, csv or image, got '{text}'")


def _to_float_pair(text: str) -> Tuple[float, float]:
    tokens = text.replace(",", " ").split()
    if len(tokens) != 2:
        raise _BadValue(f"expected two numbers (low high), got '{text}'")
    return (_to_float(tokens[0]), _to_float(tokens[1]))


def _to_filters(text: str) -> Tuple[int, ...]:
    tokens = text.replace(",", " ").split()
    if not tokens:
        raise _BadValue("expected a list of channel counts, got an empty line")
    try:
        return tuple(_to_int(token) for token in tokens)
    except _BadValue:
        raise _BadValue(f"expected whole numbers separated by spaces, got '{text}'") from None


# condition.txt key -> (RunConfig field path, converter). Legacy names live only here.
CONDITION_KEYS: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "Dim1": ("data.num_cases", _to_int),
    "Dim2": ("data.num_timesteps", _to_int),
    "Dim3": ("data.num_nodes", _to_int),
    "num_var": ("data.num_variables", _to_int),
    "Dim2_red": ("data.num_timesteps_used", _to_int),
    "Dim3_start": ("data.node_start", _to_int),
    "Dim3_end": ("data.node_end", _to_int),
    "data_path": ("data.data_path", _to_optional_path),
    "coordinates_path": ("data.coordinates_path", _to_optional_path),
    "demo_data": ("data.generate_demo", _to_flag),
    "validation_fraction": ("data.validation_fraction", _to_float),
    "split_seed": ("data.split_seed", _to_int),
    "num_workers": ("data.num_workers", _to_int),
    "Latent_dim": ("model.latent_dim_hier", _to_int),
    "Latent_dim_end": ("model.latent_dim_main", _to_int),
    "spectral_norm": ("model.spectral_norm", _to_flag),
    "grad_checkpoint": ("model.grad_checkpoint", _to_flag),
    "linear_path": ("model.linear_path", _to_flag),
    "Training_epochs": ("train.epochs", _to_int),
    "Batch_size": ("train.batch_size", _to_int),
    "LearningR": ("train.learning_rate", _to_float),
    "Loss_type": ("train.loss_type", _to_int),
    "alpha": ("train.recon_weight", _to_float),
    "Recon_iter": ("train.recon_iterations", _to_int),
    "physical_weighting": ("train.physical_weighting", _to_flag),
    "pod_projected_training": ("train.pod_projected_training", _to_flag),
    "beta_target": ("train.beta_target", _to_float),
    "beta_warmup_epochs": ("train.beta_warmup_epochs", _to_int),
    "weight_decay": ("train.weight_decay", _to_float),
    "grad_clip": ("train.grad_clip", _to_float),
    "lr_schedule": ("train.lr_schedule", _to_text),
    "min_lr_fraction": ("train.min_lr_fraction", _to_float),
    "seed": ("train.seed", _to_int),
    "device": ("train.device", _to_text),
    "amp": ("train.amp", _to_flag),
    "checkpoint_every": ("train.checkpoint_every", _to_int),
    "early_stopping_patience": ("train.early_stopping_patience", _to_int),
    "num_param": ("conditioner.num_params", _to_int),
    "param_dir": ("conditioner.param_dir", _to_text),
    "input_type": ("conditioner.input_type", _to_input_type),
    "param_data_type": ("conditioner.param_data_type", _to_text),
    "conditioner_type": ("conditioner.architecture", lambda text: text.lower()),
    "n_epoch": ("conditioner.epochs", _to_int),
    "latent_conditioner_lr": ("conditioner.learning_rate", _to_float),
    "latent_conditioner_batch": ("conditioner.batch_size", _to_int),
    "latent_conditioner_weight_decay": ("conditioner.weight_decay", _to_float),
    "latent_conditioner_dropout_rate": ("conditioner.dropout_rate", _to_float),
    "use_spatial_attention": ("conditioner.use_spatial_attention", _to_flag),
    "image_size": ("conditioner.image_size", _to_int),
    "lc_early_stopping_patience": ("conditioner.early_stopping_patience", _to_int),
    "use_e2e_training": ("end_to_end.enabled", _to_flag),
    "e2e_loss_function": ("end_to_end.loss_function", _to_text),
    "e2e_vae_model_path": ("end_to_end.vae_model_path", _to_text),
    "use_latent_regularization": ("end_to_end.use_latent_regularization", _to_flag),
    "LC_alpha": ("end_to_end.recon_weight", _to_float),
    "latent_reg_weight": ("end_to_end.latent_reg_weight", _to_float),
    "e2e_finetune_decoder": ("end_to_end.finetune_decoder", _to_flag),
    "aug_time_warp_probability": ("augmentation.time_warp_probability", _to_float),
    "aug_time_warp_range": ("augmentation.time_warp_range", _to_float),
    "aug_node_mask_probability": ("augmentation.node_mask_probability", _to_float),
    "aug_node_mask_fraction": ("augmentation.node_mask_fraction", _to_float),
    "aug_noise_probability": ("augmentation.noise_probability", _to_float),
    "aug_noise_std_range": ("augmentation.noise_std_range", lambda text: _to_float_pair(text)),
    "aug_param_noise_probability": ("augmentation.param_noise_probability", _to_float),
    "aug_param_noise_std": ("augmentation.param_noise_std", _to_float),
    "image_pca_components": ("conditioner.image_pca_components", _to_int),
    "physics_temporal_weight": ("physics.temporal_weight", _to_float),
    "physics_spatial_weight": ("physics.spatial_weight", _to_float),
    "physics_conservation_weight": ("physics.conservation_weight", _to_float),
    "mesh_connectivity_path": ("physics.connectivity_path", _to_optional_path),
    "physics_neighbours": ("physics.neighbours", _to_int),
    "adaptive_loss_weighting": ("physics.adaptive_weighting", _to_flag),
}

# Legacy keys that are read and accepted but change nothing; a non-zero value gets a notice.
ACCEPTED_WITHOUT_EFFECT = {
    "RESERVED": "placeholder line of the legacy format",
    "Stretch": "legacy switch with no documented meaning; temporal warping is not implemented yet",
}

# Keys whose value may hold spaces (a path) or several numbers.
MULTI_VALUE_KEYS = ("param_dir", "aug_noise_std_range", "mesh_connectivity_path")

# Keys that must appear in condition.txt: the sweep's shape cannot be guessed.
REQUIRED_CONDITION_KEYS = ("Dim1", "Dim2", "Dim3")

PRESET_FIELDS = (
    ("data_No", "data.data_number", _to_int),
    ("init_beta_divisor", "train.init_beta_divisor", _to_float),
    ("num_filter_enc", "model.encoder_filters", _to_filters),
    ("latent_conditioner_filter", "conditioner.filters", _to_filters),
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RawEntry:
    """One `key value` line as written."""

    key: str
    value: str
    line: int


def read_config_lines(path: Path) -> List[str]:
    """Lines of a text config file; BOM and CRLF handled. Missing/empty files are ConfigErrors."""
    if not path.is_file():
        raise ConfigError([ConfigIssue(
            file=str(path), message="file not found" if not path.exists() else "is not a file",
            fix="check the path (see --condition / --preset-file) or copy the example from the README")])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError([ConfigIssue(file=str(path), message=f"is not UTF-8 text ({error.reason} at byte {error.start})",
                                       fix="save the file as UTF-8 (plain text)")]) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise ConfigError([ConfigIssue(file=str(path), message="file is empty",
                                       fix="restore its contents (see the example in the README)")])
    return lines


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def parse_condition_lines(lines: Sequence[str], path: Path) -> Tuple[Dict[str, RawEntry], List[ConfigIssue]]:
    """Key/value entries of condition.txt and the problems found while reading them."""
    entries: Dict[str, RawEntry] = {}
    issues: List[ConfigIssue] = []
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "'%#":
            continue
        content = _strip_comment(stripped)
        if not content:
            continue
        tokens = content.split()
        key, values = tokens[0], tokens[1:]
        if key in ACCEPTED_WITHOUT_EFFECT:
            continue
        if key not in CONDITION_KEYS:
            close = difflib.get_close_matches(key, list(CONDITION_KEYS), n=1, cutoff=0.75)
            looks_like_setting = _IDENTIFIER.match(key) and len(values) == 1 and _is_number(values[0])
            if close or looks_like_setting or "\t" in raw.strip():
                fix = f"did you mean '{close[0]}'?" if close else "remove the line or check the README's key list"
                issues.append(ConfigIssue(file=str(path), line=number, key=key, message="unknown key", fix=fix))
            continue  # otherwise a free-text line such as 'Common params'
        if key in entries:
            issues.append(ConfigIssue(file=str(path), line=number, key=key,
                                      message=f"duplicate key (first set on line {entries[key].line})",
                                      fix="keep only one of the two lines"))
            continue
        if len(values) != 1 and not (key in MULTI_VALUE_KEYS and values):
            issues.append(ConfigIssue(file=str(path), line=number, key=key,
                                      message=f"expected one value after the key, found {len(values)}",
                                      fix=f"write '{key}<TAB>value' (comments after '#')"))
            continue
        entries[key] = RawEntry(key=key, value=" ".join(values), line=number)
    return entries, issues


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_preset_lines(lines: Sequence[str], path: Path, preset_index: int) -> Tuple[Dict[str, RawEntry], List[ConfigIssue]]:
    """The four values of preset number `preset_index` (1-based) after the header line."""
    value_lines = [(number, _strip_comment(line)) for number, line in enumerate(lines, start=1)]
    value_lines = [(number, text) for number, text in value_lines[1:] if text]
    size = len(PRESET_FIELDS)
    available = len(value_lines) // size
    names = ", ".join(name for name, _, _ in PRESET_FIELDS)
    if preset_index < 1 or preset_index > max(available, 1):
        return {}, [ConfigIssue(file=str(path), key="--preset",
                                message=f"preset {preset_index} requested but the file holds {available} "
                                        f"(a header line, then {size} lines per preset: {names})",
                                fix="use --preset=1 or add the missing lines")]
    if available == 0:
        return {}, [ConfigIssue(file=str(path), line=len(lines),
                                message=f"too few lines: expected a header line then {size} value lines "
                                        f"({names}), found {len(value_lines)} value lines",
                                fix="restore the missing lines (see the README)")]
    chosen = value_lines[(preset_index - 1) * size: preset_index * size]
    return {name: RawEntry(key=name, value=text, line=number)
            for (name, _, _), (number, text) in zip(PRESET_FIELDS, chosen)}, []


def load_run_config(preset_path: Path, condition_path: Path, preset_index: int = 1,
                    cli_values: Optional[Dict[str, Tuple[str, Any]]] = None,
                    run_fields: Optional[Dict[str, Any]] = None) -> Tuple[RunConfig, List[str]]:
    """Build and validate the RunConfig.

    cli_values maps a field path ('train.epochs') to (flag name, value); it wins
    over the files. run_fields sets top-level RunConfig fields (output_dir, ...).
    Returns the config and notices (accepted-but-inert keys); raises ConfigError
    listing every problem.
    """
    issues: List[ConfigIssue] = []
    values: Dict[str, Any] = {}
    origins: Dict[str, Origin] = {}

    def absorb(entries: Dict[str, RawEntry], table: Dict[str, Tuple[str, Callable[[str], Any]]], path: Path) -> None:
        for key, entry in entries.items():
            field_path, convert = table[key]
            origins[field_path] = Origin(str(path), entry.line, key)
            try:
                values[field_path] = convert(entry.value)
            except _BadValue as error:
                issues.append(ConfigIssue(file=str(path), line=entry.line, key=key, message=str(error),
                                          fix="correct the value"))

    notices: List[str] = []
    for path, reader in ((preset_path, "preset"), (condition_path, "condition")):
        try:
            lines = read_config_lines(path)
        except ConfigError as error:
            issues += error.issues
            continue
        if reader == "preset":
            entries, found = parse_preset_lines(lines, path, preset_index)
            absorb(entries, {name: (field, conv) for name, field, conv in PRESET_FIELDS}, path)
        else:
            entries, found = parse_condition_lines(lines, path)
            absorb(entries, CONDITION_KEYS, path)
            for key in REQUIRED_CONDITION_KEYS:
                if key not in entries:
                    issues.append(ConfigIssue(file=str(path), key=key, message="required key is missing",
                                              fix=f"add a line '{key}<TAB><value>' (see the README)"))
            notices += _inert_key_notices(lines, path)
        issues += found

    for field_path, (flag, value) in (cli_values or {}).items():
        values[field_path] = value
        origins[field_path] = Origin("command line", None, flag)

    if issues:
        raise ConfigError(issues)
    config = _assemble(values, run_fields or {})
    problems = config.problems()
    if problems:
        raise ConfigError([_issue_for(field_path, message, fix, origins) for field_path, message, fix in problems])
    return config, notices


def _inert_key_notices(lines: Sequence[str], path: Path) -> List[str]:
    notices = []
    for number, raw in enumerate(lines, start=1):
        tokens = _strip_comment(raw.strip()).split()
        if len(tokens) == 2 and tokens[0] in ACCEPTED_WITHOUT_EFFECT and tokens[0] != "RESERVED" \
                and _is_number(tokens[1]) and float(tokens[1]) != 0:
            notices.append(f"{path}:{number}: '{tokens[0]} {tokens[1]}' has no effect "
                           f"({ACCEPTED_WITHOUT_EFFECT[tokens[0]]})")
    return notices


def _issue_for(field_path: str, message: str, fix: str, origins: Dict[str, Origin]) -> ConfigIssue:
    origin = origins.get(field_path)
    if origin is None:
        # A default broke a rule together with another value: point at the field.
        return ConfigIssue(key=field_path, message=message, fix=fix)
    return ConfigIssue(file=origin.file, line=origin.line, key=origin.key, message=message, fix=fix)


def _assemble(values: Dict[str, Any], run_fields: Dict[str, Any]) -> RunConfig:
    base = RunConfig()
    sections: Dict[str, Dict[str, Any]] = {}
    for field_path, value in values.items():
        section, name = field_path.split(".", 1)
        sections.setdefault(section, {})[name] = value
    replaced = {section: dataclasses.replace(getattr(base, section), **fields) for section, fields in sections.items()}
    return dataclasses.replace(base, **replaced, **run_fields)


def config_key_reference() -> List[Tuple[str, str]]:
    """(condition.txt key, field path) pairs, for the README and --help."""
    return [(key, field_path) for key, (field_path, _) in CONDITION_KEYS.items()]
