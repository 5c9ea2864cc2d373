"""Outlet simulator: scenarios, faults and a delivery ledger."""
