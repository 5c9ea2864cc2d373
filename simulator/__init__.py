"""Outlet simulator (issue 7): scenarios, faults and a delivery ledger."""
