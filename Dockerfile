# supportbot: one process serving /slack/events, /healthz and /metrics, plus the Discord gateway.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY tools ./tools
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 supportbot
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER supportbot
WORKDIR /home/supportbot
ENV DATABASE_URL=sqlite+aiosqlite:////home/supportbot/data/supportbot.db \
    POLICY_FILE=/home/supportbot/policy.toml \
    HOST=0.0.0.0 \
    PORT=8080
RUN mkdir -p /home/supportbot/data
VOLUME ["/home/supportbot/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["supportbot"]
CMD ["run"]
