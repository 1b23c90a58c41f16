"""Every rule a configuration must satisfy, found at once: each section's own rules and the conditioner's."""
from __future__ import annotations

from typing import List

from modules.config import conditioner_rules
from modules.config.schema import RunConfig
from modules.errors import ConfigError, ConfigIssue


def configuration_issues(config: RunConfig) -> List[ConfigIssue]:
    """Each problem keyed by its field path (or, for the conditioner's rules, the legacy key)."""
    return config.problems() + conditioner_rules.issues(config)


def validate(config: RunConfig) -> None:
    """Raise ConfigError listing every problem (load_run_config does this with file and line numbers)."""
    found = configuration_issues(config)
    if found:
        raise ConfigError(found)
