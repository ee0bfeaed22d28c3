#!/usr/bin/env bash
# Login -> /user/<slot>/api/status 200 through nbgate (accounts mode, bcrypt
# cost 12), pool hit and cold path, median of N, next to bcrypt alone (a failed
# login of an unknown user costs exactly one bcrypt verify at the same cost).
# Traffic: loopback only. Cleans up its containers, volumes and network.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10}
BIN=${BIN:-target/release/nbgate}
[ -x "$BIN" ] || cargo build --release -q
tmp=$(mktemp -d)
inst="blogin$$"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=nbgate.instance=$inst"); [ -n "$ids" ] && docker rm -f $ids >/dev/null || true
  vols=$(docker volume ls -q --filter "label=nbgate.instance=$inst"); [ -n "$vols" ] && docker volume rm -f $vols >/dev/null || true
  docker network rm "$inst-net" >/dev/null 2>&1 || true
  umount -l "$tmp/state/slots" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ms() { python3 -c "import sys; print(round(float(sys.argv[1])*1000, 1))" "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run() { # $1 = hot_bind true|false
  NBGATE_INSTANCE=$inst NBGATE_STATE_DIR=$tmp/state NBGATE_BIND=127.0.0.1:0 NBGATE_REGISTRATION_KEY=k \
    NBGATE_POOL_SIZE=2 NBGATE_BCRYPT_COST=12 NBGATE_HOT_BIND=$1 NBGATE_LOG_FORMAT=json \
    "$BIN" serve > "$tmp/out" 2> "$tmp/err" &
  pid=$!
  for _ in $(seq 100); do grep -q listening "$tmp/out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^nbgate listening on //p' "$tmp/out")
}
warm() { for _ in $(seq 600); do curl -s "$url/hub/health" | grep -q "\"warm\":$1" && return; sleep 0.2; done; }
xsrf() { curl -s -c "$1" -b "$1" "$url/hub/login" | sed -n 's/.*name="_xsrf" value="\([^"]*\)".*/\1/p' | head -1; }
login() { # jar user pass -> prints "seconds_to_status"
  local jar=$1 x t0 loc slot
  x=$(xsrf "$jar")
  t0=$(date +%s.%N)
  loc=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" -H "Origin: $url" \
        --data-urlencode "_xsrf=$x" --data-urlencode "username=$2" --data-urlencode "password=$3" "$url/hub/login")
  while [[ "$loc" == *spawn-pending* ]]; do  # 202 while starting, then 302 into the server
    sleep 0.1
    next=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" "$loc")
    [ -n "$next" ] && loc=$next
  done
  slot=$(echo "$loc" | sed -n 's|.*/user/\([0-9a-f]*\)/.*|\1|p')
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -b "$jar" "$url/user/$slot/api/status")" = 200 ]; do sleep 0.02; done
  echo "$(date +%s.%N) - $t0" | bc
}
logout() { local x; x=$(curl -s -c "$1" -b "$1" "$url/hub/home" | sed -n 's/.*name="_xsrf" value="\([^"]*\)".*/\1/p' | head -1)
  curl -s -o /dev/null -c "$1" -b "$1" -H "Origin: $url" --data-urlencode "_xsrf=$x" "$url/hub/logout"; }

for mode in true false; do
  run $mode
  jar=$tmp/jar-$mode
  x=$(curl -s -c "$jar" -b "$jar" "$url/hub/register" | sed -n 's/.*name="_xsrf" value="\([^"]*\)".*/\1/p' | head -1)
  [ $mode = true ] && warm 2
  curl -s -o /dev/null -c "$jar" -b "$jar" -H "Origin: $url" --data-urlencode "_xsrf=$x" -d username=bench$mode \
    -d password=benchpassword -d password_confirm=benchpassword -d registration_key=k "$url/hub/register"
  sleep 3; logout "$jar"
  times=(); fails=()
  for i in $(seq "$N"); do
    [ $mode = true ] && warm 2
    times+=("$(login "$jar" bench$mode benchpassword)")
    logout "$jar"
    # Four failures only: the fifth from one address starts the throttle.
    if [ "$i" -le 4 ]; then
      jar2=$tmp/fail; x=$(xsrf "$jar2"); t0=$(date +%s.%N)
      curl -s -o /dev/null -c "$jar2" -b "$jar2" -H "Origin: $url" --data-urlencode "_xsrf=$x" -d username=nobody$i -d password=wrongpassword "$url/hub/login"
      fails+=("$(echo "$(date +%s.%N) - $t0" | bc)")
    fi
  done
  label=$([ $mode = true ] && echo "pool hit (hot bind)" || echo "cold path (fresh container)")
  printf '%s: login -> api/status 200 median %s ms; bcrypt alone (failed login) median %s ms (N=%s)\n' \
    "$label" "$(ms "$(printf '%s\n' "${times[@]}" | median)")" "$(ms "$(printf '%s\n' "${fails[@]}" | median)")" "$N"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  ids=$(docker ps -aq --filter "label=nbgate.instance=$inst"); [ -n "$ids" ] && docker rm -f $ids >/dev/null || true
  rm -f "$tmp/state/nbgate.db"*
done
