"""`edgekit fleet` commands."""

from edgekit.cli.app import app  # noqa: F401
