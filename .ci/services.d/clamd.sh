#!/usr/bin/env bash
# Start clamd for the filter tests, with a signature database generated here (EICAR and
# mxflow's own test signatures; nothing is downloaded). Idempotent: a clamd already
# answering on the socket gets the database rewritten and a RELOAD.
# Tests find it through MXFLOW_CLAMD (default unix:/run/mxflow-ci/clamd/clamd.sock).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=/run/mxflow-ci/clamd
SOCK="$DIR/clamd.sock"
DB="$DIR/db"
mkdir -p "$DB"

# Signatures (.ndb: Name:TargetType:Offset:HexSignature; target 0 = any file).
eicar_hex=$(tr -d ' \n' < tests/data/filter/eicar/eicar.com.hex)
marker_hex=$(printf 'MXFLOW-CLAMAV-TEST-SIGNATURE-1c5e9a' | od -An -tx1 | tr -d ' \n')
cat > "$DB/mxflow-test.ndb.new" <<NDB
Eicar-Test-Signature:0:0:${eicar_hex}
Mxflow.Test.Marker:0:*:${marker_hex}
NDB
mv "$DB/mxflow-test.ndb.new" "$DB/mxflow-test.ndb"

cat > "$DIR/clamd.conf" <<CONF
LocalSocket $SOCK
LocalSocketMode 666
FixStaleSocket yes
DatabaseDirectory $DB
PidFile $DIR/clamd.pid
LogFile $DIR/clamd.log
LogTime yes
Foreground no
User root
ScanMail yes
ScanArchive yes
StreamMaxLength 20M
MaxThreads 4
SelfCheck 3600
CONF

ping() { python3 - "$SOCK" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
try:
    s.connect(sys.argv[1]); s.sendall(b"zPING\0")
    sys.exit(0 if s.recv(16).startswith(b"PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

if ping; then
  python3 - "$SOCK" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
s.sendall(b"zRELOAD\0"); s.recv(64)
PY
  echo "clamd: already running on $SOCK (database reloaded)"
  exit 0
fi

clamd --config-file="$DIR/clamd.conf"
for _ in $(seq 1 100); do
  if ping; then echo "clamd: running on $SOCK"; exit 0; fi
  sleep 0.2
done
echo "clamd: did not start; see $DIR/clamd.log" >&2
tail -20 "$DIR/clamd.log" >&2 || true
exit 1
