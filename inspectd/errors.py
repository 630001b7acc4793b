"""Exceptions that carry what an operator needs to fix the problem."""

from __future__ import annotations


class InspectdError(Exception):
    """Base class: the message is written for the person running inspectd."""


class ConfigError(InspectdError):
    """The YAML configuration is invalid; the message names file, key and value."""


class BundleError(InspectdError):
    """A model bundle is missing, incomplete, tampered with or unloadable."""


class ImageError(InspectdError):
    """An input image cannot be used; the message names the file and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
