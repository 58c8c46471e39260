"""Build llama.cpp on the device for its GPU, once per version and flags (see steps.py for the public API)."""
