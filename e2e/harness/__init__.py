"""The e2e harness: kvscale installed from its chart, the operator as a local process, simulated
engines for the pods the cluster runs, a real Prometheus scraping them, and a trace load driver.

Fixtures live in `harness.fixtures` (registered by e2e/conftest.py); scenarios are e2e/test_*.py.
"""
