#!/usr/bin/env bash
# `make bench`: every figure of BENCH.md side by side with its peers, in one run.
# Writes bench/report.md and bench/report.json; work files and logs go to bench/out/.
# See bench/README.md for the method and how to read the report.
#
# Traffic goes only to 127.0.0.1 and to containers this script starts. Every loop is
# bounded in count and time. Everything started (processes, containers, networks,
# volumes, mounts) is removed on exit, failure and Ctrl-C included.
#
# Settings (environment):
#   BENCH_RUNS=3          runs per figure (medians are reported)
#   BENCH_WS_SESSION_RUNS=5  runs of WebSocket sessions/s (at least BENCH_RUNS): the figure whose
#                         peers swing most from run to run (CHP ±25 %), for a steadier median
#   BENCH_DURATION=3      seconds per load run (after a 1 s warm-up run per peer)
#   BENCH_HTTP_RUNS=5     runs of HTTP throughput (figure 1), BENCH_HTTP_DURATION=2 s each: five
#                         short runs, not three long ones, for a median that one noisy run
#                         (a co-tenant on the host) does not move
#   BENCH_LAT_RUNS=10     rounds of fixed-rate latency (figure 2), BENCH_LAT_DURATION=3 s a peer
#                         each, the peers (CHP apart) taking 200 ms turns within a round: the
#                         host's stalls of several ms land on every peer alike, and the report
#                         pools each peer's rounds into one p99 (bench/README.md)
#   BENCH_CONNS=64        wrk connections
#   BENCH_WS_OPEN=1000    open WebSockets for the echo-latency figure
#   BENCH_WS_IDLE=3000    idle WebSockets for bytes/connection, 3 rounds per peer (10000 for
#                         BENCH.md's full figure, ~3 min more; lowered to what nofile allows)
#   BENCH_ROUTES=10000    routes for the route-scale figure
#   BENCH_BURSTS="10"     login bursts ("10 40" for BENCH.md's full figure 6; 40 adds ~5 min)
#   BENCH_SESSIONS=100    sessions for the gateway footprint figure
#   BENCH_BUDGET=1800     seconds of measuring (after installs and builds); later phases are
#                         skipped (and say so) rather than overrun it
#   BENCH_SKIP="…"        any of: static jupyter attendees logins (whole phases), nbgate hub raw
#                         burst footprint, http ws routes login (figures)
#   BENCH_ONLY="…"        run only these phases (of: static jupyter raw burst hub footprint
#                         attendees logins); the rest are skipped as if listed in BENCH_SKIP,
#                         and the report is written to bench/out/<run>/ (bench/report.md is
#                         left as the last full run's)
#   BENCH_ATTENDEES=50    attendees of the "attendees" phase (accounts mode, idle recycling)
#   BENCH_ATTENDEE_GAP=1  seconds between two attendees' arrivals
#   BENCH_ATTENDEE_IDLE=20s  NBGATE_IDLE_TIMEOUT of that phase (culler every tenth of it, ≥ 1 s)
#   BENCH_ATTENDEE_ROUND2=6 attendees of a second round on the same gateway (0: none): tells
#                         growth per attendee (a leak) from one-time growth
#   BENCH_STORM=200       logins at once in the "logins" phase
#   BENCH_STORM_CAP=12    NBGATE_MAX_CONTAINERS of that phase (well below BENCH_STORM)
#   BENCH_STORM_CONTROL=1 then the same storm with cap 5 = the running user + a pool of 4
#                         (no container starts meanwhile: the gateway's own share); 0: not
#   BENCH_NO_BUILD=1      do not run `cargo build --release` for nbgate (use what is there)
#   BENCH_NO_IMAGES=1     do not run docker/build-images.sh (measure the existing notebook image)
#   NBGATE_BIN=path       measure this nbgate binary instead (implies BENCH_NO_BUILD)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
RUN_ID=bench$$
OUT=$here/out/$RUN_ID
RESULTS=$OUT/results.jsonl
NOTES=$OUT/notes.jsonl
META=$OUT/meta.json
LOADGEN=$here/loadgen/target/release/loadgen
NB_BIN=${NBGATE_BIN:-$root/target/release/nbgate}
VENV=$here/.venv
NOTEBOOK_IMAGE=${NOTEBOOK_IMAGE:-nbgate/notebook:latest}
STATIC_IMAGE=nbgate/bench-static:latest
HUB_IMAGE=nbgate/bench-jupyterhub-singleuser:latest
JUPYTERHUB_VERSION=6.1.1
DOCKERSPAWNER_VERSION=14.0.0
NATIVEAUTH_VERSION=1.3.0

RUNS=${BENCH_RUNS:-3}
WS_SESSION_RUNS=${BENCH_WS_SESSION_RUNS:-5}
[ "$WS_SESSION_RUNS" -ge "$RUNS" ] || WS_SESSION_RUNS=$RUNS
DUR=${BENCH_DURATION:-3}
HTTP_RUNS=${BENCH_HTTP_RUNS:-5}
HTTP_DUR=${BENCH_HTTP_DURATION:-2}
LAT_RUNS=${BENCH_LAT_RUNS:-10}
LAT_DUR=${BENCH_LAT_DURATION:-3}
CONNS=${BENCH_CONNS:-64}
WS_OPEN=${BENCH_WS_OPEN:-1000}
WS_IDLE_WANT=${BENCH_WS_IDLE:-3000}
ROUTES=${BENCH_ROUTES:-10000}
BURSTS=${BENCH_BURSTS:-10}
SESSIONS=${BENCH_SESSIONS:-100}
BUDGET=${BENCH_BUDGET:-1800}
SKIP=" ${BENCH_SKIP:-} "
ALL_PHASES="static jupyter raw burst hub footprint attendees logins"
if [ -n "${BENCH_ONLY:-}" ]; then
  for p in $ALL_PHASES; do [[ " $BENCH_ONLY " == *" $p "* ]] || SKIP="$SKIP$p "; done
fi
ATTENDEES=${BENCH_ATTENDEES:-50}
ATTENDEE_GAP=${BENCH_ATTENDEE_GAP:-1}
ATTENDEE_IDLE=${BENCH_ATTENDEE_IDLE:-20s}
ATTENDEE_ROUND2=${BENCH_ATTENDEE_ROUND2:-6}
STORM=${BENCH_STORM:-200}
STORM_CAP=${BENCH_STORM_CAP:-12}
STORM_CONTROL=${BENCH_STORM_CONTROL:-1}
T_START=$(date +%s)

PIDS=()        # processes we started (killed on exit, newest first)
INSTANCES=()   # nbgate instances (containers, networks, volumes removed by label)
STATE_DIRS=()  # nbgate state dirs (unmounted, then removed)
NETWORKS=()    # networks we created

mkdir -p "$OUT"
: >"$RESULTS"; : >"$NOTES"
# mark NAME — the set-up step that just ended, with its seconds (for the report).
SETUP_STEPS=$OUT/setup.jsonl
: >"$SETUP_STEPS"
T_MARK=$(date +%s)
mark() {
  local now; now=$(date +%s)
  jq -cn --arg n "$1" --argjson s $(( now - T_MARK )) '{($n): $s}' >>"$SETUP_STEPS"
  T_MARK=$now
}

log() { echo "[bench $(date +%T)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
skipped() { [[ "$SKIP" == *" $1 "* ]]; }
elapsed() { echo $(( $(date +%s) - T_START )); }
# Is there time left for a phase that needs about $1 seconds? (Measurement time only:
# the clock starts after installs and builds.)
T_MEASURE=
budget_ok() { [ $(( $(date +%s) - ${T_MEASURE:-$T_START} + $1 )) -le "$BUDGET" ]; }

# record FIGURE UPSTREAM PEER METRIC VALUE — one measurement (value: JSON number or object)
record() {
  local v=${5:-null}
  [ -n "$v" ] || v=null
  jq -cn --arg f "$1" --arg u "$2" --arg p "$3" --arg m "$4" --argjson v "$v" \
    '{figure:$f, upstream:$u, peer:$p, metric:$m, value:$v}' >>"$RESULTS" 2>/dev/null \
    || log "record: bad value for $1/$2/$3/$4: $v"
}
# note FIGURE TEXT — a line for the report (skips, reasons, warnings)
note() { jq -cn --arg f "$1" --arg t "$2" '{figure:$f, text:$t}' >>"$NOTES"; log "note [$1]: $2"; }
nbgate_na() { note "$1" "nbgate: not measurable yet: $2"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# wait_until SECONDS CMD… — poll CMD every 0.2 s until it succeeds; bounded.
wait_until() {
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  while [ "$(date +%s)" -lt "$end" ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

kill_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
}

cleanup_instance() {
  local inst=$1 ids
  ids=$(docker ps -aq --filter "label=nbgate.instance=$inst" 2>/dev/null)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
  ids=$(docker network ls -q --filter "label=nbgate.instance=$inst" 2>/dev/null)
  [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1
  ids=$(docker volume ls -q --filter "label=nbgate.instance=$inst" 2>/dev/null)
  [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1
}

unmount_under() {
  local dir=$1
  [ -d "$dir" ] || return 0
  # Deepest first; lazily, so a busy mount cannot keep us here.
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

CLEANED=
cleanup() {
  [ -n "$CLEANED" ] && return; CLEANED=1
  log "cleaning up"
  local i
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do kill_pid "${PIDS[$i]}"; done
  local ids
  ids=$(docker ps -aq --filter "label=nbgate.bench=$RUN_ID" 2>/dev/null)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
  for inst in "${INSTANCES[@]}"; do cleanup_instance "$inst"; done
  for n in "${NETWORKS[@]}"; do docker network rm "$n" >/dev/null 2>&1; done
  for d in "${STATE_DIRS[@]}"; do unmount_under "$d"; rm -rf --one-file-system "$d" 2>/dev/null; done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Keep the work files of the last 5 runs only.
ls -1dt "$here"/out/bench[0-9]* 2>/dev/null | tail -n +6 | while read -r old; do
  unmount_under "$old"; rm -rf --one-file-system "$old"
done

# Leftovers of an earlier run that was killed too hard to clean up (SIGKILL, reboot of
# dockerd…): containers, networks and volumes of bench runs whose script is gone.
# Only names this script makes are touched (bench<pid>…), never anyone else's.
stale_cleanup() {
  local kind ids id run pid
  for kind in container network volume; do
    for label in nbgate.bench nbgate.instance; do
      local tmpl="{{ index .Labels \"$label\" }}" rm="docker $kind rm"
      case $kind in
        container) ids=$(docker ps -aq --filter "label=$label" 2>/dev/null); tmpl="{{ index .Config.Labels \"$label\" }}"; rm="docker rm -f" ;;
        network) ids=$(docker network ls -q --filter "label=$label" 2>/dev/null) ;;
        volume) ids=$(docker volume ls -q --filter "label=$label" 2>/dev/null); rm="docker volume rm -f" ;;
      esac
      for id in $ids; do
        run=$(docker "$kind" inspect -f "$tmpl" "$id" 2>/dev/null) || continue
        [[ "$run" =~ ^bench([0-9]+)(s|j|f|a|l|b[0-9]+-[0-9]+)?$ ]] || continue
        pid=${BASH_REMATCH[1]}
        [ "$pid" != "$$" ] || continue
        if ! kill -0 "$pid" 2>/dev/null || ! grep -q "bench/run.sh" "/proc/$pid/cmdline" 2>/dev/null; then
          log "removing a leftover $kind of $run"
          $rm "$id" >/dev/null 2>&1 || true
        fi
      done
    done
  done
}

# ------------------------------------------------------------------ preflight
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
CORES=$(nproc)
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"
stale_cleanup
[ "$CORES" -ge 2 ] || log "only $CORES core: pinning is off, figures are indicative"
pin_proxy() { if [ "$CORES" -ge 2 ]; then echo "taskset -c 1"; fi; }
pin_load() { if [ "$CORES" -ge 2 ]; then echo "taskset -c 0"; fi; }
PIN_PROXY=$(pin_proxy); PIN_LOAD=$(pin_load)

# The peers (nginx, CHP, wrk, hyperfine) only for the phases that measure them side by side.
PEER_PHASES=
for p in static jupyter raw burst hub; do skipped "$p" || PEER_PHASES="$PEER_PHASES $p"; done
need=()
for p in ${PEER_PHASES:+nginx haproxy wrk hyperfine node-configurable-http-proxy} jq curl python3 python3-venv util-linux procps; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq >/dev/null 2>&1
  # policy-rc.d 101: do not start the packaged nginx service on port 80.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >"$OUT/apt.log" 2>&1 \
    || die "apt-get install ${need[*]} failed (see $OUT/apt.log)"
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
# Debian's CHP finds its modules through Debian's node paths; a node from elsewhere
# (e.g. nodesource's, which replaces Debian's nodejs) needs them spelled out.
export NODE_PATH=/usr/share/nodejs:/usr/lib/nodejs:/usr/lib/$(uname -m)-linux-gnu/nodejs${NODE_PATH:+:$NODE_PATH}
if [ -n "$PEER_PHASES" ]; then
  command -v configurable-http-proxy >/dev/null || die "configurable-http-proxy missing after install"
  configurable-http-proxy --version >/dev/null 2>&1 || die "configurable-http-proxy does not run: $(configurable-http-proxy --version 2>&1 | grep -m1 Error)"
fi

mark packages
# ------------------------------------------------------------------ builds
log "building the load generator (bench/loadgen)"
(cd "$here/loadgen" && CARGO_TARGET_DIR="$here/loadgen/target" cargo build --release -j1 --quiet) \
  >"$OUT/loadgen-build.log" 2>&1 || die "loadgen build failed (see $OUT/loadgen-build.log)"
mark loadgen_build

# `make images` is a no-op when docker/ is unchanged (images carry a hash of their inputs).
if [ -n "${BENCH_NO_IMAGES:-}" ]; then
  docker image inspect "$NOTEBOOK_IMAGE" >/dev/null 2>&1 || die "BENCH_NO_IMAGES is set and $NOTEBOOK_IMAGE is missing"
  log "measuring the existing $NOTEBOOK_IMAGE (BENCH_NO_IMAGES)"
else
  log "checking $NOTEBOOK_IMAGE (docker/build-images.sh)"
  if ! NOTEBOOK_IMAGE=$NOTEBOOK_IMAGE bash "$root/docker/build-images.sh" >"$OUT/images.log" 2>&1; then
    docker image inspect "$NOTEBOOK_IMAGE" >/dev/null 2>&1 \
      || die "docker/build-images.sh failed and $NOTEBOOK_IMAGE is missing (see $OUT/images.log)"
    log "docker/build-images.sh failed; measuring the existing $NOTEBOOK_IMAGE (see $OUT/images.log)"
  fi
fi

mark images

label_of() { docker image inspect -f '{{ index .Config.Labels "nbgate.inputs" }}' "$1" 2>/dev/null || true; }

ensure_hub_venv() {
  local have
  have=$("$VENV/bin/pip" show jupyterhub dockerspawner jupyterhub-nativeauthenticator 2>/dev/null | grep -c '^Version:')
  if [ ! -x "$VENV/bin/jupyterhub" ] || [ "$have" != 3 ] || [ "$("$VENV/bin/jupyterhub" --version 2>/dev/null)" != "$JUPYTERHUB_VERSION" ]; then
    log "installing JupyterHub $JUPYTERHUB_VERSION + DockerSpawner + NativeAuthenticator into bench/.venv"
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check \
      "jupyterhub==$JUPYTERHUB_VERSION" "dockerspawner==$DOCKERSPAWNER_VERSION" \
      "jupyterhub-nativeauthenticator==$NATIVEAUTH_VERSION" >"$OUT/hub-venv.log" 2>&1
  fi
}

build_hub_image() {
  local base hash ctx
  base=$(docker image inspect -f '{{.Id}}' "$NOTEBOOK_IMAGE") || return 1
  hash=$( (sha256sum "$here/images/hub-singleuser/Dockerfile"; echo "$base $JUPYTERHUB_VERSION") | sha256sum | cut -c1-16)
  [ "$(label_of "$HUB_IMAGE")" = "$hash" ] && return 0
  log "building $HUB_IMAGE"
  ctx=$(mktemp -d)
  cp "$here/images/hub-singleuser/Dockerfile" "$ctx/"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt" 2>/dev/null || : >"$ctx/host-ca.crt"
  docker build --quiet --build-arg "NOTEBOOK_IMAGE=$NOTEBOOK_IMAGE" --build-arg "JUPYTERHUB_VERSION=$JUPYTERHUB_VERSION" \
    --label "nbgate.inputs=$hash" -t "$HUB_IMAGE" "$ctx" >"$OUT/hub-image.log" 2>&1
  local rc=$?; rm -rf "$ctx"; return $rc
}

# JupyterHub's venv and single-user image build in the background while nbgate
# compiles: both need only the notebook image (in series they added 2-3 min to the set-up).
HUB_SETUP_PID=
if ! skipped hub; then
  ( ensure_hub_venv || { echo "venv install failed (see $OUT/hub-venv.log)" >"$OUT/hub-setup.err"; exit 1; }
    build_hub_image || { echo "building $HUB_IMAGE failed (see $OUT/hub-image.log)" >"$OUT/hub-setup.err"; exit 1; } ) &
  HUB_SETUP_PID=$!; PIDS+=("$HUB_SETUP_PID")
fi

NB_BUILD_ERR=
if skipped nbgate; then
  NB_BUILD_ERR="skipped by BENCH_SKIP"
elif [ -n "${BENCH_NO_BUILD:-}" ] || [ -n "${NBGATE_BIN:-}" ]; then
  [ -x "$NB_BIN" ] || NB_BUILD_ERR="no nbgate binary at $NB_BIN (NBGATE_BIN / BENCH_NO_BUILD given, so nothing was built)"
else
  log "building nbgate (cargo build --release)"
  if ! (cd "$root" && cargo build --release --quiet --bin nbgate --bin route-scale) >"$OUT/nbgate-build.log" 2>&1; then
    NB_BUILD_ERR="cargo build --release failed: $(grep -m1 -E '^error' "$OUT/nbgate-build.log" || tail -1 "$OUT/nbgate-build.log")"
  fi
fi
[ -z "$NB_BUILD_ERR" ] || log "nbgate: $NB_BUILD_ERR"
mark nbgate_build

build_static_image() {
  local base hash ctx
  base=$(docker image inspect -f '{{.Id}}' nbgate/base:bookworm 2>/dev/null) || { log "nbgate/base:bookworm missing"; return 1; }
  hash=$( (sha256sum "$LOADGEN" "$here/images/static/Dockerfile"; echo "$base") | sha256sum | cut -c1-16)
  [ "$(label_of "$STATIC_IMAGE")" = "$hash" ] && return 0
  log "building $STATIC_IMAGE"
  ctx=$(mktemp -d)
  cp "$here/images/static/Dockerfile" "$LOADGEN" "$ctx/"
  docker build --quiet --label "nbgate.inputs=$hash" -t "$STATIC_IMAGE" "$ctx" >"$OUT/static-image.log" 2>&1
  local rc=$?; rm -rf "$ctx"; return $rc
}
if ! skipped static || ! skipped footprint; then
  build_static_image || die "building $STATIC_IMAGE failed (see $OUT/static-image.log)"
fi
mark static_image

# ------------------------------------------------------------------ metadata
GIT_REV=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)
jq -n \
  --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg run "$RUN_ID" --argjson cores "$CORES" \
  --arg cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
  --arg kernel "$(uname -r)" --arg mem "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
  --arg nbgate "$GIT_REV$( [ "$GIT_DIRTY" -gt 0 ] && echo "+dirty")${NBGATE_BIN:+ (measured: $NBGATE_BIN)}" \
  --arg nginx "$(command -v nginx >/dev/null && nginx -v 2>&1 | sed 's/.*nginx\///')" \
  --arg chp "$(configurable-http-proxy --version 2>/dev/null | tail -1)" --arg node "$(node --version 2>/dev/null)" \
  --arg wrk "$(command -v wrk >/dev/null && wrk -v 2>&1 | head -1 | awk '{print $2}')" \
  --arg hyperfine "$(hyperfine --version 2>/dev/null | awk '{print $2}')" \
  --arg docker "$(docker version -f '{{.Server.Version}}' 2>/dev/null)" \
  --arg jupyterlab "$(docker run --rm --entrypoint /opt/nbgate/bin/jupyter "$NOTEBOOK_IMAGE" lab --version 2>/dev/null)" \
  --arg jupyterhub "$JUPYTERHUB_VERSION" --arg dockerspawner "$DOCKERSPAWNER_VERSION" --arg nativeauth "$NATIVEAUTH_VERSION" \
  --argjson runs "$RUNS" --argjson wsruns "$WS_SESSION_RUNS" --argjson dur "$DUR" --argjson conns "$CONNS" --argjson nofile "$NOFILE" \
  --argjson hruns "$HTTP_RUNS" --argjson hdur "$HTTP_DUR" --argjson lruns "$LAT_RUNS" --argjson ldur "$LAT_DUR" \
  '{date:$date, run:$run, host:{cores:$cores, cpu:$cpu, kernel:$kernel, memory:$mem, nofile:$nofile},
    versions:{nbgate:$nbgate, nginx:$nginx, "configurable-http-proxy":$chp, node:$node, wrk:$wrk,
              hyperfine:$hyperfine, docker:$docker, jupyterlab:$jupyterlab, jupyterhub:$jupyterhub,
              dockerspawner:$dockerspawner, "jupyterhub-nativeauthenticator":$nativeauth},
    settings:{runs:$runs, ws_session_runs:$wsruns, duration_s:$dur, http_runs:$hruns, http_duration_s:$hdur,
              latency_runs:$lruns, latency_duration_s:$ldur, wrk_connections:$conns}}' >"$META"

# ------------------------------------------------------------------ upstreams and peers

# up_addr CID — where every peer reaches the upstream: the container's own address, as
# nbgate does (src/pool/supervise.rs), so that no peer pays for docker-proxy; the
# published port only if the container has no address.
up_addr() {
  local ip
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" 2>/dev/null | awk '{print $1}')
  if [ -n "$ip" ]; then echo "$ip:8888"; else docker port "$1" 8888/tcp 2>/dev/null | head -1; fi
}

# start_upstream NAME IMAGE — a container like nbgate's (same limits), on the load core.
# Sets UP_ADDR UP_BASE UP_TOKEN UP_CID.
start_upstream() {
  local name=$1 image=$2
  UP_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  UP_BASE=/user/bench/
  UP_CID=$(docker run -d --label "nbgate.bench=$RUN_ID" --name "$RUN_ID-$name" \
    ${PIN_LOAD:+--cpuset-cpus 0} --cpus 1 --memory 512m --memory-swap 512m --pids-limit 512 \
    --ulimit nofile=4096:8192 --cap-drop ALL --security-opt no-new-privileges:true --user 1000:100 \
    -p 127.0.0.1::8888 -e NBGATE_BASE_URL=$UP_BASE -e "JUPYTER_TOKEN=$UP_TOKEN" "$image") || return 1
  UP_ADDR=$(up_addr "$UP_CID")
  wait_until 90 curl -sf -H "Authorization: token $UP_TOKEN" "http://$UP_ADDR${UP_BASE}api/status" \
    || { log "upstream $name did not become ready"; return 1; }
}

# adopt_nbgate_container — use the container nbgate bound to our session as the upstream
# of every peer, so all of them proxy to the very same server. Needs NB_SLOT.
adopt_nbgate_container() {
  local inst=$1 cid
  cid=$(docker ps -q --filter "label=nbgate.instance=$inst" --filter "label=nbgate.slot=$NB_SLOT" | head -1)
  [ -n "$cid" ] || return 1
  UP_CID=$cid
  UP_ADDR=$(up_addr "$cid")
  UP_TOKEN=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$cid" | sed -n 's/^JUPYTER_TOKEN=//p')
  UP_BASE=/user/$NB_SLOT/
  [ -n "$UP_ADDR" ] && [ -n "$UP_TOKEN" ] || return 1
  [ -z "$PIN_LOAD" ] || docker update --cpuset-cpus 0 "$cid" >/dev/null 2>&1
}

# start_nginx NAME UPSTREAM_ADDR [EXTRA_LOCATIONS_FILE] — worker_processes 1 on the proxy core.
# Sets NGINX_PORT NGINX_PID (master) NGINX_WORKER.
start_nginx() {
  local name=$1 up=$2 extra=${3:-} dir=$OUT/nginx-$1
  mkdir -p "$dir"
  NGINX_PORT=$(free_port)
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $(( NOFILE - 100 )); multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/tmp-body;
  proxy_temp_path $dir/tmp-proxy;
  fastcgi_temp_path $dir/tmp-fcgi;
  uwsgi_temp_path $dir/tmp-uwsgi;
  scgi_temp_path $dir/tmp-scgi;
  upstream up { server $up; keepalive 128; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    $( [ -n "$extra" ] && cat "$extra" )
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Host \$host;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header X-Forwarded-For \$remote_addr;
      # Buffered in memory, never spooled to disk: nginx's fastest setting for 1 MiB
      # bodies here (proxy_buffering off with 4 KiB buffers runs at a quarter of it).
      proxy_buffering on;
      proxy_buffers 16 64k;
      proxy_busy_buffers_size 128k;
      proxy_max_temp_file_size 0;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
EOF
  $PIN_PROXY nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' 2>>"$dir/error.log" &
  NGINX_PID=$!; PIDS+=("$NGINX_PID")
  wait_until 10 curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || { log "nginx $name did not start"; return 1; }
  NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)
}

# start_chp NAME UPSTREAM_ADDR ROUTE — configurable-http-proxy on the proxy core; the route is
# added through its REST API. Sets CHP_PORT CHP_API CHP_TOKEN CHP_PID.
start_chp() {
  local name=$1 up=$2 route=$3
  CHP_PORT=$(free_port); CHP_API=$(free_port)
  CHP_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  CONFIGPROXY_AUTH_TOKEN=$CHP_TOKEN $PIN_PROXY configurable-http-proxy --ip 127.0.0.1 --port "$CHP_PORT" \
    --api-ip 127.0.0.1 --api-port "$CHP_API" --log-level warn >"$OUT/chp-$name.log" 2>&1 &
  CHP_PID=$!; PIDS+=("$CHP_PID")
  wait_until 20 curl -sf -H "Authorization: token $CHP_TOKEN" "http://127.0.0.1:$CHP_API/api/routes" \
    || { log "CHP $name did not start"; return 1; }
  curl -sf -X POST -H "Authorization: token $CHP_TOKEN" -d "{\"target\": \"http://$up\"}" \
    "http://127.0.0.1:$CHP_API/api/routes${route%/}" >/dev/null || { log "CHP $name: adding the route failed"; return 1; }
}

# start_relay NAME UPSTREAM_ADDR — haproxy in TCP mode on the proxy core: it moves bytes and
# parses nothing (the same reads and writes per request as any proxy, no HTTP work), so it
# is the most a proxy can reach under this method. Sets RELAY_PORT RELAY_PID.
RELAY_PORT= RELAY_PID=
start_relay() {
  local name=$1 up=$2 dir=$OUT/relay-$1
  mkdir -p "$dir"
  RELAY_PORT=$(free_port)
  cat >"$dir/haproxy.cfg" <<EOF
global
  maxconn 4000
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen relay
  bind 127.0.0.1:$RELAY_PORT
  server up $up
EOF
  $PIN_PROXY haproxy -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1 &
  RELAY_PID=$!; PIDS+=("$RELAY_PID")
  wait_until 10 curl -s -o /dev/null "http://127.0.0.1:$RELAY_PORT/" \
    || { log "haproxy relay $name did not start"; RELAY_PORT=; return 1; }
}

# ------------------------------------------------------------------ nbgate
NB_PID= NB_URL= NB_REASON= NB_SLOT= NB_COOKIE=
nbgate_health() { curl -s --max-time 2 "$NB_URL/hub/health"; }
nbgate_warm() { nbgate_health | jq -r '.pool.warm // empty' 2>/dev/null; }
nbgate_warm_at_least() { local w; w=$(nbgate_warm); [ -n "$w" ] && [ "$w" -ge "$1" ]; }

# nbgate_start NAME INSTANCE IMAGE POOL WAIT_SECONDS [NBGATE_X=… …]
# Sets NB_PID NB_URL, or NB_REASON and returns 1.
nbgate_start() {
  local name=$1 inst=$2 image=$3 pool=$4 wait=$5; shift 5
  NB_PID= NB_URL= NB_REASON=
  if [ -n "$NB_BUILD_ERR" ]; then NB_REASON=$NB_BUILD_ERR; return 1; fi
  local port st=$OUT/state-$inst pin=$PIN_PROXY
  # NB_UNPINNED=1: the accounts scenarios run the gateway on every core, as deployed.
  [ -z "${NB_UNPINNED:-}" ] || pin=
  port=$(free_port); mkdir -p "$st"
  INSTANCES+=("$inst"); STATE_DIRS+=("$st")
  env NBGATE_INSTANCE="$inst" NBGATE_STATE_DIR="$st" NBGATE_BIND="127.0.0.1:$port" NBGATE_AUTH=ephemeral \
    NBGATE_POOL_SIZE="$pool" NBGATE_IMAGE="$image" NBGATE_IDLE_TIMEOUT=2h NBGATE_LOG_FORMAT=json "$@" \
    $pin "$NB_BIN" serve >"$OUT/$name.out" 2>"$OUT/$name.err" &
  NB_PID=$!; PIDS+=("$NB_PID")
  local end=$(( $(date +%s) + 30 ))
  until grep -q "nbgate listening on http://127.0.0.1:$port" "$OUT/$name.out" 2>/dev/null; do
    if ! kill -0 "$NB_PID" 2>/dev/null; then
      local rc=0; wait "$NB_PID" 2>/dev/null || rc=$?
      NB_REASON="\`nbgate serve\` exited with status $rc before listening: $(cat "$OUT/$name.err" "$OUT/$name.out" 2>/dev/null | grep -v '^\s*$' | tail -1 | cut -c1-200)"
      return 1
    fi
    [ "$(date +%s)" -lt "$end" ] || { NB_REASON="no 'nbgate listening on' line within 30 s"; return 1; }
    sleep 0.2
  done
  NB_URL=http://127.0.0.1:$port
  if ! nbgate_health | jq -e '.pool' >/dev/null 2>&1; then
    NB_REASON="GET /hub/health has no pool counts: $(nbgate_health | head -c 200)"; return 1
  fi
  if ! wait_until "$wait" nbgate_warm_at_least "$pool"; then
    NB_REASON="pool.warm did not reach $pool within ${wait}s (health: $(nbgate_health | head -c 200))"; return 1
  fi
}

nbgate_stop() {
  local inst=$1
  [ -z "$NB_PID" ] || kill_pid "$NB_PID"
  cleanup_instance "$inst"
  NB_PID=
}

# nbgate_visit — one ephemeral visit (GET / → 302 + cookie), sets NB_SLOT NB_COOKIE.
nbgate_visit() {
  local out
  out=$($LOADGEN visit --gateway "$NB_URL" --n 1 --timeout 30 2>"$OUT/visit.err")
  NB_SLOT=$(jq -r '.each[0].slot // empty' <<<"$out")
  NB_COOKIE=$(jq -r '.each[0].cookie // empty' <<<"$out")
  if [ -z "$NB_SLOT" ] || [ -z "$NB_COOKIE" ]; then
    NB_REASON="GET / → /user/<slot>/ visit failed: $(jq -r '.error_list[0] // empty' <<<"$out" 2>/dev/null | cut -c1-200)$(tail -1 "$OUT/visit.err")"
    return 1
  fi
}

# ------------------------------------------------------------------ measurement helpers
# Peers of the current phase: PEERS=(direct nginx chp nbgate) with URL bases and headers.
declare -A P_BASE P_H1 P_H2 P_PID
set_peers() {
  PEERS=(direct)
  P_BASE[direct]="http://$UP_ADDR$UP_BASE"; P_H1[direct]="Authorization: token $UP_TOKEN"; P_H2[direct]=""
  if [ -n "${NGINX_PORT:-}" ]; then
    PEERS+=(nginx); P_BASE[nginx]="http://127.0.0.1:$NGINX_PORT$UP_BASE"; P_H1[nginx]=${P_H1[direct]}; P_H2[nginx]=""
    P_PID[nginx]=$NGINX_WORKER
  fi
  if [ -n "${CHP_PORT:-}" ]; then
    PEERS+=(chp); P_BASE[chp]="http://127.0.0.1:$CHP_PORT$UP_BASE"; P_H1[chp]=${P_H1[direct]}; P_H2[chp]=""
    P_PID[chp]=$CHP_PID
  fi
  if [ -n "${RELAY_PORT:-}" ]; then
    PEERS+=(relay); P_BASE[relay]="http://127.0.0.1:$RELAY_PORT$UP_BASE"; P_H1[relay]=${P_H1[direct]}; P_H2[relay]=""
    P_PID[relay]=$RELAY_PID
  fi
  if [ -n "${NB_URL:-}" ] && [ -n "${NB_SLOT:-}" ]; then
    PEERS+=(nbgate); P_BASE[nbgate]="$NB_URL/user/$NB_SLOT/"; P_H1[nbgate]="Cookie: $NB_COOKIE"; P_H2[nbgate]="Origin: $NB_URL"
    P_PID[nbgate]=$NB_PID
  fi
}
hdr_args() { # PEER → -H args for wrk/loadgen, one per line
  local p=$1
  [ -z "${P_H1[$p]}" ] || printf '%s\n' -H "${P_H1[$p]}"
  [ -z "${P_H2[$p]}" ] || printf '%s\n' -H "${P_H2[$p]}"
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { if [ -n "${1:-}" ]; then awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; else echo 0; fi; }
# add_cpu JSON PID TICKS_BEFORE — add the proxy's CPU seconds (user+system) since TICKS_BEFORE
add_cpu() {
  local j=$1 pid=$2 c0=$3 c1
  [ -n "$pid" ] && [ -n "$j" ] || { echo "$j"; return; }
  c1=$(cpu_ticks "$pid")
  jq -c --argjson t "$(( c1 - c0 ))" --argjson hz "$CLK_TCK" '. + {proxy_cpu_s: ($t / $hz)}' <<<"$j"
}

# core_ticks N → "busy steal" clock ticks of core N so far (busy: user, nice, system, irq, softirq)
core_ticks() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8, $9}' /proc/stat; }
# add_core JSON N "BUSY STEAL"-before — add core N's busy and stolen seconds since then
add_core() {
  local j=$1 n=$2 b0 s0 b1 s1
  [ -n "$j" ] || return 0
  read -r b0 s0 <<<"$3"; read -r b1 s1 <<<"$(core_ticks "$n")"
  jq -c --argjson b "$(( b1 - b0 ))" --argjson s "$(( s1 - s0 ))" --argjson hz "$CLK_TCK" --arg n "$n" \
    '. + {("core" + $n + "_busy_s"): ($b / $hz), ("core" + $n + "_steal_s"): ($s / $hz)}' <<<"$j"
}

# wrk_json URL DURATION PEER → the WRKJSON object
wrk_json() {
  local url=$1 d=$2 p=$3 h
  mapfile -t h < <(hdr_args "$p")
  $PIN_LOAD wrk -t1 -c"$CONNS" -d"${d}s" --timeout 10s -s "$here/wrk-json.lua" "${h[@]}" "$url" 2>&1 \
    | sed -n 's/^WRKJSON //p' | tail -1
}

# rotated ROUND PEER… → the peers starting at the ROUND-th (1-based, wrapping): each round
# starts with another peer, so none is always measured right after the same neighbour.
# The host's speed drifts between rounds more than within one, so the report pairs
# peers by round (a ratio per round, then the median).
rotated() {
  local r=$1; shift
  local k=$(( (r - 1) % $# ))
  printf '%s\n' "${@:k+1}" "${@:1:k}"
}

# in_round JSON ROUND [RAW] — the run's JSON with its round (and the file of its raw latencies)
in_round() { jq -c --argjson r "$2" --arg raw "${3:-}" '. + {round: $r} + (if $raw == "" then {} else {raw: $raw} end)' <<<"$1"; }

# fig1 UPSTREAM_LABEL PATH — wrk throughput for every peer, RUNS rounds interleaved.
fig1() {
  local label=$1 path=$2 r p j
  for p in "${PEERS[@]}"; do wrk_json "${P_BASE[$p]}$path" 1 "$p" >/dev/null; done   # warm-up
  for r in $(seq "$HTTP_RUNS"); do
    for p in $(rotated "$r" "${PEERS[@]}"); do
      local pid=${P_PID[$p]:-} c0 k0 k1
      c0=$(cpu_ticks "$pid"); k0=$(core_ticks 0); k1=$(core_ticks 1)
      j=$(wrk_json "${P_BASE[$p]}$path" "$HTTP_DUR" "$p")
      if [ -z "$j" ]; then note 1 "$label/$p run $r: wrk printed no result"; continue; fi
      j=$(add_cpu "$(in_round "$j" "$r")" "$pid" "$c0")
      [ "$CORES" -lt 2 ] || j=$(add_core "$(add_core "$j" 0 "$k0")" 1 "$k1")
      record 1 "$label" "$p" wrk "$j"
      local errs; errs=$(jq '.errors_connect+.errors_read+.errors_write+.errors_status+.errors_timeout' <<<"$j")
      [ "$errs" = 0 ] || note 1 "$label/$p run $r: $errs errors (non-2xx or socket)"
      log "fig1 $label $p run $r: $(jq -r '.rps' <<<"$j") req/s"
    done
  done
}

# fig2 UPSTREAM_LABEL PATH RATE — fixed-rate latency for every peer. Each round, one load
# generator gives every peer but CHP LAT_DUR seconds in 200 ms turns (the order changing
# every cycle), so a stretch of host stalls falls on each of them alike; CHP runs alone
# before or after them (rotated), because at half its maximum its queue drains into the
# next peer's turn on the shared proxy core.
fig2() {
  local label=$1 path=$2 rate=$3 r p j h
  mkdir -p "$OUT/latency"
  local turns=() alone=()
  for p in "${PEERS[@]}"; do if [ "$p" = chp ]; then alone+=("$p"); else turns+=("$p"); fi; done
  for r in $(seq "$LAT_RUNS"); do
    local step
    for step in $( (( r % 2 )) && echo "turns alone" || echo "alone turns"); do
      if [ "$step" = turns ] && [ "${#turns[@]}" -gt 0 ]; then
        local args=()
        for p in $(rotated "$r" "${turns[@]}"); do
          args+=(--peer "$p=${P_BASE[$p]}$path")
          mapfile -t h < <(hdr_args "$p" | grep -v '^-H$')
          local x; for x in "${h[@]}"; do args+=(--peer-header "$p=$x"); done
        done
        j=$($PIN_LOAD "$LOADGEN" http-rate-turns "${args[@]}" --rate "$rate" --duration "$LAT_DUR" \
            --conns "$CONNS" --raw-dir "$OUT/latency" --raw-prefix "$label-" --raw-suffix="-$r.txt" 2>>"$OUT/loadgen.err")
        [ -n "$j" ] || note 2 "$label round $r: the load generator printed no result (loadgen.err)"
        for p in "${turns[@]}"; do
          local one; one=$(jq -c --arg p "$p" '.peers[$p] // empty' <<<"$j" 2>/dev/null)
          [ -n "$one" ] && record 2 "$label" "$p" latency "$(in_round "$one" "$r" "latency/$label-$p-$r.txt")"
          log "fig2 $label $p run $r: p99 $(jq -r '.latency.p99_ms' <<<"${one:-null}") ms at $rate/s (in turns)"
        done
      elif [ "$step" = alone ]; then
        for p in "${alone[@]}"; do
          mapfile -t h < <(hdr_args "$p")
          local raw=latency/$label-$p-$r.txt
          j=$($PIN_LOAD "$LOADGEN" http-rate --url "${P_BASE[$p]}$path" "${h[@]}" --rate "$rate" --duration "$LAT_DUR" \
              --conns "$CONNS" --raw "$OUT/$raw" 2>>"$OUT/loadgen.err")
          [ -n "$j" ] && record 2 "$label" "$p" latency "$(in_round "$j" "$r" "$raw")"
          log "fig2 $label $p run $r: p99 $(jq -r '.latency.p99_ms' <<<"${j:-null}") ms at $rate/s"
        done
      fi
    done
  done
}

ws_base() { echo "${P_BASE[$1]/http:/ws:}"; }

fig3() {
  local label=$1 r p j h
  local peers_ws=("${PEERS[@]}")
  for r in $(seq "$WS_SESSION_RUNS"); do
    for p in $(rotated "$r" "${peers_ws[@]}"); do
      mapfile -t h < <(hdr_args "$p")
      local pid=${P_PID[$p]:-} c0
      c0=$(cpu_ticks "$pid")
      j=$($PIN_LOAD "$LOADGEN" ws-sessions --url "$(ws_base "$p")ws" "${h[@]}" --concurrency 32 --duration "$DUR" 2>>"$OUT/loadgen.err")
      [ -z "$j" ] || j=$(add_cpu "$(in_round "$j" "$r")" "$pid" "$c0")
      [ -n "$j" ] && record 3 "$label" "$p" ws_sessions "$j"
      log "fig3 sessions $p run $r: $(jq -r '.sessions_per_s' <<<"$j")/s, errors $(jq -r '.errors' <<<"$j")"
    done
  done
  for r in $(seq "$RUNS"); do
    for p in "${peers_ws[@]}"; do
      mapfile -t h < <(hdr_args "$p")
      j=$($PIN_LOAD "$LOADGEN" ws-echo --url "$(ws_base "$p")ws" "${h[@]}" --conns "$WS_OPEN" --rate 2000 --duration "$DUR" --warmup 1 2>>"$OUT/loadgen.err")
      [ -n "$j" ] && record 3 "$label" "$p" ws_echo "$j"
      log "fig3 echo $p run $r: open $(jq -r '.open' <<<"$j"), p99 $(jq -r '.echo_latency.p99_ms' <<<"$j") ms"
    done
  done
}

# fig3_idle — RSS per idle WebSocket, 3 rounds (open N, close) = a short soak.
fig3_idle() {
  local label=$1 p j h
  for p in "${PEERS[@]}"; do
    [ "$p" = direct ] && continue
    mapfile -t h < <(hdr_args "$p")
    j=$($PIN_LOAD "$LOADGEN" ws-idle --url "$(ws_base "$p")ws" "${h[@]}" --conns "$WS_IDLE" --pid "${P_PID[$p]}" \
      --rounds "$RUNS" --settle 2 2>>"$OUT/loadgen.err")
    [ -n "$j" ] && record 3 "$label" "$p" ws_idle "$j"
    log "fig3 idle $p: $(jq -r '.bytes_per_conn' <<<"$j") B/conn, opened $(jq -r '.rounds[0].opened' <<<"$j"), soak growth $(jq -r '.soak_growth_kib' <<<"$j") KiB"
  done
}

container_mem_mib() { # CID → memory usage (MiB) from docker stats
  docker stats --no-stream --format '{{.MemUsage}}' "$1" 2>/dev/null | awk '{v=$1; u=v; gsub(/[0-9.]/,"",u); gsub(/[A-Za-z]/,"",v);
    if (u=="GiB") v*=1024; else if (u=="KiB") v/=1024; else if (u=="B") v/=1048576; printf "%.1f", v}'
}

# What nofile allows for idle WebSockets: the proxy holds 2 fds each (client + upstream),
# the upstream 1 (nbgate's containers: hard 8192). Peers reach the container on its own
# address, so docker-proxy is not in the path.
WS_IDLE=$WS_IDLE_WANT
WS_IDLE_WHY=
for cap in "$(( (NOFILE - 300) / 2 )):our nofile $NOFILE, 2 per proxied connection" \
           "8000:nbgate's containers have nofile 8192"; do
  if [ "${cap%%:*}" -lt "$WS_IDLE" ]; then WS_IDLE=${cap%%:*}; WS_IDLE_WHY=${cap#*:}; fi
done
if [ "$WS_IDLE" -lt "$WS_IDLE_WANT" ] && ! skipped static && ! skipped ws; then
  note 3 "idle WebSockets: $WS_IDLE instead of $WS_IDLE_WANT ($WS_IDLE_WHY)"
fi

# ------------------------------------------------------------------ phase A: static upstream
phase_static() {
  log "phase A: static upstream ($STATIC_IMAGE)"
  local inst=${RUN_ID}s
  NB_URL= NB_SLOT=
  if nbgate_start nbgate-static "$inst" "$STATIC_IMAGE" 1 60 && nbgate_visit \
     && adopt_nbgate_container "$inst"; then
    log "nbgate serves $NB_URL, slot $NB_SLOT: every peer proxies to that slot's container"
    record 7 static nbgate rss_idle_kib "$(rss_kib "$NB_PID")"
  else
    NB_STATIC_REASON=${NB_REASON:-"slot container not found"}
    log "nbgate: not measurable ($NB_STATIC_REASON); peers use a container of their own"
    nbgate_stop "$inst"
    NB_URL= NB_SLOT=
    start_upstream static "$STATIC_IMAGE" || die "static upstream failed"
  fi
  STATIC_CID=$UP_CID
  start_nginx static "$UP_ADDR" || true
  start_chp static "$UP_ADDR" "$UP_BASE" || true
  set_peers
  record 7 static nginx rss_idle_kib "$(rss_kib "$NGINX_WORKER")"
  record 7 static chp rss_idle_kib "$(rss_kib "$CHP_PID")"
  record 7 static upstream container_mib "$(container_mem_mib "$STATIC_CID")"

  # Idle WebSockets first, while every proxy is fresh (allocators keep freed memory).
  if ! skipped ws; then fig3_idle static; fi
  if ! skipped http; then
    fig1 static-small api/status
    fig1 static-1MiB big
    # Fixed rate at ~50 % of CHP's max (or of the slowest peer's).
    local ref rate
    ref=$(jq -s '[.[] | select(.figure=="1" and .upstream=="static-small" and .peer=="chp") | .value.rps] | sort | .[length/2|floor] // empty' "$RESULTS")
    [ -n "$ref" ] || ref=$(jq -s '[.[] | select(.figure=="1" and .upstream=="static-small") | .value.rps] | min // 2000' "$RESULTS")
    rate=$(awk -v r="$ref" 'BEGIN {printf "%d", r/2}')
    note 2 "fixed rate: $rate req/s (50 % of CHP's median max $ref req/s on the static upstream)"
    fig2 static-small api/status "$rate"
  fi
  if ! skipped ws; then fig3 static; fi
  if [ -z "$NB_URL" ]; then
    for f in 1 2 3; do nbgate_na "$f" "$NB_STATIC_REASON"; done
  fi
  if ! skipped routes && budget_ok 600; then phase_routes; fi
  kill_pid "$NGINX_PID"; kill_pid "$CHP_PID"; NGINX_PORT= CHP_PORT=
  [ -z "$NB_URL" ] || nbgate_stop "$inst"
  NB_URL=
  docker rm -f "$STATIC_CID" >/dev/null 2>&1 || true
}

# Figure 4: throughput with ROUTES routes ÷ with 1 (same proxy process kind, same upstream).
phase_routes() {
  log "figure 4: route scale ($ROUTES routes)"
  local up=$UP_ADDR base=$UP_BASE
  # nginx: ROUTES prefix locations (random 16-hex slot ids, like nbgate's), plus ours.
  local extra=$OUT/nginx-routes.conf
  python3 - "$ROUTES" "$up" >"$extra" <<'EOF'
import secrets, sys
n, up = int(sys.argv[1]), sys.argv[2]
for _ in range(n):
    print(f"location /user/{secrets.token_hex(8)}/ {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}")
EOF
  local ng1_port=$NGINX_PORT ng1_pid=$NGINX_PID ng1_worker=$NGINX_WORKER
  start_nginx routes "$up" "$extra" || { note 4 "nginx with $ROUTES locations did not start"; }
  local ngN_port=$NGINX_PORT ngN_pid=$NGINX_PID
  # CHP: a second CHP with ROUTES routes added through its API.
  local chp1_port=$CHP_PORT chp1_pid=$CHP_PID chp1_token=$CHP_TOKEN chp1_api=$CHP_API
  start_chp routes "$up" "$base" || note 4 "second CHP did not start"
  local chpN_port=$CHP_PORT chpN_pid=$CHP_PID
  local t0; t0=$(date +%s.%N)
  python3 - "$ROUTES" "$CHP_API" "$CHP_TOKEN" "$up" <<'EOF' || note 4 "adding $ROUTES CHP routes failed"
import http.client, json, secrets, sys
n, api, token, up = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", api, timeout=10)
body = json.dumps({"target": f"http://{up}"})
for i in range(n):
    c.request("POST", f"/api/routes/user/{secrets.token_hex(8)}", body, {"Authorization": f"token {token}"})
    r = c.getresponse(); r.read()
    if r.status >= 300:
        sys.exit(f"route {i}: {r.status}")
EOF
  note 4 "CHP: $ROUTES routes added through its REST API in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
  local r
  P_BASE[nginx1]="http://127.0.0.1:$ng1_port$base"; P_BASE[nginxN]="http://127.0.0.1:$ngN_port$base"
  P_BASE[chp1]="http://127.0.0.1:$chp1_port$base"; P_BASE[chpN]="http://127.0.0.1:$chpN_port$base"
  for k in nginx1 nginxN chp1 chpN; do P_H1[$k]=${P_H1[direct]}; P_H2[$k]=""; done
  for k in nginx1 nginxN chp1 chpN; do wrk_json "${P_BASE[$k]}api/status" 1 "$k" >/dev/null; done
  for r in $(seq "$RUNS"); do
    for k in nginx1 nginxN chp1 chpN; do
      local j; j=$(wrk_json "${P_BASE[$k]}api/status" "$DUR" "$k")
      [ -n "$j" ] && record 4 static-small "$k" wrk "$j"
      log "fig4 $k run $r: $(jq -r '.rps' <<<"$j") req/s"
    done
  done
  # nbgate: a slot is a container, and $ROUTES JupyterLabs do not fit here; the table's
  # own per-request cost with 1 and $ROUTES slots is measured in process on the real
  # routing table and turned into a throughput ratio with figure 1's CPU cost/request.
  local rs=$root/target/release/route-scale
  if [ -n "$NB_BUILD_ERR" ]; then nbgate_na 4 "$NB_BUILD_ERR"
  elif [ -x "$rs" ]; then
    for r in $(seq "$RUNS"); do
      local j; j=$(taskset -c 1 "$rs" 1 "$ROUTES" 2>>"$OUT/route_scale.err")
      [ -n "$j" ] && record 4 static-small nbgate route_lookup "$j"
      log "fig4 nbgate table lookup run $r: $j"
    done
  else nbgate_na 4 "no $rs (cargo build --release --bin route-scale)"; fi
  kill_pid "$ngN_pid"; kill_pid "$chpN_pid"
  NGINX_PORT=$ng1_port NGINX_PID=$ng1_pid NGINX_WORKER=$ng1_worker
  CHP_PORT=$chp1_port CHP_PID=$chp1_pid CHP_TOKEN=$chp1_token CHP_API=$chp1_api
}

# ------------------------------------------------------------------ phase B: JupyterLab upstream
phase_jupyter() {
  log "phase B: JupyterLab upstream ($NOTEBOOK_IMAGE)"
  local inst=${RUN_ID}j
  NB_URL= NB_SLOT=
  if nbgate_start nbgate-jupyter "$inst" "$NOTEBOOK_IMAGE" 1 120 && nbgate_visit \
     && adopt_nbgate_container "$inst"; then
    log "nbgate serves $NB_URL, slot $NB_SLOT"
    # The pool refills after our visit: let that JupyterLab finish starting first.
    wait_until 120 nbgate_warm_at_least 1 || note 1 "nbgate: the pool did not refill after the first visit"
  else
    NB_JUP_REASON=${NB_REASON:-"slot container not found"}
    nbgate_stop "$inst"
    NB_URL= NB_SLOT=
    start_upstream jupyter "$NOTEBOOK_IMAGE" || die "JupyterLab upstream failed"
  fi
  JUP_CID=$UP_CID
  start_nginx jupyter "$UP_ADDR" || true
  start_chp jupyter "$UP_ADDR" "$UP_BASE" || true
  start_relay jupyter "$UP_ADDR" || true
  set_peers
  sleep 2
  record 7 jupyter upstream container_mib "$(container_mem_mib "$JUP_CID")"
  if ! skipped http; then fig1 jupyter api/status; fi
  [ -n "$NB_URL" ] || nbgate_na 1 "(JupyterLab upstream) $NB_JUP_REASON"
  kill_pid "$NGINX_PID"; kill_pid "$CHP_PID"; kill_pid "$RELAY_PID"; NGINX_PORT= CHP_PORT= RELAY_PORT=

  # Figure 5: a pool hit — GET / until /api/kernels answers and a kernel WebSocket is open.
  if ! skipped login; then
    if [ -n "$NB_URL" ]; then
      local r j
      for r in $(seq "$RUNS"); do
        if ! wait_until 120 nbgate_warm_at_least 1; then note 5 "nbgate: pool did not refill for run $r"; break; fi
        sleep 2   # let the new container's start-up CPU settle
        j=$($LOADGEN visit --gateway "$NB_URL" --n 1 --kernel --timeout 60 2>>"$OUT/loadgen.err")
        record 5 jupyter nbgate visit "$j"
        log "fig5 nbgate pool hit run $r: $(jq -c '.each[0] | {login_ms, api_kernels_ms, kernel_ws_ms}' <<<"$j" 2>/dev/null) $(jq -r '.error_list[0] // empty' <<<"$j")"
      done
    else
      nbgate_na 5 "$NB_JUP_REASON"
    fi
  fi
  [ -z "$NB_URL" ] || { record 7 jupyter nbgate rss_after_kib "$(rss_kib "$NB_PID")"; nbgate_stop "$inst"; }
  NB_URL=
  docker rm -f "$JUP_CID" >/dev/null 2>&1 || true
}

# Raw `docker run` + Jupyter ready (figure 5 baseline) and `docker run` latency (hyperfine).
phase_raw_docker() {
  log "figure 5 baseline: raw docker run + JupyterLab ready (5 runs)"
  local r port tok j
  for r in 1 2 3 4 5; do
    port=$(free_port); tok=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    j=$($LOADGEN ready --exec "docker run -d --rm --label nbgate.bench=$RUN_ID --name $RUN_ID-raw$r --user 1000:100 --memory 512m --memory-swap 512m --cpus 1 -p 127.0.0.1:$port:8888 -e NBGATE_BASE_URL=/user/raw/ -e JUPYTER_TOKEN=$tok $NOTEBOOK_IMAGE >/dev/null" \
      --base "http://127.0.0.1:$port/user/raw/" -H "Authorization: token $tok" --kernel --timeout 90 2>>"$OUT/loadgen.err")
    record 5 jupyter raw-docker ready "${j:-null}"
    log "fig5 raw docker run $r: $(jq -c . <<<"$j")"
    docker rm -f "$RUN_ID-raw$r" >/dev/null 2>&1
  done
  # docker run latency alone (create + start of the static image), hyperfine.
  hyperfine --runs 5 --warmup 1 --export-json "$OUT/hyperfine-docker-run.json" --style none \
    "docker rm -f \$(docker run -d --label nbgate.bench=$RUN_ID $STATIC_IMAGE)" >/dev/null 2>&1 \
    && record 6 static raw-docker docker_run_rm_s "$(jq '.results[0].median' "$OUT/hyperfine-docker-run.json")"
}

# Raw parallel create+start of N JupyterLab containers until all are ready (refill baseline;
# without the spare kernel, as phase_refill says).
raw_parallel() {
  local n=$1 i port tok pids=() t0 t1 k0
  t0=$(date +%s.%N); k0=$(core_ticks "")
  for i in $(seq "$n"); do
    port=$(free_port); tok=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    $LOADGEN ready --exec "docker run -d --rm --label nbgate.bench=$RUN_ID --name $RUN_ID-par$n-$i --user 1000:100 --memory 512m --memory-swap 512m --cpus 1 -p 127.0.0.1:$port:8888 -e NBGATE_BASE_URL=/user/raw/ -e NBGATE_SPARE_KERNEL=0 -e JUPYTER_TOKEN=$tok $NOTEBOOK_IMAGE >/dev/null" \
      --base "http://127.0.0.1:$port/user/raw/" -H "Authorization: token $tok" --timeout 180 >"$OUT/par-$n-$i.json" 2>>"$OUT/loadgen.err" &
    pids+=($!)
  done
  local fails=0
  for p in "${pids[@]}"; do wait "$p" || fails=$((fails+1)); done
  t1=$(date +%s.%N)
  record 6 jupyter raw-docker "parallel_$n" "$(add_core "$(jq -nc --argjson n "$n" --argjson f "$fails" --argjson s "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" '{n:$n, failures:$f, seconds:$s}')" "" "$k0")"
  log "fig6 raw parallel $n: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s, $fails failures"
  docker rm -f $(docker ps -aq --filter "label=nbgate.bench=$RUN_ID" --filter "name=$RUN_ID-par$n-") >/dev/null 2>&1
}

# ------------------------------------------------------------------ figure 6: login bursts
phase_bursts() {
  local n pool inst j
  for n in $BURSTS; do
    phase_refill "$n"
    for pool in "$n" $(( n / 2 )); do
      budget_ok $(( 30 + n * 6 )) || { note 6 "burst $n with pool $pool: skipped (time budget BENCH_BUDGET=$BUDGET s)"; continue; }
      log "figure 6: burst of $n with pool $pool"
      inst=${RUN_ID}b$n-$pool
      if ! nbgate_start "nbgate-burst$n-$pool" "$inst" "$NOTEBOOK_IMAGE" "$pool" $(( 60 + pool * 8 )) \
           NBGATE_MAX_CONTAINERS=$(( 2 * n + 2 )); then
        nbgate_na 6 "burst $n, pool $pool: $NB_REASON"; nbgate_stop "$inst"; continue
      fi
      sleep 3
      j=$($LOADGEN visit --gateway "$NB_URL" --n "$n" --kernel --timeout 120 2>>"$OUT/loadgen.err")
      record 6 jupyter nbgate "burst_${n}_pool_${pool}" "${j:-null}"
      log "fig6 nbgate burst $n pool $pool: $(jq -c '{ok, errors, all_usable_ms, logins_per_s}' <<<"$j" 2>/dev/null)"
      nbgate_stop "$inst"
    done
    if budget_ok $(( 20 + n * 4 )); then raw_parallel "$n"; else note 6 "raw parallel $n: skipped (time budget)"; fi
  done
}

# phase_refill N — the pool's refill against raw parallel `docker run` (raw_parallel): N visits
# without kernels take a full pool of N; from their start until the pool is back to N the
# gateway does the baseline's work, N JupyterLab starts. Both without the spare kernel: it
# starts once a server is ready, so a window that ends as all N turn ready (the baseline's,
# all at once) holds little of that work, and one whose containers turn ready in turn
# (the pool's) holds most of it (measured by hand: 2.5 of 25 CPU-seconds).
phase_refill() {
  local n=$1 inst=${RUN_ID}r$1 j t0 t1 k0 s
  budget_ok $(( 30 + n * 4 )) || { note 6 "refill of $n: skipped (time budget BENCH_BUDGET=$BUDGET s)"; return; }
  log "figure 6: refill of $n"
  if ! nbgate_start "nbgate-refill$n" "$inst" "$NOTEBOOK_IMAGE" "$n" $(( 60 + n * 8 )) \
       NBGATE_MAX_CONTAINERS=$(( 2 * n + 2 )) NBGATE_SPARE_KERNEL=0; then
    nbgate_na 6 "refill of $n: $NB_REASON"; nbgate_stop "$inst"; return
  fi
  sleep 3
  t0=$(date +%s.%N); k0=$(core_ticks "")   # the refill starts with the first container taken
  j=$($LOADGEN visit --gateway "$NB_URL" --n "$n" --timeout 120 2>>"$OUT/loadgen.err")
  if [ "$(jq -r '.ok' <<<"${j:-null}" 2>/dev/null)" != "$n" ]; then
    note 6 "refill of $n: not every visit took a container: $(jq -c '{ok, errors, e: .error_list[0:3]}' <<<"${j:-null}" 2>/dev/null)"
  elif wait_until $(( 60 + n * 8 )) nbgate_warm_at_least "$n"; then
    t1=$(date +%s.%N); s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
    record 6 jupyter nbgate "refill_$n" "$(add_core "$(jq -nc --argjson s "$s" '{seconds:$s}')" "" "$k0")"
    log "fig6 nbgate refill of $n: $s s"
  else
    note 6 "nbgate: the pool did not refill to $n in time"
  fi
  nbgate_stop "$inst"
}

# ------------------------------------------------------------------ figure 7: footprint with sessions
phase_footprint() {
  local inst=${RUN_ID}f n=$SESSIONS
  log "figure 7: nbgate RSS with $n sessions (static upstream)"
  if ! nbgate_start nbgate-footprint "$inst" "$STATIC_IMAGE" "$n" $(( 60 + n )) \
       NBGATE_MEMORY_LIMIT=64m NBGATE_MAX_CONTAINERS="$n"; then
    nbgate_na 7 "$n sessions: $NB_REASON"; nbgate_stop "$inst"; return
  fi
  sleep 2
  record 7 static nbgate "rss_warm_${n}_kib" "$(rss_kib "$NB_PID")"
  local j; j=$($LOADGEN visit --gateway "$NB_URL" --n "$n" --timeout 60 2>>"$OUT/loadgen.err")
  sleep 2
  record 7 static nbgate "rss_sessions_${n}_kib" "$(rss_kib "$NB_PID")"
  record 7 static nbgate "sessions_${n}_visit" "$(jq '{ok, errors, error_list: .error_list[0:3]}' <<<"$j" 2>/dev/null || echo null)"
  log "fig7 nbgate with $n sessions: $(( $(rss_kib "$NB_PID") / 1024 )) MiB RSS, $(jq -r .ok <<<"$j") ok"
  nbgate_stop "$inst"
}

# ------------------------------------------------------------------ accounts scenarios
# Both run nbgate in accounts mode, unpinned (every core, as deployed), bcrypt cost 10
# (NBGATE_BCRYPT_COST; the default 12 is 4× slower and would only lengthen the bench).

# nbgate_stop_accounts INSTANCE — stop the gateway, remove its containers, unmount the
# state dir's slot mounts, then remove its volumes and network.
nbgate_stop_accounts() {
  local inst=$1 ids
  [ -z "$NB_PID" ] || kill_pid "$NB_PID"
  NB_PID=
  ids=$(docker ps -aq --filter "label=nbgate.instance=$inst" 2>/dev/null)
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
  unmount_under "$OUT/state-$inst"
  cleanup_instance "$inst"
}

# nbgate_log_problems NAME — ERROR/WARN lines and panics of a gateway's log, as JSON.
nbgate_log_problems() {
  local f=("$OUT/$1.err" "$OUT/$1.out")
  jq -cn --argjson errors "$(cat "${f[@]}" 2>/dev/null | grep -c '"level":"ERROR"')" \
    --argjson warns "$(cat "${f[@]}" 2>/dev/null | grep -c '"level":"WARN"')" \
    --argjson panics "$(cat "${f[@]}" 2>/dev/null | grep -c 'panicked')" \
    --arg first "$(cat "${f[@]}" 2>/dev/null | grep -E '"level":"(ERROR|WARN)"|panicked' | head -5 | cut -c1-400)" \
    '{errors:$errors, warnings:$warns, panics:$panics, first:($first | split("\n") | map(select(length>0)))}'
}

# nbgate_metrics_json — a few counters and gauges of /hub/metrics, as JSON.
nbgate_metrics_json() {
  curl -s --max-time 5 "$NB_URL/hub/metrics" | awk '
    /^nbgate_(recycles_total|websockets_open|websockets_total|registrations_total|logins_total|login_failures_total|queue_waiting|pool_warm|pool_assigned)/ {
      k=$1; gsub(/"/, "", k); printf "%s\"%s\": %s", (n++ ? ", " : "{"), k, $2 }
    END { print (n ? "}" : "{}") }'
}

# mem_parts PID — VmRSS and its parts (KiB) as JSON: anonymous (heap, stacks) and file-backed
# (the binary's code and data pages, paged in on first use).
mem_parts() {
  awk '/^(VmRSS|RssAnon|RssFile|RssShmem|VmHWM):/ {gsub(":", "", $1); printf "%s\"%s\": %s", (n++ ? ", " : "{"), $1, $2}
       END {print (n ? "}" : "null")}' "/proc/$1/status" 2>/dev/null || echo null
}

nbgate_settled() { # POOL — nobody assigned, the pool full again
  local h; h=$(nbgate_health)
  [ "$(jq -r '.pool.assigned' <<<"$h" 2>/dev/null)" = 0 ] && [ "$(jq -r '.pool.warm' <<<"$h" 2>/dev/null)" -ge "$1" ] 2>/dev/null
}

# CPUs a process may run on (the bcrypt Hasher sizes its semaphore to this).
cpus_of() { local l; l=$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$1/status" 2>/dev/null)
  python3 -c 'import sys
n=0
for part in sys.argv[1].split(","):
    if not part: continue
    a,_,b=part.partition("-"); n += (int(b) if b else int(a)) - int(a) + 1
print(n)' "${l:-}"; }

# Attendees (the issue "50 simulated attendees"): staggered arrivals; each registers,
# runs code in a kernel that writes ~/work/attendee-<i>.txt, goes idle until the culler
# recycles the server, logs in again, reads the file back, logs out.
phase_attendees() {
  local inst=${RUN_ID}a n=$ATTENDEES pool=6 cap=40 key j idle_s
  key=bench-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  idle_s=$(python3 -c 'import re,sys; m=re.fullmatch(r"(\d+)([smh]?)", sys.argv[1]); print(int(m[1])*{"":1,"s":1,"m":60,"h":3600}[m[2]])' "$ATTENDEE_IDLE")
  log "attendees: $n attendees ${ATTENDEE_GAP}s apart, idle timeout $ATTENDEE_IDLE, pool $pool, cap $cap"
  if ! NB_UNPINNED=1 nbgate_start nbgate-attendees "$inst" "$NOTEBOOK_IMAGE" "$pool" $(( 60 + pool * 10 )) \
       NBGATE_AUTH=accounts NBGATE_REGISTRATION_KEY="$key" NBGATE_BCRYPT_COST=10 \
       NBGATE_IDLE_TIMEOUT="$ATTENDEE_IDLE" NBGATE_MAX_CONTAINERS="$cap"; then
    nbgate_na attendees "$NB_REASON"; nbgate_stop_accounts "$inst"; return
  fi
  sleep 5   # the pool's start-up work done; the gateway at rest
  local rss0 mem0; rss0=$(rss_kib "$NB_PID"); mem0=$(mem_parts "$NB_PID")
  j=$($LOADGEN attendees --gateway "$NB_URL" --n "$n" --key "$key" --gap "$ATTENDEE_GAP" \
      --idle-wait $(( idle_s + 90 )) --timeout 240 --pid "$NB_PID" --instance "$inst" 2>>"$OUT/loadgen.err")
  [ -n "$j" ] || j=null
  # Everyone has logged out: wait until no server is assigned and the pool is full
  # again (the refill's last starts finished), then let the gateway settle: 15 s, so
  # that tokio's idle blocking threads (kept 10 s) are gone too.
  wait_until 120 nbgate_settled "$pool" || note attendees "the pool did not settle (health: $(nbgate_health | head -c 200))"
  sleep 15
  local rss1 mem1; rss1=$(rss_kib "$NB_PID"); mem1=$(mem_parts "$NB_PID")
  record attendees jupyter nbgate run "$(jq -c 'del(.each)' <<<"$j" 2>/dev/null || echo null)"
  jq -c '.each' <<<"$j" >"$OUT/attendees-each.json" 2>/dev/null
  record attendees jupyter nbgate rss_before_kib "$rss0"
  record attendees jupyter nbgate rss_after_kib "$rss1"
  record attendees jupyter nbgate mem_before "$mem0"
  record attendees jupyter nbgate mem_after "$mem1"
  log "attendees: $(jq -c '{ok, errors, five_xx, files_lost, files_mismatched, usable_p50: .usable.p50_ms, usable_p99: .usable.p99_ms, wall_s}' <<<"$j" 2>/dev/null); RSS $(( rss0 / 1024 )) → $(( rss1 / 1024 )) MiB"
  # A second, smaller round on the same gateway: growth that repeats per attendee is
  # a leak; growth that does not was a one-time cost (code run for the first time,
  # SQLite connections opened under load with their page caches, allocator arenas).
  if [ "$ATTENDEE_ROUND2" -gt 0 ] && budget_ok 120; then
    log "attendees: second round of $ATTENDEE_ROUND2 on the same gateway"
    local j2 rss2 mem2
    j2=$($LOADGEN attendees --gateway "$NB_URL" --n "$ATTENDEE_ROUND2" --first "$n" --key "$key" --gap "$ATTENDEE_GAP" \
        --idle-wait $(( idle_s + 90 )) --timeout 240 --pid "$NB_PID" --instance "$inst" 2>>"$OUT/loadgen.err")
    wait_until 120 nbgate_settled "$pool" || note attendees "round 2: the pool did not settle"
    sleep 15
    rss2=$(rss_kib "$NB_PID"); mem2=$(mem_parts "$NB_PID")
    record attendees jupyter nbgate run2 "$(jq -c 'del(.each)' <<<"$j2" 2>/dev/null || echo null)"
    jq -c '.each' <<<"$j2" >"$OUT/attendees-round2-each.json" 2>/dev/null
    record attendees jupyter nbgate rss_after2_kib "$rss2"
    record attendees jupyter nbgate mem_after2 "$mem2"
    log "attendees round 2: $(jq -c '{ok, errors, five_xx, files_lost, files_mismatched}' <<<"$j2" 2>/dev/null); RSS → $(( rss2 / 1024 )) MiB"
  fi
  record attendees jupyter nbgate metrics "$(nbgate_metrics_json)"
  record attendees jupyter nbgate log "$(nbgate_log_problems nbgate-attendees)"
  record attendees jupyter nbgate settings "$(jq -cn --argjson n "$n" --argjson gap "$ATTENDEE_GAP" --arg idle "$ATTENDEE_IDLE" \
    --argjson cull "$(awk -v s="$idle_s" 'BEGIN { c = s / 10; if (c < 1) c = 1; if (c > 30) c = 30; print c }')" \
    --argjson pool "$pool" --argjson cap "$cap" '{attendees:$n, gap_s:$gap, idle_timeout:$idle, culler_every_s:$cull, pool:$pool, cap:$cap, bcrypt_cost:10}')"
  [ "$(jq -r '.errors // 0' <<<"$j")" = 0 ] || log "attendees: first errors: $(jq -c '.error_list[0:3]' <<<"$j")"
  nbgate_stop_accounts "$inst"
}

# Logins (SECURITY.md "200 concurrent logins"): STORM users log in at once with the cap
# well below; one signed-in user polls its server meanwhile.
phase_logins() {
  local inst=${RUN_ID}l n=$STORM cap=$STORM_CAP pool key pw j b
  pool=$(( cap > 5 ? 4 : cap - 1 ))   # the running user holds one server
  key=bench-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  pw=pw-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  log "logins: registering 1 + $n users (gateway with cap 1: registrations wait in line instead of starting containers)"
  # 1. Accounts, through the register form. nbgate has no CLI to create users, and a
  #    registration signs in and asks for a server: with a cap of 1 that the running
  #    user takes first, the others are queued and no container is started for them.
  if ! NB_UNPINNED=1 nbgate_start nbgate-logins-register "$inst" "$NOTEBOOK_IMAGE" 1 90 \
       NBGATE_AUTH=accounts NBGATE_REGISTRATION_KEY="$key" NBGATE_BCRYPT_COST=10 NBGATE_MAX_CONTAINERS=1; then
    nbgate_na logins "$NB_REASON"; nbgate_stop_accounts "$inst"; return
  fi
  j=$($LOADGEN register-users --gateway "$NB_URL" --key "$key" --prefix runner --n 1 --password "$pw" 2>>"$OUT/loadgen.err")
  b=$($LOADGEN register-users --gateway "$NB_URL" --key "$key" --prefix user --n "$n" --password "$pw" --concurrency 4 2>>"$OUT/loadgen.err")
  record logins jupyter nbgate register "$(jq -c --argjson r "${j:-null}" '{runner: $r, users: .}' <<<"${b:-null}")"
  log "logins: registered $(jq -r '.registered' <<<"$b") of $n in $(jq -r '.seconds | floor' <<<"$b") s, runner $(jq -r '.registered' <<<"$j")"
  if [ "$(jq -r '.registered' <<<"$b")" != "$n" ] || [ "$(jq -r '.registered' <<<"$j")" != 1 ]; then
    nbgate_na logins "registration failed: $(jq -c '.error_list[0:2]' <<<"$b") $(jq -c '.error_list[0:1]' <<<"$j")"
    nbgate_stop_accounts "$inst"; return
  fi
  # 2. The measured gateway: same state, cap STORM_CAP, a pool of 4. A restart keeps
  #    the running user's container and session (they are adopted).
  record logins jupyter nbgate log_register "$(nbgate_log_problems nbgate-logins-register)"
  kill_pid "$NB_PID"; NB_PID=
  if ! NB_UNPINNED=1 nbgate_start nbgate-logins "$inst" "$NOTEBOOK_IMAGE" "$pool" $(( 60 + pool * 10 )) \
       NBGATE_AUTH=accounts NBGATE_REGISTRATION_KEY="$key" NBGATE_BCRYPT_COST=10 NBGATE_MAX_CONTAINERS="$cap"; then
    nbgate_na logins "$NB_REASON"; nbgate_stop_accounts "$inst"; return
  fi
  sleep 3
  local bc; bc=$($LOADGEN bcrypt-time --cost 10 --n 5 2>>"$OUT/loadgen.err")
  record logins - bcrypt cost10 "${bc:-null}"
  # The Hasher's bound (src/auth/password.rs, hashes_at_once): the CPUs it may use, less one.
  local bound; bound=$(cpus_of "$NB_PID"); bound=$(( bound > 1 ? bound - 1 : 1 ))
  record logins jupyter nbgate bcrypt_bound "$bound"
  log "logins: $n logins at once (cap $cap, pool $pool; bcrypt cost 10 $(jq -r .median_ms <<<"$bc") ms, at most $bound at once)"
  j=$($LOADGEN login-storm --gateway "$NB_URL" --prefix user --n "$n" --password "$pw" --runner runner0 \
      --rate 20 --before 10 --after 5 --timeout 180 --pid "$NB_PID" --instance "$inst" --wait-warm "$pool" 2>>"$OUT/loadgen.err")
  [ -n "$j" ] || j=null
  record logins jupyter nbgate storm "$(jq -c 'del(.each)' <<<"$j" 2>/dev/null || echo null)"
  jq -c '.each' <<<"$j" >"$OUT/logins-each.json" 2>/dev/null
  record logins jupyter nbgate metrics "$(nbgate_metrics_json)"
  record logins jupyter nbgate log "$(nbgate_log_problems nbgate-logins)"
  record logins jupyter nbgate settings "$(jq -cn --argjson n "$n" --argjson cap "$cap" --argjson pool "$pool" '{logins:$n, cap:$cap, pool:$pool, bcrypt_cost:10, runner_rate_per_s:20}')"
  log "logins: $(jq -c '{lab, queued, errors, five_xx, all_answered_ms, runner_p99_before: .runner.before.p99_ms, runner_p99_during: .runner.during.p99_ms}' <<<"$j" 2>/dev/null)"
  [ "$(jq -r '.errors // 0' <<<"$j")" = 0 ] || log "logins: first errors: $(jq -c '.error_list[0:3]' <<<"$j")"
  # Control: the same storm with the cap at 1 + the pool, so that no container starts
  # while it lasts (the admitted take warm ones, the refill has no room). What is left
  # is the gateway's own work: bcrypt, the DB, the queue pages.
  if [ "$STORM_CONTROL" = 1 ] && budget_ok 90; then
    local ids; kill_pid "$NB_PID"; NB_PID=
    ids=$(docker ps -aq --filter "label=nbgate.instance=$inst" 2>/dev/null)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1
    unmount_under "$OUT/state-$inst"   # nbgate makes its slots mount again at start
    if NB_UNPINNED=1 nbgate_start nbgate-logins-control "$inst" "$NOTEBOOK_IMAGE" 4 100 \
         NBGATE_AUTH=accounts NBGATE_REGISTRATION_KEY="$key" NBGATE_BCRYPT_COST=10 NBGATE_MAX_CONTAINERS=5; then
      log "logins (control): $n logins at once, cap 5 = the running user + a pool of 4: no container starts meanwhile"
      j=$($LOADGEN login-storm --gateway "$NB_URL" --prefix user --n "$n" --password "$pw" --runner runner0 \
          --rate 20 --before 10 --after 5 --timeout 180 --pid "$NB_PID" --instance "$inst" --wait-warm 4 2>>"$OUT/loadgen.err")
      record logins jupyter nbgate control "$(jq -c 'del(.each)' <<<"${j:-null}" 2>/dev/null || echo null)"
      record logins jupyter nbgate log_control "$(nbgate_log_problems nbgate-logins-control)"
      log "logins (control): $(jq -c '{lab, queued, errors, five_xx, all_posts_answered_ms, runner_p99_before: .runner.before.p99_ms, runner_p99_during: .runner.during.p99_ms}' <<<"$j" 2>/dev/null)"
    else
      note logins "control storm: $NB_REASON"
    fi
  fi
  nbgate_stop_accounts "$inst"
}

# ------------------------------------------------------------------ phase C: JupyterHub

hub_stop_server() { # USER — stop a user's server, wait for its container to go
  curl -s --max-time 60 -X DELETE -H "Authorization: token $HUB_TOKEN" "$HUB_URL/hub/api/users/$1/server" >/dev/null
  wait_until 30 bash -c "[ -z \"\$(docker ps -aq --filter name=^$RUN_ID-hub-$1\$)\" ]" || docker rm -f "$RUN_ID-hub-$1" >/dev/null 2>&1
}

phase_hub() {
  log "phase C: JupyterHub $JUPYTERHUB_VERSION + DockerSpawner + NativeAuthenticator + CHP"
  [ -z "$HUB_SETUP_ERR" ] || { note 5 "JupyterHub: $HUB_SETUP_ERR"; return; }
  local net=$RUN_ID-hub
  docker network create --label "nbgate.bench=$RUN_ID" "$net" >/dev/null || { note 5 "JupyterHub: network create failed"; return; }
  NETWORKS+=("$net")
  local hub_ip; hub_ip=$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' "$net")
  HUB_PORT=$(free_port); HUB_URL=http://127.0.0.1:$HUB_PORT
  HUB_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local dir=$OUT/hub; mkdir -p "$dir"
  (cd "$dir" && exec env PATH="$VENV/bin:$PATH" BENCH_HUB_PORT="$HUB_PORT" BENCH_HUB_IP="$hub_ip" BENCH_HUB_API_PORT="$(free_port)" \
     BENCH_CHP_API_PORT="$(free_port)" BENCH_HUB_NETWORK="$net" BENCH_HUB_IMAGE="$HUB_IMAGE" BENCH_RUN_ID="$RUN_ID" \
     BENCH_HUB_TOKEN="$HUB_TOKEN" BENCH_HUB_STATE="$dir" \
     $PIN_PROXY "$VENV/bin/jupyterhub" -f "$here/jupyterhub_config.py") >"$dir/hub.log" 2>&1 &
  local hub_pid=$!; PIDS+=("$hub_pid")
  if ! wait_until 90 curl -sf "$HUB_URL/hub/api/"; then
    note 5 "JupyterHub did not start: $(grep -E 'ERROR|Error' "$dir/hub.log" | tail -1 | cut -c1-200)"; kill_pid "$hub_pid"; return
  fi
  local chp_pid; chp_pid=$(pgrep -P "$hub_pid" -f configurable-http-proxy | head -1)
  [ -z "$chp_pid" ] || PIDS+=("$chp_pid")
  sleep 3
  record 7 hub jupyterhub rss_idle_kib "$(rss_kib "$hub_pid")"
  [ -z "$chp_pid" ] || record 7 hub chp rss_idle_kib "$(rss_kib "$chp_pid")"

  local users=() r j
  for r in $(seq "$RUNS"); do users+=("solo$r"); done
  local burst_users=()
  for n in $BURSTS; do
    [ "$n" -le 10 ] || continue   # the hub burst is BENCH.md's "10 at once"
    for r in $(seq "$n"); do burst_users+=("burst$r"); done
  done
  local pw; pw=bench-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local all; all=$(IFS=,; echo "${users[*]}${burst_users:+,}${burst_users[*]:-}")
  j=$($LOADGEN hub-signup --hub "$HUB_URL" --users "$all" --password "$pw" 2>&1) || { note 5 "JupyterHub sign-up failed: $(grep -m1 -i error <<<"$j" | cut -c1-300)"; kill_pid "$hub_pid"; return; }

  if ! skipped login; then
    for u in "${users[@]}"; do
      j=$($LOADGEN hub-login --hub "$HUB_URL" --users "$u" --password "$pw" --token "$HUB_TOKEN" --kernel --timeout 120 2>>"$OUT/loadgen.err")
      record 5 jupyter jupyterhub login "${j:-null}"
      log "fig5 JupyterHub cold spawn ($u): $(jq -c '.each[0] | {login_ms, api_kernels_ms, kernel_ws_ms}' <<<"$j" 2>/dev/null) $(jq -r '.error_list[0] // empty' <<<"$j" 2>/dev/null)"
      hub_stop_server "$u"
    done
  fi
  if ! skipped burst && [ ${#burst_users[@]} -gt 0 ]; then
    if budget_ok 120; then
      sleep 2
      j=$($LOADGEN hub-login --hub "$HUB_URL" --users "$(IFS=,; echo "${burst_users[*]}")" --password "$pw" --token "$HUB_TOKEN" --kernel --timeout 180 2>>"$OUT/loadgen.err")
      record 6 jupyter jupyterhub "burst_${#burst_users[@]}" "${j:-null}"
      log "fig6 JupyterHub burst ${#burst_users[@]}: $(jq -c '{ok, errors, all_usable_ms}' <<<"$j" 2>/dev/null)"
      local dels=()
      for u in "${burst_users[@]}"; do
        curl -s --max-time 60 -X DELETE -H "Authorization: token $HUB_TOKEN" "$HUB_URL/hub/api/users/$u/server" >/dev/null &
        dels+=($!)
      done
      for p in "${dels[@]}"; do wait "$p"; done
    else
      note 6 "JupyterHub burst: skipped (time budget)"
    fi
  fi
  kill_pid "$hub_pid"
  [ -z "$chp_pid" ] || kill_pid "$chp_pid"
}

# bcrypt cost 12 on this machine (the floor of an accounts-mode login), from the hub venv's bcrypt.
measure_bcrypt() {
  [ -x "$VENV/bin/python" ] || return 0
  local t
  t=$("$VENV/bin/python" - <<'EOF' 2>/dev/null
import bcrypt, statistics, time
h = bcrypt.hashpw(b"correct horse battery", bcrypt.gensalt(12))
ts = []
for _ in range(3):
    t = time.perf_counter(); bcrypt.checkpw(b"correct horse battery", h); ts.append(time.perf_counter() - t)
print(round(statistics.median(ts) * 1000, 1))
EOF
)
  [ -z "$t" ] || record 5 - bcrypt cost12_ms "$t"
}

# ------------------------------------------------------------------ run
mark metadata
HUB_SETUP_ERR=
if [ -n "$HUB_SETUP_PID" ]; then
  wait "$HUB_SETUP_PID" || HUB_SETUP_ERR=$(cat "$OUT/hub-setup.err" 2>/dev/null || echo "JupyterHub set-up failed")
  mark hub_setup_wait
fi
T_MEASURE=$(date +%s)
SETUP_S=$(( T_MEASURE - T_START ))
log "setup took ${SETUP_S} s; measuring (budget ${BUDGET} s)"
# timed NAME CMD… — run a phase and keep its wall time for the report.
PHASES=$OUT/phases.jsonl
: >"$PHASES"
timed() {
  local name=$1 t0; t0=$(date +%s); shift
  "$@"
  jq -cn --arg n "$name" --argjson s $(( $(date +%s) - t0 )) '{($n): $s}' >>"$PHASES"
}
if ! skipped static; then timed static phase_static; fi
if ! skipped jupyter; then timed jupyter phase_jupyter; fi
if ! skipped login && ! skipped raw; then timed raw phase_raw_docker; fi
if ! skipped burst; then
  if [ -n "$NB_BUILD_ERR" ]; then nbgate_na 6 "$NB_BUILD_ERR"; else timed burst phase_bursts; fi
fi
if ! skipped hub; then
  if budget_ok 150; then timed hub phase_hub; else note 5 "JupyterHub baseline: skipped (time budget BENCH_BUDGET=$BUDGET s)"; fi
fi
timed bcrypt measure_bcrypt
if ! skipped attendees; then
  if [ -n "$NB_BUILD_ERR" ]; then nbgate_na attendees "$NB_BUILD_ERR"
  elif budget_ok 420; then timed attendees phase_attendees
  else note attendees "skipped (time budget BENCH_BUDGET=$BUDGET s)"; fi
fi
if ! skipped logins; then
  if [ -n "$NB_BUILD_ERR" ]; then nbgate_na logins "$NB_BUILD_ERR"
  elif budget_ok 240; then timed logins phase_logins
  else note logins "skipped (time budget BENCH_BUDGET=$BUDGET s)"; fi
fi
if ! skipped footprint; then
  if [ -n "$NB_BUILD_ERR" ]; then nbgate_na 7 "$NB_BUILD_ERR"
  elif budget_ok $(( 60 + SESSIONS )); then timed footprint phase_footprint
  else note 7 "nbgate with $SESSIONS sessions: skipped (time budget)"; fi
fi

jq --argjson s "$(elapsed)" --argjson setup "$SETUP_S" --argjson idle "$WS_IDLE" \
  --argjson phases "$(jq -s 'add // {}' "$PHASES")" --argjson steps "$(jq -s 'add // {}' "$SETUP_STEPS")" \
  '.settings.total_seconds=$s | .settings.setup_seconds=$setup | .settings.setup_steps=$steps
   | .settings.phase_seconds=$phases | .settings.ws_idle_connections=$idle' "$META" >"$META.tmp" && mv "$META.tmp" "$META"
# A partial run (BENCH_ONLY) does not replace the full run's bench/report.md: its report
# stays with its work files.
REPORT_DIR=$here
[ -z "${BENCH_ONLY:-}" ] || REPORT_DIR=$OUT
python3 "$here/report.py" "$OUT" "$REPORT_DIR/report.md" "$REPORT_DIR/report.json" || die "report.py failed"
log "done in $(elapsed) s: ${REPORT_DIR#$root/}/report.md, ${REPORT_DIR#$root/}/report.json (work files in ${OUT#$root/})"
