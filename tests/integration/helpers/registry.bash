# Start and stop docker-registry instances on 127.0.0.1 for the integration
# tests, each with a generated config in a temp dir:
#
#   reg_start_open NAME [MAXENTRIES]   plain HTTP, no auth        -> NAME_PORT
#   reg_start_basic NAME USER PASS     TLS + htpasswd (bcrypt)    -> NAME_PORT, REG_CA
#   reg_start_token NAME               token auth; a small Python issuer signs
#                                      RS256 JWTs (users: alice/wonderland with
#                                      every action, reader/readonly with pull)
#                                      -> NAME_PORT, NAME_TOKEN_PORT, NAME_TOKEN_LOG
#   faultproxy_start NAME UPSTREAM_PORT fault-injecting proxy    -> NAME_PORT,
#                                      NAME_RULES, NAME_LOG
#   faultproxy_rules NAME JSON         replace the proxy's rules (resets counters)
#   reg_stop_all                       stop everything started here
#
# Everything lives under $REG_TMP (default $BATS_FILE_TMPDIR/registries).
# Processes are stopped by the pids recorded when they were started.

REG_HELPERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REG_PYTHON=${REG_PYTHON:-/usr/bin/python3}

reg_tmp() {
	: "${REG_TMP:=${BATS_FILE_TMPDIR:-/tmp}/registries}"
	export REG_TMP
	mkdir -p "$REG_TMP"
}

# What the suite needs; prints the first missing tool.
reg_missing_tool() {
	local t
	for t in docker-registry openssl htpasswd curl "$REG_PYTHON"; do
		command -v "$t" >/dev/null 2>&1 || { echo "$t"; return 0; }
	done
	"$REG_PYTHON" -c 'import jwt, cryptography' 2>/dev/null || { echo "python3-jwt"; return 0; }
	return 1
}

reg_free_port() {
	"$REG_PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# reg_wait_port PORT: until something accepts connections (10 s at most)
reg_wait_port() {
	local i
	for i in $(seq 100); do
		if "$REG_PYTHON" -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	return 1
}

# _reg_run NAME CMD...: start CMD in the background, remember its pid.
_reg_run() {
	local name=$1
	shift
	mkdir -p "$REG_TMP/$name"
	# fd 3 closed: bats waits for it otherwise
	"$@" >"$REG_TMP/$name/log" 2>&1 3>&- &
	echo $! >"$REG_TMP/$name/pid"
}

_reg_export() {
	printf -v "$1" '%s' "$2"
	export "${1?}"
}

# _reg_config NAME PORT HTTP_EXTRA TOP_EXTRA
_reg_config() {
	local dir="$REG_TMP/$1"
	mkdir -p "$dir/data"
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
  secret: imgbuild-test-secret
$3
$4
EOF
}

reg_start_open() {
	reg_tmp
	local name=$1 maxentries=${2:-} port top=""
	port=$(reg_free_port)
	[ -n "$maxentries" ] && top=$(printf 'catalog:\n  maxentries: %s' "$maxentries")
	_reg_config "$name" "$port" "" "$top"
	_reg_run "$name" docker-registry serve "$REG_TMP/$name/config.yml"
	reg_wait_port "$port"
	_reg_export "${name}_PORT" "$port"
}

# CA + server certificate for 127.0.0.1 / localhost.
reg_make_tls() {
	reg_tmp
	local d="$REG_TMP/tls"
	[ -f "$d/ca.pem" ] && { _reg_export REG_CA "$d/ca.pem"; return 0; }
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=imgbuild test CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=keyCertSign,cRLSign" \
		-keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
		-keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
	printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
		"keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$d/ext.cnf"
	openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
		-CAcreateserial -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
	_reg_export REG_CA "$d/ca.pem"
}

reg_start_basic() {
	reg_tmp
	reg_make_tls
	local name=$1 user=$2 pass=$3 port dir
	port=$(reg_free_port)
	dir="$REG_TMP/$name"
	mkdir -p "$dir"
	htpasswd -Bbn "$user" "$pass" >"$dir/htpasswd"
	_reg_config "$name" "$port" "  tls:
    certificate: $REG_TMP/tls/server.pem
    key: $REG_TMP/tls/server.key" "auth:
  htpasswd:
    realm: imgbuild-test
    path: $dir/htpasswd"
	_reg_run "$name" docker-registry serve "$dir/config.yml"
	reg_wait_port "$port"
	_reg_export "${name}_PORT" "$port"
}

_reg_write_token_server() {
	cat >"$REG_TMP/tokenserver.py" <<'PY'
"""Token issuer for docker-registry's token auth (test use only).

GET /token?service=S&scope=repository:NAME:pull,push... with optional Basic
credentials.  Known users get what they ask for (user "reader" only pull);
anonymous requests get a token without access.  Tokens are RS256 JWTs whose
header names the signing key by its libtrust key id ("kid"), the form
distribution 2.8 checks against its rootcertbundle."""
import base64, hashlib, json, sys, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

key_file, cert_file, users_file, port, issuer, log_file = sys.argv[1:7]
key = open(key_file, "rb").read()
cert = x509.load_pem_x509_certificate(open(cert_file, "rb").read())
der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
kid = ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))
users = {}
for line in open(users_file):
    if ":" in line:
        u, p = line.rstrip("\n").split(":", 1)
        users[u] = p
lock = threading.Lock()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                name, pw = base64.b64decode(auth[6:]).decode().split(":", 1)
            except Exception:
                name, pw = None, None
            if name not in users or users[name] != pw:
                with lock, open(log_file, "a") as f:
                    f.write("DENY %s\n" % name)
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                    "message": "bad credentials"}]})
            user = name
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                parts = one.split(":")
                if len(parts) < 3:
                    continue
                typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
                if user is None:
                    granted = []
                elif user == "reader":
                    granted = [a for a in actions if a == "pull"]
                else:
                    granted = actions
                if granted:
                    access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": issuer, "sub": user or "", "aud": q.get("service", [""])[0],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()),
                  "access": access}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
        if isinstance(token, bytes):
            token = token.decode()
        with lock, open(log_file, "a") as f:
            f.write("TOKEN %s %s\n" % (user or "-", " ".join(q.get("scope", [])) or "-"))
        self.reply(200, {"token": token, "access_token": token, "expires_in": 300})


ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()
PY
}

reg_start_token() {
	reg_tmp
	local name=$1 port tport dir
	port=$(reg_free_port)
	tport=$(reg_free_port)
	dir="$REG_TMP/$name"
	mkdir -p "$dir"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=imgbuild token issuer" \
		-keyout "$dir/token.key" -out "$dir/token.pem" 2>/dev/null
	printf '%s\n' "alice:wonderland" "reader:readonly" >"$dir/users"
	_reg_write_token_server
	: >"$dir/token.log"
	_reg_run "${name}-issuer" "$REG_PYTHON" "$REG_TMP/tokenserver.py" "$dir/token.key" \
		"$dir/token.pem" "$dir/users" "$tport" imgbuild-test-issuer "$dir/token.log"
	_reg_config "$name" "$port" "" "auth:
  token:
    realm: http://127.0.0.1:$tport/token
    service: imgbuild-test-registry
    issuer: imgbuild-test-issuer
    rootcertbundle: $dir/token.pem"
	_reg_run "$name" docker-registry serve "$dir/config.yml"
	reg_wait_port "$tport"
	reg_wait_port "$port"
	_reg_export "${name}_PORT" "$port"
	_reg_export "${name}_TOKEN_PORT" "$tport"
	_reg_export "${name}_TOKEN_LOG" "$dir/token.log"
}

faultproxy_start() {
	reg_tmp
	local name=$1 upstream=$2 port
	port=$(reg_free_port)
	mkdir -p "$REG_TMP/$name"
	: >"$REG_TMP/$name/rules.json"
	: >"$REG_TMP/$name/requests.log"
	_reg_run "$name" "$REG_PYTHON" "$REG_HELPERS_DIR/faultproxy.py" --listen "$port" \
		--upstream "127.0.0.1:$upstream" --rules "$REG_TMP/$name/rules.json" \
		--log "$REG_TMP/$name/requests.log"
	reg_wait_port "$port"
	_reg_export "${name}_PORT" "$port"
	_reg_export "${name}_RULES" "$REG_TMP/$name/rules.json"
	_reg_export "${name}_LOG" "$REG_TMP/$name/requests.log"
}

# faultproxy_rules NAME JSON: new rules (counters start over), empty log
faultproxy_rules() {
	local rules="$REG_TMP/$1/rules.json"
	printf '%s\n' "$2" >"$rules.tmp"
	mv "$rules.tmp" "$rules"
	: >"$REG_TMP/$1/requests.log"
}

reg_stop_all() {
	[ -n "${REG_TMP:-}" ] && [ -d "$REG_TMP" ] || return 0
	local f pid
	for f in "$REG_TMP"/*/pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		kill "$pid" 2>/dev/null || true
	done
	for f in "$REG_TMP"/*/pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$f"
	done
}
