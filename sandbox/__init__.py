"""The sandbox cluster of make demo and the end-to-end tests (see sandbox/sandbox.py)."""
