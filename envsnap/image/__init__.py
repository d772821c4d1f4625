"""Stage 3, image: the base image, the Dockerfile, the build, and the docker engine.

Kept empty: importing a stage imports nothing else (capture must start fast).
"""
