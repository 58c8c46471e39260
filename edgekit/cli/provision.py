"""`edgekit provision` commands."""

from edgekit.cli.app import app  # noqa: F401
