"""Fleets: inventories, running a job on many hosts, build once and deploy many."""
