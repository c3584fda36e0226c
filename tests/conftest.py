"""Fixtures and pytest hooks shared by the test modules (none yet).

Plain helper functions (scenario builders, batch-means statistics, queueing
formulas) are in ``helpers.py``, imported as ``from helpers import ...``.
"""
