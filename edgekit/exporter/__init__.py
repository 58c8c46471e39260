"""The on-device metrics exporter: the board, llama-server's own /metrics and edgekit's facts, for Prometheus.

Device side: standard library only, Python 3.8+ (JetPack 5). It ships to the device as its own small zipapp
(edgekit.metrics.bundle) and runs as the hardened unit edgekit-exporter:
    python3 edgekit-exporter.pyz --host 0.0.0.0 --port 9838 --token-file /etc/edgekit/exporter-token
or, from a checkout, `python3 -m edgekit.exporter ...` (edgekit.exporter.app.main).

Why a stdlib text-format writer and not prometheus-client (vendored): the exposition format 0.0.4 is a few lines
of text with three escaping rules (textformat.py, ~150 lines with its parser); prometheus-client would add ~5000
lines to every device, its registry/collector model fits a re-exporter poorly (llama-server's families are parsed
text, not live objects), and the device code must import nothing outside Python 3.8's standard library. The
tests parse our output with an independent strict parser, and with prometheus_client's own when it is installed.
"""
