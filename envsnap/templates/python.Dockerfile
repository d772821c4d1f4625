# The experiment's Python packages, on the image of envsnap's own environment for this base
# (tool.Dockerfile, built once per base and envsnap). What the base image already provides at
# the recorded version (an NGC torch build, say) is linked into the venv from the base, not
# installed again; the rest comes from the hash-locked requirements, and pip refuses any file
# whose hash is not in the lock. The venv sees none of the base's other packages, so it holds
# exactly the recorded set.
# The host's CA bundle and pip configuration reach pip as BuildKit secrets, never as a layer.
ARG ENVSNAP_TOOL
FROM $${ENVSNAP_TOOL} AS envsnap-env
COPY --chmod=0644 requirements.lock.txt base-provided.txt envsnap_venv.py ${vcs_copy}/envsnap/
RUN --mount=type=secret,id=pip-ca --mount=type=secret,id=pip-conf \
    ${python} -I /envsnap/envsnap_venv.py /opt/venv /envsnap/base-provided.txt \
 && if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi \
 && if grep -q '^[A-Za-z0-9]' /envsnap/requirements.lock.txt; then \
        /opt/venv/bin/python -m pip install --no-deps --require-hashes \
            -r /envsnap/requirements.lock.txt; \
    fi${vcs_install}

${editable_step}
# VIRTUAL_ENV tells envsnap (and tools like it) which environment the experiment runs in.
ENV PATH=/opt/venv/bin:$$PATH \
    VIRTUAL_ENV=/opt/venv \
    ENVSNAP_IMAGE=${image_ref}
LABEL ${labels}
USER envsnap
WORKDIR /home/envsnap
