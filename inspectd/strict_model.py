"""The base of every settings file section and manifest: a typo'd key is an error, values never change after
validation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys rejected (with the key's path in the message), instances frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
