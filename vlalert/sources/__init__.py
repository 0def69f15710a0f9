"""Adapters that read each public source in its own published format (see base.py for the records)."""
