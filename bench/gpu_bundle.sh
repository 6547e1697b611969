#!/usr/bin/env bash
# What bench/gpu_check.sh needs on a GPU machine that has Python 3.12 with torch
# and transformers but no package index and no redis-server, in one folder
# that travels with the tree (build/ is not in git):
#
#   build/gpu-bundle/wheels/   the fabric's own dependencies as manylinux wheels
#                              for CPython 3.12 (orjson and hiredis are binary)
#   build/gpu-bundle/redis/    redis-server and the shared libraries it links,
#                              unpacked from Debian's packages (dpkg-deb -x)
#   build/gpu-bundle/bin/redis-server
#                              runs that binary with LD_LIBRARY_PATH set for it
#                              alone (the libraries never reach Python's process)
#
#   bash bench/gpu_bundle.sh [DIR]     (make gpu-bundle)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/build/gpu-bundle}"
PYTHON="${PYTHON:-python3}"
# The fabric's run-time dependencies (pyproject.toml's [project] dependencies).
DEPS=("redis[hiredis]>=5.0" "orjson>=3.9" "click>=8.1" "tenacity>=8.2" "prometheus-client>=0.20" "rich>=13")
# redis-server (Debian ships it in redis-tools) and what it links beyond the C
# and C++ runtimes (ldd on Debian 12's build).
PACKAGES=(redis-tools libjemalloc2 liblzf1 libatomic1 libssl3 libsystemd0 libcap2 libgcrypt20
          libgpg-error0 liblzma5 libzstd1 liblz4-1)

rm -rf "$OUT.partial"
mkdir -p "$OUT.partial/wheels" "$OUT.partial/debs" "$OUT.partial/redis" "$OUT.partial/bin"

"$PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --dest "$OUT.partial/wheels" "${DEPS[@]}"

download() { (cd "$OUT.partial/debs" && apt-get download -qq "${PACKAGES[@]}" >/dev/null 2>&1); }
if ! download; then
  # A machine whose package lists were never fetched: fetch them once.
  apt-get update -qq >/dev/null
  download
fi
for deb in "$OUT.partial/debs"/*.deb; do
  dpkg-deb -x "$deb" "$OUT.partial/redis"
done
rm -rf "$OUT.partial/debs"

# Debian's redis-server is redis-check-rdb under another name (the binary picks
# its role from argv[0]): keep that one binary, named redis-server, and the
# libraries; drop the other tools and the docs.
mv "$OUT.partial/redis/usr/bin/redis-check-rdb" "$OUT.partial/redis/redis-server.bin"
rm -rf "$OUT.partial/redis/usr/bin" "$OUT.partial/redis/usr/share" "$OUT.partial/redis/etc"
mkdir -p "$OUT.partial/redis/usr/bin"
mv "$OUT.partial/redis/redis-server.bin" "$OUT.partial/redis/usr/bin/redis-server"

cat > "$OUT.partial/bin/redis-server" <<'WRAPPER'
#!/usr/bin/env bash
# The bundled redis-server with its own shared libraries, for this process only.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LD_LIBRARY_PATH="$here/redis/usr/lib/x86_64-linux-gnu:$here/redis/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/redis/usr/bin/redis-server" "$@"
WRAPPER
chmod +x "$OUT.partial/bin/redis-server"
"$OUT.partial/bin/redis-server" --version >/dev/null

rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
echo "gpu bundle: $(du -sh "$OUT" | cut -f1) in $OUT ($(ls "$OUT/wheels" | wc -l) wheels; $("$OUT/bin/redis-server" --version | cut -d' ' -f1-3))"
