# kvscale operator image, for those who build with Docker or BuildKit. The project's own build
# needs no Docker: `make image` (docs/image.md) makes the same image from Debian's packages.
# Both use the same pinned inputs: Debian 12's python3.11 at the version in image/debian.lock,
# the hashed wheels of image/requirements.lock (no simulator extras), the kvscale wheel built
# from this checkout, and uid/gid 10001.
#
# The base is Debian 12 by tag, not by digest: the project builds without registry access, so no
# digest could be checked and none is committed. Pin it when you build:
#   docker build --build-arg BASE=debian:bookworm-slim@sha256:<digest> -t kvscale/operator:0.1.0 .
ARG BASE=debian:bookworm-slim
# tests/unit/test_image_inputs.py keeps this equal to image/debian.lock
ARG PYTHON_DEBIAN_VERSION=3.11.2-6+deb12u9

FROM ${BASE} AS build
ARG PYTHON_DEBIAN_VERSION
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       "python3.11=${PYTHON_DEBIAN_VERSION}" "python3.11-venv=${PYTHON_DEBIAN_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY image/requirements.lock image/build-requirements.lock ./image/
RUN python3.11 -m venv /tools \
    && /tools/bin/pip install --no-cache-dir --require-hashes --no-deps -r image/build-requirements.lock \
    && python3.11 -m venv --without-pip /opt/kvscale \
    && /tools/bin/pip --python /opt/kvscale/bin/python install --no-cache-dir --require-hashes \
       --no-deps --only-binary=:all: -r image/requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /tools/bin/pip wheel --no-deps --no-build-isolation -w /wheels . \
    && /tools/bin/pip --python /opt/kvscale/bin/python install --no-cache-dir --no-deps /wheels/kvscale-*.whl

FROM ${BASE}
ARG PYTHON_DEBIAN_VERSION
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python3.11=${PYTHON_DEBIAN_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kvscale \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kvscale
COPY --from=build /opt/kvscale /opt/kvscale
ENV PATH=/opt/kvscale/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric uid/gid so runAsNonRoot can verify it without an /etc/passwd lookup.
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kvscale"]
CMD ["run", "--all-namespaces"]
