"""The on-device llama-server systemd service: settings and templates, steps, status."""
