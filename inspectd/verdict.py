"""What an inspection decided: one definition for the model, the store, alerts, the CLI and the console.

Kept free of imports so that every package, from the settings to the store, can name a verdict without
pulling in numpy or the model code.
"""

from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    ANOMALOUS = "anomalous"
    NORMAL = "normal"
    UNKNOWN = "unknown"  # the reply did not parse: recorded, never guessed
    FAILED = "failed"  # the image could not be inspected at all
