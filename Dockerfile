# kvscale operator image: `kvscale run` (kopf) as a non-root user on a read-only root filesystem.
# Build from the repository root:  docker build -t kvscale/operator:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
# A fixed numeric uid/gid so runAsNonRoot can verify it without an /etc/passwd lookup.
RUN groupadd --system --gid 10001 kvscale \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kvscale
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kvscale"]
CMD ["run", "--all-namespaces"]
