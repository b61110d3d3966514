"""curate: turn messy image collections into clean, balanced, correctly labelled datasets."""

__version__ = "0.1.0"
