# The node image of the containerised Slurm cluster (ci/slurm/run.sh): the cluster image of ./Dockerfile plus
# luigi for the node's python3, so that jobs with runtime host run the containerbatch runner there (standard
# library + luigi).  Debian has no python3-luigi: run.sh downloads luigi and its dependencies as wheels on the
# host (`pip download`, for the image's Python) into the build context; pip itself runs from its own wheel
# and is not left in the image.
ARG BASE=cb-slurm:trixie
FROM ${BASE}
COPY wheels /tmp/cb-wheels
RUN python3 "$(ls /tmp/cb-wheels/pip-*.whl)/pip" install --quiet --no-index --find-links /tmp/cb-wheels \
        --break-system-packages --root-user-action=ignore --no-cache-dir --no-compile luigi \
 && rm -rf /tmp/cb-wheels \
 && python3 -c 'import luigi, luigi.cmdline'
