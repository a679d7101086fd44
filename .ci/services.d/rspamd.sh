#!/usr/bin/env bash
# Start a private rspamd for the filter tests (tests/filter/test_rspamd.py), offline.
#
# Debian's /etc/rspamd/rspamd.conf with LOCAL_CONFDIR, DBDIR, RUNDIR and LOGDIR in our own
# folder (as bench/peers/rspamd.py does); the scanner on 127.0.97.1:11333, the controller on
# :11334, no proxy. Nothing leaves the machine: rspamd's only nameserver is an NXDOMAIN stub
# on 127.0.97.53 (bench/lib/nxdns.py), so every DNS check and every remote map
# (maps.rspamd.com ...) fails at once on "no such name"; fuzzy_check (outside servers) is
# off; no Redis, so Bayes, neural, ratelimit, greylist and reputation stay off.
# Idempotent: an rspamd already answering /ping is left alone.
# Tests find it through MXFLOW_RSPAMD (default http://127.0.97.1:11333).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=/run/mxflow-ci/rspamd
HOST=127.0.97.1
DNS=127.0.97.53

ping() { python3 - "$HOST" <<'PY'
import http.client, sys
try:
    c = http.client.HTTPConnection(sys.argv[1], 11333, timeout=2)
    c.request("GET", "/ping")
    sys.exit(0 if c.getresponse().read().strip() == b"pong" else 1)
except OSError:
    sys.exit(1)
PY
}

dns_up() { python3 - "$DNS" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x01\x00\x01"
try:
    s.sendto(query, (sys.argv[1], 53))
    sys.exit(0 if s.recv(512)[:2] == b"\x12\x34" else 1)
except OSError:
    sys.exit(1)
PY
}

if ping; then
  echo "rspamd: already running on $HOST:11333"
  exit 0
fi

mkdir -p "$DIR"/local/local.d "$DIR"/local/override.d "$DIR"/db "$DIR"/run "$DIR"/log
if ! dns_up; then
  setsid python3 bench/lib/nxdns.py --listen "$DNS:53" >"$DIR/log/nxdns.log" 2>&1 < /dev/null &
  echo $! > "$DIR/run/nxdns.pid"
  for _ in $(seq 1 50); do dns_up && break; sleep 0.1; done
fi

LD="$DIR/local/local.d"
OD="$DIR/local/override.d"
printf 'dns { nameserver = ["%s:53"]; timeout = 1s; retransmits = 1; }\n' "$DNS" > "$LD/options.inc"
echo 'enabled = false;' > "$LD/fuzzy_check.conf"
echo 'enabled = false;' > "$LD/phishing.conf"
printf 'bind_socket = "%s:11333";\ncount = 1;\n' "$HOST" > "$OD/worker-normal.inc"
printf 'bind_socket = "%s:11334";\nsecure_ip = "127.0.0.0/8";\n' "$HOST" > "$OD/worker-controller.inc"
echo 'count = 0;' > "$OD/worker-proxy.inc"
chown -R _rspamd:_rspamd "$DIR"

rspamd -u _rspamd -g _rspamd -c /etc/rspamd/rspamd.conf \
  --var=LOCAL_CONFDIR="$DIR/local" --var=DBDIR="$DIR/db" \
  --var=RUNDIR="$DIR/run" --var=LOGDIR="$DIR/log"
for _ in $(seq 1 300); do
  if ping; then echo "rspamd: running on $HOST:11333"; exit 0; fi
  sleep 0.2
done
echo "rspamd: did not start; see $DIR/log/rspamd.log" >&2
tail -20 "$DIR/log/rspamd.log" >&2 || true
exit 1
