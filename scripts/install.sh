#!/usr/bin/env bash
# Installs l4lb on a VM, to be run by systemd:
#
#   /opt/l4lb/                      the application, production dependencies only
#   /usr/local/bin/l4lb             -> /opt/l4lb/bin/l4lb
#   /etc/l4lb/l4lb.yaml             from conf/l4lb.example.yaml, only if absent
#   /etc/l4lb/admin.token           a random admin token, only if absent
#   /etc/systemd/system/l4lb.{service,socket}
#   user and group l4lb             (system account, no home, no shell)
#
# DESTDIR=/some/dir prefixes every path and skips what only makes sense on the
# real system (the account, chown, systemctl): that is how the tests run it.
# Running it again upgrades the application and keeps the configuration.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/install.sh [--help]

Installs l4lb from this source tree: /opt/l4lb, /usr/local/bin/l4lb,
/etc/l4lb/l4lb.yaml (only if absent), /etc/l4lb/admin.token (only if absent),
the systemd units in /etc/systemd/system, and the l4lb system user.

Environment:
  DESTDIR   install under this directory instead of / (no user, chown or
            systemctl; for packaging and tests)
  NPM       the npm to run (default: npm)

Needs Node.js >= 20 and npm; root unless DESTDIR is set.
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

src=$(cd "$(dirname "$0")/.." && pwd)
dest=${DESTDIR:-}
npm=${NPM:-npm}
app=$dest/opt/l4lb
etc=$dest/etc/l4lb
units=$dest/etc/systemd/system
bindir=$dest/usr/local/bin

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# npm runs on the system's Node.js (>= 20); l4lb itself runs on the Node.js 24
# that npm installs into /opt/l4lb/node_modules (the `node` package).
command -v node >/dev/null || die "node not found: install Node.js >= 20 (for npm) first"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || die "Node.js >= 20 needed to run npm, found $(node --version)"
command -v "$npm" >/dev/null || die "npm not found"
if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (or set DESTDIR to install into a directory)"
fi

# The compiled CLI: built by `npm ci` (prepare); build it if this tree has not.
if [ ! -f "$src/dist/cli/main.js" ]; then
  say "dist/ missing: building it (npx tsc)"
  (cd "$src" && npx --no-install tsc -p tsconfig.json) || die "build failed: run 'npm ci' in $src first"
fi

# The application: a fresh copy, so files removed upstream do not linger.
say "installing the application into $app"
mkdir -p "$dest/opt"
staging=$(mktemp -d "$dest/opt/.l4lb.XXXXXX")
trap 'rm -rf "$staging"' EXIT
cp -R "$src/bin" "$src/dist" "$src/conf" "$staging/"
cp "$src/package.json" "$src/package-lock.json" "$src/README.md" "$src/LICENSE" "$staging/"
# Production dependencies only; scripts off (prepare would need the TypeScript
# compiler), then the one install script l4lb needs: the `node` package's,
# which puts the Node.js binary l4lb runs on into node_modules.
(cd "$staging" && "$npm" ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) ||
  die "npm ci failed in $staging"
(cd "$staging" && "$npm" rebuild node --loglevel=error) || die "installing the Node.js runtime (npm rebuild node) failed in $staging"
chmod 0755 "$staging" "$staging/bin/l4lb" "$staging/bin/l4lb.js"
rm -rf "$app.old"
[ -e "$app" ] && mv "$app" "$app.old"
mv "$staging" "$app"
rm -rf "$app.old"
trap - EXIT

mkdir -p "$bindir"
ln -sfn /opt/l4lb/bin/l4lb "$bindir/l4lb"

# The account the unit runs as.
if [ -z "$dest" ]; then
  getent group l4lb >/dev/null || groupadd --system l4lb
  getent passwd l4lb >/dev/null ||
    useradd --system --gid l4lb --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin l4lb
fi

# Configuration: never overwrite what the operator wrote.
mkdir -p "$etc"
chmod 0755 "$etc"
config=$etc/l4lb.yaml
if [ -e "$config" ]; then
  say "keeping the existing $config"
else
  install -m 0644 "$src/conf/l4lb.example.yaml" "$config"
  say "wrote $config from conf/l4lb.example.yaml: edit its servers"
fi
token=$etc/admin.token
if grep -Eq '^[[:space:]]*token_file:[[:space:]]*/etc/l4lb/admin\.token' "$config" && [ ! -e "$token" ]; then
  (umask 027 && node -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("hex") + "\n")' >"$token")
  chmod 0640 "$token"
  [ -z "$dest" ] && chown root:l4lb "$token"
  say "wrote a random admin token to $token (readable by root and group l4lb)"
fi

# systemd units.
mkdir -p "$units"
install -m 0644 "$src/conf/systemd/l4lb.service" "$units/l4lb.service"
install -m 0644 "$src/conf/systemd/l4lb.socket" "$units/l4lb.socket"
say "installed $units/l4lb.service and l4lb.socket"
if [ -z "$dest" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi

version=$("$app/bin/l4lb" --version)
cat <<EOF

l4lb $version is installed. Next steps:

  1. Edit /etc/l4lb/l4lb.yaml (listeners, pools, servers).
  2. Check it:     l4lb check --config /etc/l4lb/l4lb.yaml
  3. Start it:     systemctl enable --now l4lb
     Status:       l4lb status          (or http://127.0.0.1:9900/)
     Reload:       systemctl reload l4lb (validated first; the running
                   configuration stays if the file is wrong)
     Logs:         journalctl -u l4lb
  4. Optional, restarts that never refuse a connection: list your ports in
     /etc/systemd/system/l4lb.socket (ListenStream= and FileDescriptorName=),
     bind the listeners as 'systemd:NAME', then
                   systemctl enable --now l4lb.socket && systemctl restart l4lb
EOF
