"""The driver contract suite: one suite, run unchanged on every driver (see conftest.py)."""
