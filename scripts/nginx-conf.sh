#!/usr/bin/env bash
# Prints the config of a throwaway nginx for the benchmarks: one worker in
# the foreground, state and temp files under DIR, no access log, files from
# ROOT on each LISTEN address (nginx's `listen` syntax).
#
#   scripts/nginx-conf.sh DIR ROOT LISTEN... > DIR/nginx.conf
#   nginx -p DIR -e DIR/error.log -c DIR/nginx.conf
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: nginx-conf.sh DIR ROOT LISTEN..." >&2; exit 2; }
dir=$1 root=$2
shift 2
mkdir -p "$dir/tmp"
listen=""
for l in "$@"; do listen+="listen $l; "; done
cat <<EOF
daemon off;
master_process off;
error_log $dir/error.log;
pid $dir/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server { ${listen}root $root; }
}
EOF
