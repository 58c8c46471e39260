"""Reaching the device: targets, the transport, and applying plans."""
