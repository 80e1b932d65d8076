#!/usr/bin/env bash
# Print the path of a working `promtool` (or, with the argument `prometheus`, of a working
# Prometheus server binary), obtaining one if needed.
#
# Usage: scripts/ensure-promtool.sh [promtool|prometheus]
#
# MetaSentry's alert rules are unit-tested with promtool, but the Prometheus server itself is not
# wanted on a CI or developer machine (installing Debian's `prometheus` package would also start
# the server). So promtool is taken from, in order:
#   1. $PROMTOOL, if set (must work: an explicit choice that is broken is an error, not a fallback);
#   2. `promtool` on PATH;
#   3. .tools/bin/promtool in this repository (a cache left by step 4);
#   4. Debian's `prometheus` package, downloaded (not installed) with `apt-get download` and
#      unpacked with `dpkg -x`; only usr/bin/promtool is kept, in .tools/bin/.
#
# stdout carries the path and nothing else, so callers can do PROMTOOL="$(scripts/ensure-promtool.sh)".
# On failure the script exits non-zero with a one-line reason on stderr.
set -euo pipefail

tool="${1:-promtool}"
case "${tool}" in
    promtool) env_name=PROMTOOL ;;
    prometheus) env_name=PROMETHEUS ;;
    *) echo "ensure-promtool: unknown tool ${tool}; use promtool or prometheus" >&2; exit 2 ;;
esac
explicit="${!env_name:-}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${repo_root}/.tools/bin"
cached="${cache_dir}/${tool}"

fail() {
    echo "ensure-promtool: $*" >&2
    exit 1
}

works() {
    [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1
}

if [[ -n "${explicit}" ]]; then
    works "${explicit}" || fail "${env_name}=${explicit} is not a working ${tool} (unset it to search)"
    echo "${explicit}"
    exit 0
fi

if on_path="$(command -v "${tool}" 2>/dev/null)" && works "${on_path}"; then
    echo "${on_path}"
    exit 0
fi

if works "${cached}"; then
    echo "${cached}"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "no ${tool} found and apt-get is missing; install ${tool} or set ${env_name}"
command -v dpkg >/dev/null 2>&1 \
    || fail "no ${tool} found and dpkg is missing; install ${tool} or set ${env_name}"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/ensure-promtool.XXXXXX")"
trap 'rm -rf "${workdir}"' EXIT
# apt drops privileges to the _apt user for downloads; let it write here to avoid a warning.
chmod 0755 "${workdir}"

download() {
    (cd "${workdir}" && apt-get download --quiet prometheus) >"${workdir}/apt.log" 2>&1
}

if ! download; then
    # Package lists may be missing (fresh container) or stale (a superseded version).
    [[ "$(id -u)" -eq 0 ]] || fail "apt-get download prometheus failed and refreshing the package \
lists needs root; run as root, install ${tool}, or set ${env_name}"
    apt-get update --quiet >"${workdir}/apt-update.log" 2>&1 \
        || fail "apt-get update failed: $(tail -n 1 "${workdir}/apt-update.log")"
    download || fail "apt-get download prometheus failed: $(tail -n 1 "${workdir}/apt.log")"
fi

shopt -s nullglob
debs=("${workdir}"/prometheus_*.deb)
shopt -u nullglob
[[ ${#debs[@]} -eq 1 ]] || fail "apt-get download prometheus produced no single .deb in ${workdir}"

dpkg -x "${debs[0]}" "${workdir}/root" || fail "dpkg -x could not unpack ${debs[0]}"
extracted="${workdir}/root/usr/bin/${tool}"
works "${extracted}" || fail "the prometheus package holds no working usr/bin/${tool}"

mkdir -p "${cache_dir}" || fail "cannot create ${cache_dir}"
# Copy then rename so a concurrent caller never sees a half-written binary.
staging="$(mktemp "${cache_dir}/.${tool}.XXXXXX")" || fail "cannot write to ${cache_dir}"
cp "${extracted}" "${staging}" && chmod 0755 "${staging}" && mv -f "${staging}" "${cached}" \
    || { rm -f "${staging}"; fail "cannot install ${tool} into ${cache_dir}"; }

echo "installed $("${cached}" --version 2>&1 | head -n 1) into ${cached}" >&2
echo "${cached}"
