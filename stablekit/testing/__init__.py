"""Test and smoke-run tooling: tiny random-weight models in the real repository layouts."""
