"""Line-aware readers for preset.txt and condition.txt (their keys are mapped in legacy_keys.py).

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

from modules.config.legacy_keys import (ACCEPTED_WITHOUT_EFFECT, CONDITION_KEYS, MULTI_VALUE_KEYS, PRESET_FIELDS,
                                        REQUIRED_CONDITION_KEYS, BadValue, legacy_key)
from modules.config import time_window
from modules.config.schema import RunConfig
from modules.config.conditioner_rules import resolve_decoder_start
from modules.config.validation import configuration_issues
from modules.errors import ConfigError, ConfigIssue


@dataclass(frozen=True)
class Origin:
    """Where a value came from, for error messages."""

    file: str
    line: Optional[int]
    key: str


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
            except BadValue as error:
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
    found = configuration_issues(config)
    if found:
        raise ConfigError([_located(problem, origins) for problem in found])
    return config, notices + _window_notices(config, origins) + _unused_setting_notices(config, origins)


def with_keys(text: str, values: Dict[str, str]) -> str:
    """condition.txt text with each key of `values` set: its line replaced (comment dropped), or appended."""
    lines, seen = [], set()
    for line in text.splitlines():
        key = line.split()[0] if line.split() else ""
        if key in values:
            lines.append(f"{key}\t{values[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{key}\t{value}" for key, value in values.items() if key not in seen]
    return "\n".join(lines) + "\n"


def _where(origins: Dict[str, Origin], *field_paths: str) -> str:
    found = [origins[path] for path in field_paths if path in origins]
    return ", ".join(f"{o.file}:{o.line}" if o.line else f"{o.file} {o.key}" for o in found)


def _unused_setting_notices(config: RunConfig, origins: Dict[str, Origin]) -> List[str]:
    """A setting asked for that the rest of the configuration leaves without effect."""
    notices = []
    if config.end_to_end.finetune_decoder and not config.end_to_end.enabled:
        notices.append(f"{_where(origins, 'end_to_end.finetune_decoder')}: e2e_finetune_decoder 1 has no effect "
                       f"without use_e2e_training 1 (the decoder is fine-tuned only by end-to-end training)")
    if config.data.cache_cases > 0 and (config.data.load_all or config.trains_on_coefficients):
        why = ("--load_all=1 keeps every case in memory already" if config.data.load_all else
               "the VAE trains on spatial-mode coefficients, and the sweep is read once to compute them; the cache "
               "serves VAE training on the full fields (pod_projected_training 0)")
        notices.append(f"{_where(origins, 'data.cache_cases')}: cache_cases {config.data.cache_cases} has no effect: "
                       f"{why}")
    return notices


def _window_notices(config: RunConfig, origins: Dict[str, Origin]) -> List[str]:
    """A window (Dim2_red, Dim3_start/Dim3_end) that leaves part of the sweep untrained is said, not kept quiet:
    a file copied from another sweep may carry one that was never meant for this sweep."""
    data = config.data
    notices = []
    if data.timesteps < data.num_timesteps and data.timestep_mode == "spread":
        notices.append(f"{_where(origins, 'data.num_timesteps_used', 'data.timestep_mode')}: Dim2_red {data.timesteps} "
                       f"with Dim2_red_mode spread trains on {data.timesteps} of the {data.num_timesteps} timesteps "
                       f"(Dim2), spread over the whole transient: stored steps {time_window.listed(data.timestep_indices)} "
                       f"(0-based)")
    elif data.timesteps < data.num_timesteps:
        notices.append(f"{_where(origins, 'data.num_timesteps_used')}: Dim2_red {data.timesteps} trains on the first "
                       f"{data.timesteps} of the {data.num_timesteps} timesteps (Dim2); the last "
                       f"{data.num_timesteps - data.timesteps} are not used (delete the line to use them all, or add "
                       f"Dim2_red_mode spread to keep {data.timesteps} spread over the whole transient)")
    if data.nodes < data.num_nodes:
        notices.append(f"{_where(origins, 'data.node_start', 'data.node_end')}: Dim3_start/Dim3_end keep nodes "
                       f"{data.node_start}..{data.node_stop - 1} of the {data.num_nodes} (Dim3); "
                       f"{data.num_nodes - data.nodes} nodes are not used (delete the lines to use them all)")
    return notices


def _inert_key_notices(lines: Sequence[str], path: Path) -> List[str]:
    notices = []
    for number, raw in enumerate(lines, start=1):
        tokens = _strip_comment(raw.strip()).split()
        if len(tokens) == 2 and tokens[0] in ACCEPTED_WITHOUT_EFFECT and tokens[0] != "RESERVED" \
                and _is_number(tokens[1]) and float(tokens[1]) != 0:
            notices.append(f"{path}:{number}: '{tokens[0]} {tokens[1]}' has no effect "
                           f"({ACCEPTED_WITHOUT_EFFECT[tokens[0]]})")
    return notices


def _located(problem: ConfigIssue, origins: Dict[str, Origin]) -> ConfigIssue:
    """The problem at the file, line and key where its setting was written (keyed by field path or legacy key)."""
    origin = origins.get(problem.key) or next((o for o in origins.values() if o.key == problem.key), None)
    if origin is None:
        # A default broke a rule together with another value: name the key the user would add.
        return dataclasses.replace(problem, key=legacy_key(problem.key))
    return dataclasses.replace(problem, file=origin.file, line=origin.line, key=origin.key)


def _assemble(values: Dict[str, Any], run_fields: Dict[str, Any]) -> RunConfig:
    base = RunConfig()
    sections: Dict[str, Dict[str, Any]] = {}
    for field_path, value in values.items():
        section, name = field_path.split(".", 1)
        sections.setdefault(section, {})[name] = value
    replaced = {section: dataclasses.replace(getattr(base, section), **fields) for section, fields in sections.items()}
    return resolve_decoder_start(dataclasses.replace(base, **replaced, **run_fields))
