"""Measuring the surrogate: metrics, classical baselines, the report and the figures."""
