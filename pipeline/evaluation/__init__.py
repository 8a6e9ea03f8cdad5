"""Metrics and plots over predictions."""
