"""Stage 4, rerun: the recorded code materialised, the run replayed in its image.

Kept empty: importing a stage imports nothing else (capture must start fast).
"""
