"""Stand-in devices for trying edgekit and for its tests: real systemd and sshd, no Jetson."""
