"""Import every command module so its commands register on the app."""

from edgekit.cli import facts, sandbox  # noqa: F401
