"""Import every command module so its commands register on the app."""

from edgekit.cli import bench, build, chat, doctor, facts, key, models, prometheus, provision, sandbox, telemetry  # noqa: F401,E501
