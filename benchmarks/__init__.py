"""Reproducible measurements of the provider, side by side with baselines (``make bench``)."""
