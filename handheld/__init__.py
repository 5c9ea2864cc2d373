"""Courier handheld app (issue 6): scanning, parcel workflows, photo evidence."""
