"""Pytest fixtures for the sandbox fake (exchanges); filled in by the sandbox work."""
