#!/usr/bin/env bash
# Installs the Debian packages lipar builds and tests with (needs root or sudo).
set -e
PKGS="build-essential pkg-config python3 xz-utils libopenblas-dev libavformat-dev libavcodec-dev libswscale-dev libavutil-dev sentencepiece ffmpeg clang libclang-rt-14-dev opencv-doc"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
