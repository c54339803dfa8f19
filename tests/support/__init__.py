"""Plain helpers shared by the test modules: no fixtures (those are in tests/conftest.py), no tests.

Each module is named by what it helps with:

- ``servers``: real `grantd serve` processes, alone or two as one deployment, and what is asked of them.
"""
