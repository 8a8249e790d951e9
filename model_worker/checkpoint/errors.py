"""Typed errors of the checkpoint package: every problem with files on disk is a `CheckpointError` naming the file
or tensor at fault, so a bad checkpoint fails at load time with a message that says what to fix."""

from __future__ import annotations

from model_worker.config import ConfigError


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded or written as asked."""


class CheckpointConfigError(CheckpointError, ConfigError):
    """A checkpoint's config file is invalid (unknown field, bad value); the message names the file."""
