"""inspectd: batch visual inspection with reasoning and ReAL anomaly maps."""

__version__ = "0.1.0"
