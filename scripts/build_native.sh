#!/usr/bin/env bash
# Build the native part (libsemgir, semgir-score, the C example, ctest suite) into build/native.
# Idempotent; scripts/install.sh runs it after the Python install. Needs .venv (the onnxruntime
# wheel's libonnxruntime is what libsemgir links).
#   1. Debian -dev packages (decoders, OpenSSL, JSON, GoogleTest) via apt when missing (as root);
#   2. ONNX Runtime C/C++ headers: only the headers of Debian's libonnxruntime-dev from a newer
#      suite (the system's own apt sources with the suite changed, in a private apt state);
#   3. cmake configure + build.
# SEMGIR_NATIVE=0 skips it; SEMGIR_OPENVINO=0 builds without OpenVINO; SEMGIR_ORT_INCLUDE_DIR / SEMGIR_ORT_ROOT use your own ORT (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SEMGIR_NATIVE:-1}" = 0 ] && { echo "native build skipped (SEMGIR_NATIVE=0)"; exit 0; }

PKGS="cmake g++ pkg-config libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev libssl-dev nlohmann-json3-dev libgtest-dev"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "error: the native build needs these Debian packages: $missing (run as root or install them)" >&2
    exit 1
  fi
fi

# OpenVINO (optional second runtime): its PyPI wheel ships the C++ headers and OpenVINOConfig.cmake
if [ "${SEMGIR_OPENVINO:-1}" != 0 ] && ! .venv/bin/python -c "import openvino" 2>/dev/null; then
  .venv/bin/python -m pip install -q openvino >/dev/null 2>&1 || echo "warning: openvino not installed; building without it" >&2
fi

DEPS=build/_deps
HDR="$DEPS/onnxruntime/include/onnxruntime"
ORT_SUITE=${SEMGIR_ORT_HEADERS_SUITE:-trixie}
if [ -z "${SEMGIR_ORT_INCLUDE_DIR:-}${SEMGIR_ORT_ROOT:-}" ] && [ ! -f "$HDR/onnxruntime_cxx_api.h" ]; then
  APTD="$PWD/$DEPS/apt-$ORT_SUITE"
  mkdir -p "$APTD/lists/partial" "$APTD/cache/archives/partial" "$APTD/sources" "$DEPS/onnxruntime"
  # the system's Debian sources (deb822 or one-line format) with the suite replaced
  : > "$APTD/sources/$ORT_SUITE.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && grep -E '^deb +(\[[^]]*\] +)?https?://[^ ]*/debian/? ' "$f" |
      awk -v s="$ORT_SUITE" '{for(i=1;i<=NF;i++) if ($i ~ /^https?:/) {print "deb " ($2 ~ /^\[/ ? $2 " " : "") $i " " s " main"; break}}' \
      >> "$APTD/sources/$ORT_SUITE.list" || true
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && awk -v s="$ORT_SUITE" 'BEGIN{RS="";ORS="\n\n"} /URIs: *https?:[^ \n]*\/debian\/?(\n|$)/ {
        gsub(/Suites:[^\n]*/, "Suites: " s); gsub(/Components:[^\n]*/, "Components: main"); print}' "$f" \
      > "$APTD/sources/$(basename "$f")" || true
  done
  O=(-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$APTD/sources" -o Dir::State::Lists="$APTD/lists"
     -o Dir::Cache="$APTD/cache" -o Dir::State::status=/dev/null -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  apt-get "${O[@]}" -qq update >/dev/null
  (cd "$APTD" && apt-get "${O[@]}" -qq download libonnxruntime-dev >/dev/null)
  deb=$(ls "$APTD"/libonnxruntime-dev_*.deb | head -1)
  rm -rf "$APTD/x" && dpkg -x "$deb" "$APTD/x"
  rm -rf "$HDR" && mkdir -p "$(dirname "$HDR")" && cp -r "$APTD/x/usr/include/onnxruntime" "$HDR"
  rm -rf "$APTD/x" "$APTD/lists" "$APTD/cache"
  echo "ONNX Runtime headers: $(basename "$deb") -> $HDR"
fi

cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release -DSEMGIR_WITH_OPENVINO=$([ "${SEMGIR_OPENVINO:-1}" = 0 ] && echo OFF || echo AUTO) ${SEMGIR_ORT_INCLUDE_DIR:+-DSEMGIR_ORT_INCLUDE_DIR="$SEMGIR_ORT_INCLUDE_DIR"} \
  ${SEMGIR_ORT_ROOT:+-DSEMGIR_ORT_ROOT="$SEMGIR_ORT_ROOT"} >/dev/null
cmake --build build/native -j"$(nproc)" >/dev/null
echo "native: built build/native/libsemgir.so, build/native/semgir-score (ctest --test-dir build/native)"
