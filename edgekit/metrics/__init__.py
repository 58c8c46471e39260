"""Metrics, controller side: the exporter's zipapp and install step, and the fleet's Prometheus scrape config.

The exporter itself (device side, stdlib-only) is edgekit.exporter; the Grafana dashboard is
edgekit/dashboards/edgekit-grafana.json.
"""
