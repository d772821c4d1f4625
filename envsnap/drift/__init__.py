"""Stage 5, drift: two runs compared field by field, and the reports made of it.

Kept empty: importing a stage imports nothing else (capture must start fast).
"""
