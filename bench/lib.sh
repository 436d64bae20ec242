# bench/lib.sh: shell pieces bench/tls.sh and bench/ws.sh share; sourced.

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
