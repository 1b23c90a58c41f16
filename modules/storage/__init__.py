"""Files on disk: atomic writes, safe state dicts, the run folder's layout, output arrays and VTU series."""
