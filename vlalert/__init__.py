"""VLAlert: a file-tracked pipeline from public dashcam datasets to tick-level driver alerts."""

__version__ = "0.1.0"
