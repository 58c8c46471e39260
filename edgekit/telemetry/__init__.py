"""Telemetry: one typed Sample per interval, from jtop, tegrastats or /proc (stdlib only: also runs on the device).

Everything in this package except prometheus.py and remote.py is shipped to the device in the device helper
(edgekit.remote.helper.AGENT_MODULES), with edgekit/facts/base.py and jetson.py (the nvpmodel parser),
and must stay importable with Python 3.8's standard library alone.
"""
