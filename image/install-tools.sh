#!/usr/bin/env bash
# The Debian tools `make image` needs: mmdebstrap (root filesystem from Debian's packages) and
# umoci (OCI layout). Installs them with apt when missing; needs root.
set -euo pipefail
missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v umoci >/dev/null || missing+=(umoci)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
