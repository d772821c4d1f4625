"""Drift in CI: `envsnap check` against a committed manifest, GitHub Actions, the workflow file.

Kept empty: importing a stage imports nothing else (capture must start fast).
"""
