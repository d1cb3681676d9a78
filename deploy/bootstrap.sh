#!/usr/bin/env bash
# Installs everything optimodel needs on a fresh machine of ours, idempotently and cached:
#   - Debian packages: prometheus (the real server), iproute2 (pod network namespaces), wrk (benchmarks),
#     nftables (the `nft` tool kube-proxy programs Service routing with)
#   - a virtualenv at $OPTIMODEL_CACHE/venv with an editable install of this checkout and its dev extras
# The control plane binaries are built on first use by `optimodel dev up` (Go module proxy, cached).
# Prints the venv's bin directory as its last line.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${OPTIMODEL_CACHE:-$HOME/.cache/optimodel}
venv=$cache/venv
mkdir -p "$cache"

apt_packages=(prometheus iproute2 wrk nftables)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  # The package's own service is not used (we start Prometheus ourselves); policy-rc.d keeps it from starting.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Re-install only when the dependency declaration or this checkout's location changed.
stamp=$venv/.optimodel-stamp
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1) $repo"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python dependencies into $venv (first time: several minutes, torch is large)" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  # One line per package (not -q): installing torch takes minutes and must not look stuck.
  # pipefail: a failed pip fails the bootstrap, whatever grep kept of its output.
  "$venv/bin/pip" install --progress-bar off -e "$repo[dev]" 2>&1 \
    | grep --line-buffered -E "^(Collecting|Installing|Successfully|ERROR|error)" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin"
