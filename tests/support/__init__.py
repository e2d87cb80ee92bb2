"""Helpers shared by the test suites (plain modules: import them; the fixtures are in tests/conftest.py)."""
