#!/usr/bin/env bash
# Installs the Debian packages that the tests drive for real. Under CI a package that
# cannot be installed fails the run; elsewhere the tests that need it say so.
set -euo pipefail
packages=$(grep -v '^\s*#' "$(dirname "$0")/system-packages.txt" | tr -s ' \n' ' ')
missing=()
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts nginx on install; the tests run their own instances.
    if command -v nginx >/dev/null; then nginx -s quit 2>/dev/null || true; fi
elif [ "${CI:-}" = "true" ]; then
    echo "missing Debian packages and no way to install them: ${missing[*]}" >&2
    exit 1
else
    echo "note: missing Debian packages (tests that need them will fail): ${missing[*]}" >&2
fi
