#!/usr/bin/env bash
# The remote cache's speed, side by side with each protocol's reference client against the
# same server, started here on loopback:
#   1. push and pull of one artifact of SIZE_MIB (default 1024) random bytes: `hone cache push`
#      and `hone cache pull` against `curl -T` and `curl -o` of the same bytes (as a file) to
#      a WebDAV server (Debian's Apache with mod_dav), and against `aws s3 cp` to an S3 server
#      (moto's, from PyPI; HONE_MOTO names its moto_server);
#   2. a no-op push of N (default 1000) cached stages (one listing), and of a directory remote.
#
#   bench/remote.sh            # SIZE_MIB=1024 N=1000 REPEATS=3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
N=${N:-1000}
REPEATS=${REPEATS:-3}
MOTO=${HONE_MOTO:-moto_server}
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
printf "WebDAV, %s MiB: push %ss (curl -T %ss: %.2fx), pull %ss (curl -o %ss: %.2fx); medians of %s\n" \
  "$SIZE_MIB" "$P" "$CP" "$(python3 -c "print($P/$CP)")" "$L" "$CL" "$(python3 -c "print($L/$CL)")" "$REPEATS"
rm -rf "$W/b" "$W/www/"*

# 1b. The same artifact through S3 (moto's server, from PyPI, on loopback), against the AWS
#     CLI's `aws s3 cp` (from PyPI: multipart, 10 parts at once) to and from the same server.
if command -v "$MOTO" >/dev/null && command -v aws >/dev/null; then
  SPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$MOTO" -H 127.0.0.1 -p "$SPORT" > "$W/moto.log" 2>&1 & MOTO_PID=$!
  trap 'kill $APACHE $MOTO_PID 2>/dev/null; rm -rf "$W"' EXIT
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
    AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT="http://127.0.0.1:$SPORT" AWS_ALLOW_HTTP=true
  until curl -s -o /dev/null "$AWS_ENDPOINT"; do sleep 0.2; done
  S3=(aws --endpoint-url "$AWS_ENDPOINT" s3)
  "${S3[@]}" mb s3://bench > /dev/null
  hp=(); hl=(); cp=(); cl=(); gl=()
  for i in $(seq "$REPEATS"); do
    mkdir -p "$W/b"
    hp+=("$(secs "$HONE" cache push --workspace "$W/a" --remote "s3://bench/h$i")")
    rm -rf "$W/b/.hone"
    hl+=("$(secs "$HONE" cache pull --workspace "$W/b" --remote "s3://bench/h$i")")
    cp+=("$(secs "${S3[@]}" cp --quiet "$W/a/.hone/objects/$OBJ/weights.bin" "s3://bench/c$i.bin")")
    cl+=("$(secs "${S3[@]}" cp --quiet "s3://bench/c$i.bin" "$W/c$i.bin")")
    # moto answers unsigned requests: one plain GET of the object, as a second reference.
    gl+=("$(secs curl -sf -o "$W/g$i.bin" "$AWS_ENDPOINT/bench/c$i.bin")")
    rm -rf "$W/c$i.bin" "$W/g$i.bin" "$W/b"
    "${S3[@]}" rm --quiet --recursive "s3://bench/" > /dev/null
  done
  P=$(median "${hp[@]}"); L=$(median "${hl[@]}"); CP=$(median "${cp[@]}"); CL=$(median "${cl[@]}")
  GL=$(median "${gl[@]}")
  printf "S3 (moto), %s MiB: push %ss (aws s3 cp %ss: %.2fx), pull %ss (aws s3 cp %ss: %.2fx; curl -o %ss: %.2fx); medians of %s\n" \
    "$SIZE_MIB" "$P" "$CP" "$(python3 -c "print($P/$CP)")" "$L" "$CL" "$(python3 -c "print($L/$CL)")" \
    "$GL" "$(python3 -c "print($L/$GL)")" "$REPEATS"
  kill $MOTO_PID; unset AWS_ENDPOINT
else
  echo "S3: skipped (needs moto_server and the aws CLI: pip install 'moto[server]' awscli)"
fi
rm -rf "$W/a"

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
