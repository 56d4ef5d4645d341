# supportbot: one process serving /slack/events, /healthz and /metrics, plus the Discord gateway.
#   docker build -t supportbot .
#   docker run --env-file .env -p 8080:8080 -v supportbot-data:/home/supportbot/data supportbot
# Logs are JSON lines; the playground is off (set PLAYGROUND_ENABLED=true or PLAYGROUND_TOKEN).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 supportbot

# 1. The dependencies, from pyproject.toml alone: this layer is rebuilt only when they change,
#    not on every code edit.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 2. The code, without touching the dependencies again.
COPY README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY tools ./tools
RUN pip install --no-deps . && rm -rf /src

USER supportbot
WORKDIR /home/supportbot
ENV DATABASE_URL=sqlite+aiosqlite:////home/supportbot/data/supportbot.db \
    POLICY_FILE=/home/supportbot/policy.toml \
    HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    PLAYGROUND_ENABLED=false
RUN mkdir -p /home/supportbot/data
VOLUME ["/home/supportbot/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["supportbot"]
CMD ["run"]
