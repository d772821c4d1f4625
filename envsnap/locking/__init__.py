"""Stage 2, lock: a manifest's packages as hash-pinned lock files, from the package index.

Kept empty: importing a stage imports nothing else (capture must start fast).
"""
