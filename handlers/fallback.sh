#!/bin/sh
# hookd fallback START_SCRIPT: starts OpenNebula's /one_entrypoint.sh when hookd could not
# read the image config from a registry. Source: handlers/fallback.sh in hookd.
#
# Images imported by OpenNebula >= 6.2 carry their app as /one_entrypoint.sh: its
# docker_downloader wrote the image Env, a `source` of one-context's variables and the
# command there. This script starts it like launcher.sh starts an image's Entrypoint + Cmd,
# but always as root in / (the file ignores User and WorkingDir, as OpenNebula did): with
# the environment `docker run` gives a root process of an image without Env (PATH,
# HOSTNAME, HOME from the first passwd entry of uid 0), Docker's umask and default signal
# handling, detached from one-context as a systemd service, an OpenRC supervise-daemon
# service or, with neither, a session leader with a pidfile in launcher.sh's format (so a
# later launcher.sh for the same service name replaces it). Never two copies: a running
# copy is left alone (it runs the same file), restarted only when its systemd unit or init
# script changed. Without /one_entrypoint.sh it says why and exits 1, installing nothing.
#
# handlers/start_script.py renders it (@WORD@: single-quoted values; no comment lines, no
# indentation) and compresses it: the START_SCRIPT in the template is a one-line stub that
# unpacks and evaluates it (see there). It installs /run/hookd/NAME.launch, which becomes
# the app (see below). Size matters more than anywhere: START_SCRIPT_BASE64 of the default
# fallback must stay within 2,000 characters (tests/start_script/test_weight.py).

svc=@NAME@
logfile=@LOG@
base=/run/hookd/$svc
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 077
log() { printf '%s: %s\n' "$svc" "$*" >&2; }
[ -f /one_entrypoint.sh ] || {
	log "/one_entrypoint.sh not found: nothing to start"
	exit 1
}

# put FILE <TEXT: install TEXT as FILE (umask 077, then MODE) unless it holds it already;
# changed=1 when it did not.
put() {
	cat >"$1.new" && chmod "$2" "$1.new" || exit 1
	if cmp -s "$1" "$1.new"; then rm -f "$1.new"; else mv -f "$1.new" "$1" && changed=1; fi
}
changed=0
mkdir -p /run/hookd && chmod 0700 /run/hookd || exit 1
# The app (written without comments and indentation: it is copied verbatim). With
# arguments PIDFILE LOGFILE it first sends its output to LOGFILE and writes "BOOT_ID PID
# START" to PIDFILE; its start time is field 22 of /proc/$$/stat, since the shell's name
# (field 2) has no spaces.
put "$base.launch" 0600 <<'EOF'
cd /
umask 022
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
h=/
while IFS=: read -r _ _ u _ _ d _; do [ "$u" = 0 ] && h=${d:-/} && break; done </etc/passwd
if [ -n "${1-}" ]; then
exec </dev/null >>"$2" 2>&1
read -r b </proc/sys/kernel/random/boot_id
read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ t _ </proc/$$/stat
echo "$b $$ $t" >"$1"
fi
exec env -i PATH="$PATH" HOSTNAME="$(uname -n)" HOME="$h" /one_entrypoint.sh
EOF
# The service manager's action: restart after a change, else start (a no-op for a running
# service).
a=start
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
	put "/run/systemd/system/$svc.service" 0644 <<EOF
[Service]
ExecStart=/bin/sh $base.launch
Restart=on-failure
RestartSec=5
KillMode=mixed
TimeoutStopSec=10
EOF
	# A unit systemd has loaded needs a reload after a change; a new one does no harm.
	[ $changed = 0 ] || {
		systemctl daemon-reload
		a=restart
	}
	systemctl --no-block $a "$svc"
elif [ -d /run/openrc ] && command -v rc-service >/dev/null &&
	command -v supervise-daemon >/dev/null; then
	put "/etc/init.d/$svc" 0755 <<EOF
#!/sbin/openrc-run
supervisor=supervise-daemon
command=/bin/sh
command_args=$base.launch
output_log=$logfile
error_log=$logfile
retry=TERM/10/KILL/5
respawn_delay=5
EOF
	[ $changed = 0 ] || a=restart
	rc-service "$svc" $a
else
	# As launcher.sh's start_plain, without its lock, its replacement of a running copy and
	# its wait for the new copy to register: one-context runs one START_SCRIPT at a time, a
	# running copy runs the same file, and the new one registers within milliseconds.
	# (The start time, field 22 of /proc/PID/stat, read from after the last ')': the command
	# name, field 2, may hold spaces.)
	read -r b p s 2>/dev/null <"$base.pid" &&
		[ "$b" = "$(cat /proc/sys/kernel/random/boot_id)" ] && st=$(cat "/proc/$p/stat") &&
		read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ t _ <<EOF &&
${st##*) }
EOF
		[ "$t" = "$s" ] && log "already running (pid $p)" && exit 0
	mkdir -p "${logfile%/*}" && : >>"$logfile" || exit 1
	exec </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
	set -- /bin/sh "$base.launch" "$base.pid" "$logfile"
	if setsid --help 2>&1 | grep -q -e --fork; then
		setsid -f "$@"
	elif busybox start-stop-daemon --help >/dev/null 2>&1; then
		busybox start-stop-daemon -S -b -p "$base.none" -x "$@"
	else
		"$@" &
	fi
fi
