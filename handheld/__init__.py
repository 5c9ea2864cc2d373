"""Courier handheld app: scanning, parcel workflows, board jobs with photo evidence, its web UI."""
