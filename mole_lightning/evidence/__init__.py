"""The evidence protocol (issue 16): a named, resumable grid of training runs that shows
whether every method learns, and its report. ``scripts/evidence.py`` is the command line."""
