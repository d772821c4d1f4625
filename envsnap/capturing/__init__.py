"""Stage 1, capture: the verb, the probes that read the host, parameters, redaction, seeding
and the user's command.

Kept empty: importing a stage imports nothing else (capture must start fast).
"""
