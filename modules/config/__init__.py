"""The run's settings: the typed RunConfig, the legacy preset.txt/condition.txt readers and the command line."""
