"""Checks: connection, envelope and content checks behind one interface (see base.py)."""
