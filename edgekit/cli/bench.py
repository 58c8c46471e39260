"""`edgekit bench` commands."""

from edgekit.cli.app import app  # noqa: F401
