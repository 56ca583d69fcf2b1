# remediator daemon image. Build: docker build -t remediator .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY remediator ./remediator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/remediator --create-home remediator
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY rules /etc/remediator/rules
USER 10001
WORKDIR /var/lib/remediator
ENV REMEDIATOR_RULES_PATH=/etc/remediator/rules \
    REMEDIATOR_JOURNAL__URL=sqlite:////var/lib/remediator/journal.db \
    REMEDIATOR_LOG__FORMAT=json
EXPOSE 9095
# Listening beyond loopback needs a credential: mount one as REMEDIATOR_WEBHOOK_TOKEN_FILE.
ENTRYPOINT ["remediator"]
CMD ["run", "--listen", "0.0.0.0:9095"]
