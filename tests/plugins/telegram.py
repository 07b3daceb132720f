"""Pytest fixtures for the sandbox fake (telegram); filled in by the sandbox work."""
