#!/usr/bin/env bash
# Start a private SpamAssassin spamd for the filter tests (tests/filter/test_spamd.py).
#
# A copy of Debian's /etc/spamassassin (its .pre files load the default plugins) plus a
# local.cf of ours: no network tests (spamd -L, no DNS, no RBLs, Razor or Pyzor), Bayes and
# auto-learn off, so a verdict depends on the message alone. spamd listens on
# 127.0.97.2:783 with two children (two cores) and runs as debian-spamd. Nothing is
# downloaded: the rules are the ones the spamassassin package ships.
# Idempotent: a spamd already answering PING there is left alone.
# Tests find it through MXFLOW_SPAMD (default 127.0.97.2:783).
set -euo pipefail
DIR=/run/mxflow-ci/spamd
HOST=127.0.97.2
PORT=783

ping() { python3 - "$HOST" "$PORT" <<'PY'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        s.sendall(b"PING SPAMC/1.5\r\n\r\n")
        sys.exit(0 if b"PONG" in s.recv(64) else 1)
except OSError:
    sys.exit(1)
PY
}

if ping; then
  echo "spamd: already running on $HOST:$PORT"
  exit 0
fi

mkdir -p "$DIR/home" "$DIR/log"
rm -rf "$DIR/site.new"
cp -r /etc/spamassassin "$DIR/site.new"
cat > "$DIR/site.new/local.cf" <<'CF'
# mxflow CI: the message alone decides; nothing is looked up on the network.
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
dns_available no
CF
rm -rf "$DIR/site" && mv "$DIR/site.new" "$DIR/site"
chown -R debian-spamd "$DIR/home" "$DIR/log"

spamd --daemonize -L -x -u debian-spamd \
  --siteconfigpath="$DIR/site" --helper-home-dir="$DIR/home" \
  --listen="$HOST:$PORT" --max-children=2 --min-children=1 \
  --syslog="$DIR/log/spamd.log" --pidfile="$DIR/spamd.pid"
for _ in $(seq 1 300); do
  if ping; then echo "spamd: running on $HOST:$PORT"; exit 0; fi
  sleep 0.2
done
echo "spamd: did not start; see $DIR/log/spamd.log" >&2
tail -20 "$DIR/log/spamd.log" >&2 || true
exit 1
