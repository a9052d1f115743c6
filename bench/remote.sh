#!/usr/bin/env bash
# The remote cache's speed, side by side with curl against the same WebDAV server (Debian's
# Apache with mod_dav, started here on loopback):
#   1. push and pull of one artifact of SIZE_MIB (default 1024) random bytes: `hone cache push`
#      and `hone cache pull` against `curl -T` and `curl -o` of the same bytes (as a file);
#   2. a no-op push of N (default 1000) cached stages (one listing), and of a directory remote.
#
#   bench/remote.sh            # SIZE_MIB=1024 N=1000 REPEATS=3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
N=${N:-1000}
REPEATS=${REPEATS:-3}
[ -x /usr/sbin/apache2 ] || { echo "needs Debian's apache2 (apt-get install apache2)" >&2; exit 2; }
(cd "$ROOT" && cargo build --quiet --release --bin hone)
HONE="$ROOT/target/release/hone"
W=$(mktemp -d /tmp/hone-remote-bench.XXXXXX)
chmod 777 "$W"
mkdir -m 777 "$W/www"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
M=/usr/lib/apache2/modules
cat > "$W/httpd.conf" <<EOF
ServerName 127.0.0.1
Listen 127.0.0.1:$PORT
PidFile $W/httpd.pid
ErrorLog $W/error.log
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule dav_module $M/mod_dav.so
LoadModule dav_fs_module $M/mod_dav_fs.so
User nobody
Group nogroup
DavLockDB $W/davlock
DocumentRoot $W/www
LimitRequestBody 0
<Directory $W/www>
  Dav On
  DavDepthInfinity On
  Require all granted
</Directory>
EOF
/usr/sbin/apache2 -f "$W/httpd.conf" -DFOREGROUND & APACHE=$!
trap 'kill $APACHE 2>/dev/null; rm -rf "$W"' EXIT
until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do sleep 0.2; done
URL="http://127.0.0.1:$PORT"
echo "workspace $W; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load: $(cut -d' ' -f1-3 /proc/loadavg)"

secs() { python3 -c 'import sys,time,subprocess; t=time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(f"{time.perf_counter()-t:.3f}")' "$@"; }
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

# 1. One big artifact.
mkdir -p "$W/a"
cat > "$W/a/pipeline.yaml" <<EOF
name: big
stages:
  big: { uses: command, with: { cmd: 'head -c $((SIZE_MIB << 20)) /dev/urandom > \$HONE_OUT/weights.bin' } }
EOF
"$HONE" run "$W/a/pipeline.yaml" > /dev/null 2>&1
OBJ=$(ls "$W/a/.hone/objects")
hp=(); hl=(); cp=(); cl=()
for i in $(seq "$REPEATS"); do
  rm -rf "$W/www/"* && mkdir -p "$W/b"
  hp+=("$(secs "$HONE" cache push --workspace "$W/a" --remote "$URL/h$i/")")
  rm -rf "$W/b/.hone"
  hl+=("$(secs "$HONE" cache pull --workspace "$W/b" --remote "$URL/h$i/")")
  cp+=("$(secs curl -sf -T "$W/a/.hone/objects/$OBJ/weights.bin" "$URL/c$i.bin")")
  cl+=("$(secs curl -sf -o "$W/c$i.bin" "$URL/c$i.bin")")
  rm -f "$W/c$i.bin"
done
P=$(median "${hp[@]}"); L=$(median "${hl[@]}"); CP=$(median "${cp[@]}"); CL=$(median "${cl[@]}")
printf "%s MiB: push %ss (curl -T %ss: %.2fx), pull %ss (curl -o %ss: %.2fx); medians of %s\n" \
  "$SIZE_MIB" "$P" "$CP" "$(python3 -c "print($P/$CP)")" "$L" "$CL" "$(python3 -c "print($L/$CL)")" "$REPEATS"
rm -rf "$W/a" "$W/b" "$W/www/"*

# 2. A no-op push of N cached stages.
mkdir -p "$W/n"
python3 - "$W/n/pipeline.yaml" "$N" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("name: many\nstages:\n")
    for i in range(n):
        f.write(f"  s{i}: {{ uses: command, with: {{ cmd: 'echo {i} > $HONE_OUT/x' }} }}\n")
PY
"$HONE" run "$W/n/pipeline.yaml" > /dev/null 2>&1
"$HONE" cache push --workspace "$W/n" --remote "$URL/n/" > /dev/null
"$HONE" cache push --workspace "$W/n" --remote "$W/dir" > /dev/null
dav=(); dir=()
for i in 1 2 3 4 5; do
  dav+=("$(secs "$HONE" cache push --workspace "$W/n" --remote "$URL/n/")")
  dir+=("$(secs "$HONE" cache push --workspace "$W/n" --remote "$W/dir")")
done
echo "no-op push of $N cached stages: WebDAV $(median "${dav[@]}")s, directory $(median "${dir[@]}")s (medians of 5)"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
