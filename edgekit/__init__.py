"""edgekit: one command from a fresh Jetson to a managed, measured llama.cpp server."""

__version__ = "0.1.0"
