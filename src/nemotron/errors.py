"""Errors a user can act on. The CLI prints them as one line; anything else is a bug."""
from __future__ import annotations


class NemotronError(Exception):
    """Base class for errors caused by input (files, configs, requests), not by our code."""


class ConfigError(NemotronError, ValueError):
    """A model configuration is missing a field or holds an impossible value."""


class CheckpointError(NemotronError):
    """A checkpoint is missing, malformed, or does not match the configuration."""


class TokenizerError(NemotronError):
    """A tokenizer file is missing or unreadable."""


class EngineDeadError(NemotronError, RuntimeError):
    """The engine failed (a step raised, or a rank of a parallel run is gone); the request could not be completed."""
