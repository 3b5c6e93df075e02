# One image for every Ledgerdesk process: the command picks which one runs.
#   docker run IMAGE kernel.runner services.tickets.service:TicketsService
#   docker run IMAGE kernel.runner gateway.service:GatewayService
#   docker run IMAGE services.platform prepare        (create/migrate databases, declare queues)
#   docker run --entrypoint ledgerdesk-audit IMAGE verify      (the installed commands)
# The class of each service is in services/platform.py (SERVICES, GATEWAY).

# Pinned to an exact patch release so a rebuild gets the interpreter the image was tested with;
# move it on purpose (and rebuild) for security updates.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships manylinux wheels, so the build needs no compiler.
RUN python -m venv /opt/ledgerdesk
WORKDIR /src
# Dependencies first: this layer is reused while only the code changes. Exactly the lock's
# versions, each checked against its hashes (requirements.lock: pip-compile --generate-hashes
# from pyproject.toml), so a rebuild installs the very files that were tested.
COPY requirements.lock ./
RUN /opt/ledgerdesk/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml ./
COPY kernel ./kernel
COPY services ./services
COPY gateway ./gateway
# Not editable: the image holds an installed package (migrations included as package data),
# not a source tree. Its commands (ledgerdesk, ledgerdesk-audit) land on the PATH below.
RUN /opt/ledgerdesk/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 ledgerdesk \
    && useradd --system --uid 10001 --gid ledgerdesk --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin ledgerdesk
COPY --from=build /opt/ledgerdesk /opt/ledgerdesk
ENV PATH=/opt/ledgerdesk/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LEDGERDESK_GATEWAY_HOST=0.0.0.0 \
    LEDGERDESK_OPS_PORT=9100
# A numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 8000: the gateway's API; 9100: every process's /healthz, /readyz and /metrics.
EXPOSE 8000 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LEDGERDESK_OPS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["python", "-m"]
CMD ["kernel.runner", "gateway.service:GatewayService"]
