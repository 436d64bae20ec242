# bench/lib.sh: shell pieces bench/run.sh, bench/ab.sh, bench/tls.sh and bench/ws.sh share; sourced.

# nginx_head CONNECTIONS [LINE...]: the start of an nginx.conf kept under
# $TMP/nginx (one worker, no access log, temporary files in $TMP), up to the
# inside of "http {"; LINEs go to the main context. The caller writes the
# upstreams, the servers and the closing brace.
nginx_head() {
	local conns=$1 d
	shift
	mkdir -p "$TMP/nginx"
	printf 'worker_processes 1;\n'
	for d in "$@"; do printf '%s\n' "$d"; done
	printf 'pid %s/nginx/nginx.pid;\nerror_log %s/nginx/error.log warn;\nevents { worker_connections %s; }\n' "$TMP" "$TMP" "$conns"
	printf 'http {\n    access_log off;\n'
	for d in client_body proxy fastcgi uwsgi scgi; do printf '    %s_temp_path %s/nginx/%s;\n' "$d" "$TMP" "${d#client_}"; done
}

# HAProxy set up as bench/run.sh's other proxies are (its "configs" section).
write_haproxy() { # write_haproxy FILE PORT [THREADS]: bench/run.sh's HAProxy (BACKENDS, DEFER)
	{
		cat <<EOF
global
    nbthread ${3:-1}
    maxconn 8000
defaults
    mode http
    timeout connect 3s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
    unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
frontend fe
    bind 127.0.0.1:$2$([ "$DEFER" = 1 ] && echo ' defer-accept')
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Request-ID %[unique-id] unless { req.hdr(x-request-id) -m found }
    default_backend be
backend be
    balance roundrobin
    option httpchk GET /health
EOF
		local i=0 a
		for a in "${BACKENDS[@]}"; do
			i=$((i + 1))
			echo "    server b$i $a check inter 1s"
		done
	} >"$1"
}
