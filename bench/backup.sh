#!/usr/bin/env bash
# Backup and restore throughput for a 1 GB volume of mixed files (big binary,
# many small text files, nested dirs, symlinks), and how long a working user's
# server is paused while their volume is archived. Local only; cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/nbgate}
[ -x "$BIN" ] || cargo build --release -q
tmp=$(mktemp -d)
inst="bbak$$"
export NBGATE_INSTANCE=$inst NBGATE_STATE_DIR=$tmp/state NBGATE_BIND=127.0.0.1:0 NBGATE_REGISTRATION_KEY=k NBGATE_POOL_SIZE=1 NBGATE_BCRYPT_COST=4
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=nbgate.instance=$inst"); [ -n "$ids" ] && docker rm -f $ids >/dev/null || true
  vols=$(docker volume ls -q --filter "label=nbgate.instance=$inst"); [ -n "$vols" ] && docker volume rm -f $vols >/dev/null || true
  docker network rm "$inst-net" >/dev/null 2>&1 || true
  umount -l "$tmp/state/slots" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
"$BIN" serve > "$tmp/out" 2> "$tmp/err" & pid=$!
for _ in $(seq 100); do grep -q listening "$tmp/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^nbgate listening on //p' "$tmp/out")
for _ in $(seq 600); do curl -s "$url/hub/health" | grep -q '"warm":1' && break; sleep 0.2; done
jar=$tmp/jar
x=$(curl -s -c $jar -b $jar "$url/hub/register" | sed -n 's/.*name="_xsrf" value="\([^"]*\)".*/\1/p' | head -1)
curl -s -o /dev/null -c $jar -b $jar -H "Origin: $url" --data-urlencode "_xsrf=$x" -d username=bigdata \
  -d password=benchpassword -d password_confirm=benchpassword -d registration_key=k "$url/hub/register"
vol=$(docker volume ls -q --filter "label=nbgate.instance=$inst" | head -1)
mp=$(docker volume inspect -f '{{.Mountpoint}}' "$vol")
# ~1 GB: 600 MB in 6 big files (half compressible), 8000 small text files, links.
python3 - "$mp" <<'PY'
import os, sys, random
root = sys.argv[1]; random.seed(1)
os.makedirs(f"{root}/data", exist_ok=True)
for i in range(6):
    with open(f"{root}/data/big{i}.bin", "wb") as f:
        for _ in range(100):
            f.write(os.urandom(512 * 1024) + bytes(512 * 1024))
for d in range(80):
    os.makedirs(f"{root}/notes/d{d}", exist_ok=True)
    for j in range(100):
        with open(f"{root}/notes/d{d}/n{j}.txt", "w") as f:
            f.write(("line %d of a notebook note\n" % j) * random.randint(50, 1000))
    os.symlink(f"../../data/big{d % 6}.bin", f"{root}/notes/d{d}/link")
PY
chown -R 1000:100 "$mp"
size=$(du -sb "$mp" | cut -f1)
echo "volume: $((size / 1000000)) MB"
"$BIN" volume backup --dest "$tmp/backup" --user bigdata 2>&1 | grep -E "paused|backed up"
"$BIN" volume verify --src "$tmp/backup" | tail -1
t0=$(date +%s.%N)
"$BIN" volume restore --src "$tmp/backup" --user bigdata 2>&1 | grep -vE "INFO|^$" || true
echo "restore wall time: $(echo "$(date +%s.%N) - $t0" | bc) s"
echo "archive: $(du -sb "$tmp/backup" | cut -f1) bytes"
