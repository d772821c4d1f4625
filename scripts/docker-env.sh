#!/usr/bin/env bash
# Bring up the docker test environment for envsnap (see DESIGN.md, "The
# environment the tests run in"). Idempotent: when everything is already up it
# only checks and prints the status summary (about a second).
#
#   1. installs docker.io, debootstrap and docker-registry with apt when missing
#   2. starts dockerd in the background when `docker info` does not answer
#   3. makes the test base images once (skipped when the tag exists), by pulling them where an
#      image registry answers (a GitHub runner) or by building them from Debian's packages:
#        envsnap-test/debian:bookworm       pulled debian:bookworm-slim, or
#                                           debootstrap --variant=minbase + docker import
#        envsnap-test/python:3.11-bookworm  pulled python:3.11-slim-bookworm (+ git), or
#                                           scripts/base-image/Dockerfile (Debian's python3)
#   4. starts Debian's docker-registry on 127.0.0.1:5000 when nothing answers there
#   5. prints a status summary
#
# Usage: scripts/docker-env.sh [--rebuild]     (--rebuild: rebuild both base images)
#
# No mirror or registry host is named here: the Debian mirror is the one the
# host's apt uses, and apt inside the image build gets the host's sources,
# apt.conf settings and CA bundle as BuildKit secrets (never in a layer).
#
# BuildKit: the docker CLI 23+ refuses `DOCKER_BUILDKIT=1 docker build` without
# the buildx plugin, which Debian bookworm does not package. Debian's docker.io
# ships its own CLI (20.10, /usr/bin/docker) with BuildKit built in; the script
# picks a CLI that can do BuildKit builds and prints it as ENVSNAP_DOCKER_CLI.
#
# Environment:
#   DOCKER_ENV_LOG_DIR     (default /var/log) for dockerd/registry logs
#   ENVSNAP_BASE_SOURCE    auto (default: pull, else debootstrap) | pull | debootstrap
#   ENVSNAP_PULL_PYTHON    (default python:3.11-slim-bookworm) and
#   ENVSNAP_PULL_DEBIAN    (default debian:bookworm-slim): what "pull" pulls
#   ENVSNAP_DEBIAN_MIRROR  the Debian mirror for debootstrap when the host's apt has no bookworm
#                          source (an Ubuntu host; default http://deb.debian.org/debian)
#   ENVSNAP_TEST_PY_TAG, ENVSNAP_TEST_DEB_TAG: the local tags made (defaults above)

set -euo pipefail

PY_TAG="${ENVSNAP_TEST_PY_TAG:-envsnap-test/python:3.11-bookworm}"
DEB_TAG="${ENVSNAP_TEST_DEB_TAG:-envsnap-test/debian:bookworm}"
BASE_SOURCE="${ENVSNAP_BASE_SOURCE:-auto}"
PULL_PYTHON="${ENVSNAP_PULL_PYTHON:-python:3.11-slim-bookworm}"
PULL_DEBIAN="${ENVSNAP_PULL_DEBIAN:-debian:bookworm-slim}"
SUITE="bookworm"
REGISTRY_ADDR="127.0.0.1:5000"
REGISTRY_DIR="/var/lib/envsnap-test-registry"
LOG_DIR="${DOCKER_ENV_LOG_DIR:-/var/log}"
DOCKERD_LOG="$LOG_DIR/envsnap-dockerd.log"
REGISTRY_LOG="$LOG_DIR/envsnap-test-registry.log"
HOST_CA="/etc/ssl/certs/ca-certificates.crt"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE_IMAGE_DIR="$HERE/base-image"

REBUILD=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) REBUILD=1 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker-env: ERROR: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

die() { echo "docker-env: ERROR: $*" >&2; exit 1; }
log() { echo "docker-env: $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (run as root or with sudo)"; }

# One run at a time (parallel test workers may all call this script). The
# daemons started below must not inherit fd 9, or they would hold the lock.
LOCK_FILE="${TMPDIR:-/tmp}/envsnap-docker-env.lock"
exec 9>"$LOCK_FILE" || die "cannot open lock file $LOCK_FILE"
if command -v flock >/dev/null 2>&1; then
  if ! flock -n 9; then
    log "waiting for another docker-env.sh run (lock $LOCK_FILE)"
    flock -w 900 9 || die "timed out waiting for another docker-env.sh run (lock $LOCK_FILE)"
  fi
fi

# ---------------------------------------------------------------- 1. packages
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
# An engine installed some other way (docker-ce on CI runners) is used as it is: installing
# Debian's docker.io beside it would conflict with its containerd.
if ! { command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; }; then
  pkg_installed docker.io || missing+=(docker.io)
fi
case "$BASE_SOURCE" in
  auto|pull|debootstrap) ;;
  *) die "ENVSNAP_BASE_SOURCE=$BASE_SOURCE: use auto, pull or debootstrap" ;;
esac
for pkg in debootstrap docker-registry; do
  pkg_installed "$pkg" || missing+=("$pkg")
done
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  need_root "installing ${missing[*]}"
  log "installing ${missing[*]} with apt"
  apt_log="$(mktemp)"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
    tail -n 20 "$apt_log" >&2
    die "apt-get install ${missing[*]} failed (log above)"
  fi
  rm -f "$apt_log"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd not found after installing docker.io"

# --------------------------------------------------------------- 2. dockerd
docker_up() { timeout 20 docker info >/dev/null 2>&1; }

if docker_up; then
  :
else
  [ -z "${DOCKER_HOST:-}" ] || die "DOCKER_HOST=$DOCKER_HOST is set but that daemon does not answer"
  if [ -S /var/run/docker.sock ] && [ ! -w /var/run/docker.sock ]; then
    die "no permission on /var/run/docker.sock (run as root, or join the docker group)"
  fi
  need_root "starting dockerd"
  mkdir -p "$LOG_DIR"
  log "starting dockerd (log: $DOCKERD_LOG)"
  setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker_up && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      tail -n 15 "$DOCKERD_LOG" >&2
      die "dockerd exited during startup (log above, $DOCKERD_LOG)"
    fi
    sleep 1
  done
  docker_up || die "dockerd did not answer within 60 s (see $DOCKERD_LOG)"
fi

# A CLI that can run BuildKit builds (needed for --secret): the default one when
# it has buildx or is older than 23 (BuildKit built in), else Debian's 20.10 CLI.
buildkit_cli() {
  local cli ver
  for cli in "$(command -v docker)" /usr/bin/docker; do
    [ -x "$cli" ] || continue
    if "$cli" buildx version >/dev/null 2>&1; then echo "$cli"; return 0; fi
    ver="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)"
    case "$ver" in 1[7-9].*|20.*|21.*|22.*) echo "$cli"; return 0 ;; esac
  done
  return 1
}
DOCKER_BK="$(buildkit_cli)" || die "no docker CLI here can run BuildKit builds (need buildx, or Debian's docker.io CLI at /usr/bin/docker)"

# ---------------------------------------------------------- 3. base images
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

if [ "$REBUILD" = 1 ]; then
  docker image rm -f "$PY_TAG" "$DEB_TAG" >/dev/null 2>&1 || true
fi

WORK=""
cleanup() { if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf --one-file-system "$WORK"; fi; }
trap cleanup EXIT

# Reads the host's apt sources and writes, for the Debian suites of $SUITE only:
#   $WORK/mirror        the main archive URI (for debootstrap)
#   $WORK/host.sources  deb822 sources for apt inside the image build
#   $WORK/hosts         "name ip" of each source host the host can resolve
host_apt_sources() {
  local parts
  parts="$(apt-config shell D Dir::Etc::sourceparts/d | sed -n "s/^D='\(.*\)'$/\1/p")"
  local list
  list="$(apt-config shell D Dir::Etc::sourcelist/f | sed -n "s/^D='\(.*\)'$/\1/p")"
  python3 - "$SUITE" "$WORK" "$list" "${parts:-/etc/apt/sources.list.d}" <<'PY'
import glob, os, re, socket, sys
from urllib.parse import urlsplit

suite, work, listfile, parts = sys.argv[1:5]
ok_suite = re.compile(r"^%s(-updates|-security|-backports)?$" % re.escape(suite))
entries = []  # (uri, [suites], [components])

def one_line(path):
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[4:])
        f = line.split()
        if len(f) >= 3:
            entries.append((f[0], [f[1]], f[2:]))

def deb822(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    for stanza in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
                continue
            m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if m:
                key = m.group(1).lower()
                fields[key] = m.group(2)
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            entries.append((uri, fields.get("suites", "").split(),
                            fields.get("components", "").split()))

if os.path.isfile(listfile):
    one_line(listfile)
for path in sorted(glob.glob(os.path.join(parts, "*.list"))):
    one_line(path)
for path in sorted(glob.glob(os.path.join(parts, "*.sources"))):
    deb822(path)

stanzas, mirror, hosts = [], None, {}
for uri, suites, comps in entries:
    suites = [s for s in suites if ok_suite.match(s)]
    if not suites:
        continue
    if mirror is None and suite in suites:
        mirror = uri
    stanzas.append("Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\n"
                   "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
                   % (uri, " ".join(suites), " ".join(comps or ["main"])))
    host = urlsplit(uri).hostname
    if host and host not in hosts:
        try:
            hosts[host] = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
        except OSError:
            pass
if mirror is None:
    # An Ubuntu host (a GitHub runner) has no Debian sources: Debian's own mirror, signed by
    # debian-archive-keyring.
    mirror = os.environ.get("ENVSNAP_DEBIAN_MIRROR") or "http://deb.debian.org/debian"
    stanzas = ["Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n"
               "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" % (mirror, suite, suite)]
    host = urlsplit(mirror).hostname
    try:
        hosts[host] = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except (OSError, TypeError):
        pass
open(os.path.join(work, "mirror"), "w").write(mirror + "\n")
open(os.path.join(work, "host.sources"), "w").write("\n".join(stanzas))
open(os.path.join(work, "hosts"), "w").write(
    "".join("%s %s\n" % kv for kv in hosts.items()))
PY
}

# apt.conf fragment for the build: the host's validity/proxy settings + CA bundle.
host_apt_conf() {
  local key val
  for key in Acquire::Check-Valid-Until Acquire::Check-Date \
             Acquire::http::Proxy Acquire::https::Proxy; do
    val="$(apt-config dump "$key" | sed -n "s/^$key \"\(.*\)\";$/\1/p" | head -n 1)"
    [ -n "$val" ] && printf '%s "%s";\n' "$key" "$val"
  done
  printf 'Acquire::https::CAInfo "/run/secrets/hostca";\n'
  printf 'APT::Install-Recommends "false";\n'
}

# Pull both (a Python image without git gets it in a thin layer, as the Debian-built one has
# it), or make neither: a half-pulled pair would mix sources.
pull_bases() {
  timeout 600 docker pull -q "$PULL_PYTHON" >/dev/null 2>&1 || return 1
  timeout 600 docker pull -q "$PULL_DEBIAN" >/dev/null 2>&1 || return 1
  printf 'FROM %s\nRUN command -v git >/dev/null || { apt-get update \\\n && apt-get install -y --no-install-recommends git \\\n && rm -rf /var/lib/apt/lists/*; }\n' \
      "$PULL_PYTHON" | DOCKER_BUILDKIT=1 "$DOCKER_BK" build -q -t "$PY_TAG" - >/dev/null || return 1
  docker tag "$PULL_DEBIAN" "$DEB_TAG" || return 1
  docker run --rm "$PY_TAG" python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || die "$PULL_PYTHON does not run Python 3.11"
}

if ! image_exists "$DEB_TAG" || ! image_exists "$PY_TAG"; then
  case "$BASE_SOURCE" in
    pull)
      pull_bases || die "pulling $PULL_PYTHON and $PULL_DEBIAN failed (ENVSNAP_BASE_SOURCE=pull)"
      log "pulled $PULL_PYTHON as $PY_TAG and $PULL_DEBIAN as $DEB_TAG" ;;
    auto)
      if pull_bases; then
        log "pulled $PULL_PYTHON as $PY_TAG and $PULL_DEBIAN as $DEB_TAG"
      else
        log "no image registry answers for $PULL_PYTHON: building the base images with debootstrap"
      fi ;;
  esac
fi

if ! image_exists "$DEB_TAG" || ! image_exists "$PY_TAG"; then
  need_root "building the base images"
  command -v python3 >/dev/null 2>&1 || die "python3 is needed on the host to read its apt sources"
  [ -r "$HOST_CA" ] || die "host CA bundle $HOST_CA not readable"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/envsnap-base.XXXXXX")"
  host_apt_sources || die "cannot read the host's apt sources"
  MIRROR="$(cat "$WORK/mirror")"

  # Proxy for debootstrap (wget) when the host's apt uses one.
  apt_proxy="$(apt-config dump Acquire::http::Proxy | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n 1)"
  if [ -n "$apt_proxy" ] && [ -z "${http_proxy:-}" ]; then export http_proxy="$apt_proxy"; fi

  if ! image_exists "$DEB_TAG"; then
    log "debootstrap --variant=minbase $SUITE (host's mirror) ..."
    t0=$SECONDS
    rootfs="$WORK/rootfs"
    if ! debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
      tail -n 20 "$WORK/debootstrap.log" >&2
      [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
      die "debootstrap $SUITE failed (log above)"
    fi
    # Package caches and lists are refetched by any later apt-get update.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
           "$rootfs"/var/lib/apt/lists/* "$rootfs"/debootstrap
    t1=$SECONDS
    tar -C "$rootfs" --numeric-owner -c . \
      | docker import -c 'CMD ["bash"]' -c 'ENV LANG=C.UTF-8' -m "debootstrap --variant=minbase $SUITE" - "$DEB_TAG" >/dev/null \
      || die "docker import of the debootstrap tree failed"
    rm -rf --one-file-system "$rootfs"
    log "built $DEB_TAG: debootstrap $((t1 - t0)) s, import $((SECONDS - t1)) s"
  fi

  if ! image_exists "$PY_TAG"; then
    log "building $PY_TAG from $BASE_IMAGE_DIR ..."
    t0=$SECONDS
    host_apt_conf >"$WORK/apt.conf"
    add_hosts=()
    while read -r name ip; do
      [ -n "$name" ] && add_hosts+=(--add-host "$name:$ip")
    done <"$WORK/hosts"
    network=()
    # A mirror on the host's loopback is reachable from the build only on the host network.
    case "$MIRROR" in
      *://127.*|*://localhost[:/]*|*://\[::1\]*) network=(--network host) ;;
    esac
    if ! DOCKER_BUILDKIT=1 "$DOCKER_BK" build --progress=plain \
          --secret "id=aptsources,src=$WORK/host.sources" \
          --secret "id=aptconf,src=$WORK/apt.conf" \
          --secret "id=hostca,src=$HOST_CA" \
          ${add_hosts[@]+"${add_hosts[@]}"} ${network[@]+"${network[@]}"} \
          --build-arg "BASE=$DEB_TAG" \
          -t "$PY_TAG" "$BASE_IMAGE_DIR" >"$WORK/build.log" 2>&1; then
      tail -n 25 "$WORK/build.log" >&2
      die "docker build of $PY_TAG failed (log above)"
    fi
    docker run --rm "$PY_TAG" python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
      || die "$PY_TAG does not run Python 3.11"
    log "built $PY_TAG: $((SECONDS - t0)) s"
  fi
  cleanup
  WORK=""
fi

# --------------------------------------------------------------- 4. registry
registry_answers() {
  curl -s --noproxy '*' -m 3 -o /dev/null -D - "http://$REGISTRY_ADDR/v2/" 2>/dev/null \
    | grep -qi '^Docker-Distribution-Api-Version:'
}
port_in_use() { curl -s --noproxy '*' -m 3 -o /dev/null "http://$REGISTRY_ADDR/" 2>/dev/null; }

if ! registry_answers; then
  port_in_use && die "something that is not a registry answers on $REGISTRY_ADDR"
  need_root "starting docker-registry"
  command -v docker-registry >/dev/null 2>&1 || die "docker-registry not found"
  mkdir -p "$REGISTRY_DIR/data" "$LOG_DIR"
  cat >"$REGISTRY_DIR/config.yml" <<EOF
# written by envsnap scripts/docker-env.sh: test registry, no auth, loopback only
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
  log "starting docker-registry on $REGISTRY_ADDR (log: $REGISTRY_LOG)"
  setsid nohup docker-registry serve "$REGISTRY_DIR/config.yml" >>"$REGISTRY_LOG" 2>&1 </dev/null 9>&- &
  reg_pid=$!
  for _ in $(seq 1 30); do
    registry_answers && break
    if ! kill -0 "$reg_pid" 2>/dev/null; then
      tail -n 15 "$REGISTRY_LOG" >&2
      die "docker-registry exited during startup (log above)"
    fi
    sleep 0.5
  done
  registry_answers || die "docker-registry did not answer on http://$REGISTRY_ADDR/v2/ within 15 s"
fi

# ----------------------------------------------------------------- 5. summary
fmt='{{.Server.Version}} (API {{.Server.APIVersion}}); client {{.Client.Version}} (API {{.Client.APIVersion}})'
echo "docker engine:       $(docker version --format "$fmt" 2>/dev/null)"
echo "ENVSNAP_DOCKER_CLI=$DOCKER_BK   # BuildKit-capable CLI: $("$DOCKER_BK" version --format '{{.Client.Version}}' 2>/dev/null)"
echo "$DEB_TAG  $(docker image inspect -f '{{.Id}}' "$DEB_TAG")"
echo "$PY_TAG  $(docker image inspect -f '{{.Id}}' "$PY_TAG")"
echo "registry:            http://$REGISTRY_ADDR (push/pull as $REGISTRY_ADDR/NAME:TAG)"
