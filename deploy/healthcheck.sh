#!/usr/bin/env bash
# Health check of the cigw container without curl or wget: one HTTP/1.0 GET through bash's
# /dev/tcp. Exit status 0 when the gateway answers 200, 1 otherwise.
#
#   cigw-healthcheck [PATH]     PATH defaults to /healthz (liveness); /readyz also checks the database
#
# The port comes from CIGW__SERVER__LISTEN (the image sets 0.0.0.0:8080); a wildcard or empty
# host is reached on 127.0.0.1.
set -u
path=${1:-/healthz}
listen=${CIGW__SERVER__LISTEN:-0.0.0.0:8080}
port=${listen##*:}
host=${listen%:*}
host=${host#[}
host=${host%]}
case $host in
    "" | 0.0.0.0 | ::) host=127.0.0.1 ;;
esac

# The braces keep the 2>/dev/null from applying to the rest of the script, as it would on exec.
{ exec 3<>"/dev/tcp/${host}/${port}"; } 2>/dev/null || { echo "cigw-healthcheck: cannot connect to ${host}:${port}" >&2; exit 1; }
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
status=
IFS=' ' read -r -t 4 _version status _reason <&3 || true
exec 3<&-
if [ "$status" = 200 ]; then
    exit 0
fi
echo "cigw-healthcheck: GET ${path} on ${host}:${port} answered ${status:-nothing}" >&2
exit 1
