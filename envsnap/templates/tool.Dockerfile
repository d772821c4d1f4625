# envsnap itself, in an environment of its own, so a rerun can capture inside the image. Built
# once per base image and envsnap (its own hash-locked dependencies included) as the image
# envsnap/tool:<key>, which every environment on that base starts from: a new environment
# installs only its own packages.
COPY --chmod=0644 tool/ /envsnap/tool/
RUN --mount=type=secret,id=pip-ca --mount=type=secret,id=pip-conf \
    ${python} -m venv /opt/envsnap \
 && if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi \
 && /opt/envsnap/bin/python -m pip install --no-deps --require-hashes \
        -r /envsnap/tool/requirements.lock.txt \
 && /opt/envsnap/bin/python -m pip install --no-deps /envsnap/tool/${tool_wheel} \
 && ln -s /opt/envsnap/bin/envsnap /usr/local/bin/envsnap
