#!/bin/sh
# hookd launcher: starts a container image's Entrypoint + Cmd inside an OpenNebula VM the
# way `docker run` does. Source: handlers/launcher.sh in hookd.
#
# handlers/start_script.py renders this file for one image: each @WORD@ becomes a
# single-quoted shell literal of a value (or a number hookd computed), the @ENV@ and @ARGV@
# lines become one quoted word per line, and comment lines and indentation are dropped, so
# VM templates carry no comments. The lines between "#@if FEATURE" and "#@fi" are kept only
# for the scripts that need them (see handlers/start_script.py). The START_SCRIPT
# (start_script.sh) installs the result root-only as /run/hookd/NAME.launch and runs it:
#
#   sh THIS start [CHANGED]       from the START_SCRIPT: start (CHANGED=1: restart) the app
#   sh THIS run                   from systemd / OpenRC / detached: become the app
#   sh THIS detached [PID START]  without a service manager: register, become the app
#   sh THIS check                 say how the app would run here
#
# The app gets exactly the image's argv and environment (plus PATH, HOSTNAME and HOME when
# the image sets none), in its WorkingDir, as its User resolved against this guest's
# /etc/passwd and /etc/group like runc resolves it, with Docker's umask and default signal
# handling, detached from one-context: as a systemd service, an OpenRC supervise-daemon
# service or, with neither, a session leader with a pidfile. Never two copies.
#
# Portable POSIX sh for dash, bash and busybox ash: no arrays (the positional parameters are
# the only list), no `local`, no awk, getent or id (the account files are read with `read`),
# and only tools that busybox and Debian's essential packages both have. Image values are
# only ever expanded inside double quotes: never split, globbed or evaluated.

# The image's values. A function, so that run() can restore them after sourcing one_env.
settings() {
	svc=@NAME@
	logfile=@LOG@
	# The image's User as written (for messages), then its user and group parts. hookd
	# wrote numeric parts as canonical decimal ids; a part with a non-digit is a name.
	spec=@USER_SPEC@
	user=@USER@
	group=@GROUP@
	workdir=@WORKDIR@
	# StopSignal as a number (for kill: dash's does not know every name), as systemd's
	# KillSignal and as OpenRC's retry schedule wants it.
	stopsig=@STOP_NUMBER@
	stopname=@STOP_NAME@
	rcsig=@STOP_OPENRC@
	base=/run/hookd/$svc
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	export PATH
}
# app [VAR=VALUE...]: become the app with the image's environment, these variables (env(1)
# applies them in order: the later wins) and the image's argv, which env(1) looks up in the
# image's PATH, as Docker does. HOSTNAME and HOME are the guest's, known at start time.
app() {
	set -- \
		@ENV@ \
		"$@" \
		@ARGV@
	become "$@"
}

#@code
set -u
# Docker's umask for the container process.
umask 022
# Off the context CD that one-context runs us from: it is unmounted after contextualization.
cd / || exit 1

settings
read -r boot_id 2>/dev/null </proc/sys/kernel/random/boot_id || boot_id=none

log() { printf '%s: %s\n' "$svc" "$*" >&2; }
fail() {
	log "$*"
	exit 1
}
# Refuse to start: exit 78 (EX_CONFIG), which the systemd unit does not restart. Said where
# an operator looks: stderr (the journal under systemd, one-context's log from START_SCRIPT),
# the console (OpenNebula's KVM VMs have no serial port: hookd's console=tty0 is the VNC
# screen), written from a subshell: a session leader (we are one under systemd and setsid)
# that opens a tty without O_NOCTTY would make it its controlling terminal; and the guest's
# syslog (or the journal through it) where logger exists.
die() {
	log "$*"
	(log "$*" 2>/dev/console) 2>/dev/null
	if command -v logger >/dev/null 2>&1; then
		logger -t "$svc" -p daemon.err -- "$*" 2>/dev/null
	fi
	exit 78
}

# id_of TEXT: set $id to TEXT as a decimal id in runc's range 0..2147483647, or fail.
id_of() {
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	# Without leading zeros.
	id=${1#"${1%%[1-9]*}"}
	id=${id:-0}
	[ ${#id} -le 10 ] && [ "$id" -le 2147483647 ]
}

# pw n NAME | pw u UID: the first /etc/passwd entry with that name or uid (runc takes the
# first match too). Sets name, uid, gid and home.
pw() {
	[ -r /etc/passwd ] || return 1
	while IFS=: read -r n _ u g _ h _ || [ -n "$n" ]; do
		if [ "$1" = n ]; then [ "$n" = "$2" ]; else id_of "$u" && [ "$id" = "$2" ]; fi ||
			continue
		id_of "$u" || die "malformed /etc/passwd entry '$n'"
		uid=$id
		id_of "$g" || die "malformed /etc/passwd entry '$n'"
		# shellcheck disable=SC2034 # home: used by app(), rendered from @ENV@
		gid=$id name=$n home=${h:-/}
		return 0
	done </etc/passwd
	return 1
}

# gr n NAME: set $id to the gid of the first /etc/group entry named NAME.
# gr m NAME: add to $groups the gid of every /etc/group entry that lists NAME as a member
# (none without /etc/group).
gr() {
	[ -r /etc/group ] || {
		[ "$1" = m ]
		return
	}
	while IFS=: read -r n _ g m || [ -n "$n" ]; do
		if [ "$1" = n ]; then [ "$n" = "$2" ]; else case ,$m, in *,"$2",*) ;; *) false ;; esac; fi ||
			continue
		id_of "$g" || die "malformed /etc/group entry '$n'"
		[ "$1" = m ] || return 0
		case ,$groups, in *,"$id",*) ;; *) groups=$groups,$id ;; esac
	done </etc/group
	[ "$1" = m ]
}

# resolve: uid, gid, supplementary groups and HOME as `docker run` (runc) computes them. A
# numeric user is a uid with or without a passwd entry (without one: gid 0, HOME /); a name
# must exist. An explicit group replaces the primary group and drops the supplementary ones;
# without one the user's /etc/group memberships are added. Docker lists the primary gid
# among the supplementary groups as well.
resolve() {
	# shellcheck disable=SC2034 # home: used by app(), rendered from @ENV@
	name='' home=/
	case $user in
	*[!0-9]*)
		pw n "$user" ||
			die "user '$user' (image User '$spec') is not in this guest's /etc/passwd"
		;;
	*) pw u "$user" || uid=$user gid=0 ;;
	esac
	case $group in
	'')
		groups=$gid
		[ -z "$name" ] || gr m "$name"
		;;
	*[!0-9]*)
		gr n "$group" || die "group '$group' (image User '$spec') is not in /etc/group"
		gid=$id groups=$id
		;;
	*) gid=$group groups=$group ;;
	esac
}

# path_of NAME: set $found to the first executable NAME in $PATH. Tools are always run by
# path: busybox ash may run its own applet for a bare name (FEATURE_PREFER_APPLETS) even
# where util-linux or GNU installed the real one.
path_of() {
	found=$(
		IFS=:
		for d in $PATH; do
			[ -f "$d/$1" ] && [ -x "$d/$1" ] && echo "$d/$1" && break
		done
	)
	[ -n "$found" ]
}

# has TOOL TEXT: $found is TOOL and its --help mentions TEXT (busybox's setpriv, chroot and
# setsid lack the options of the util-linux and GNU ones).
has() {
	path_of "$1" && case $("$found" --help 2>&1) in *"$2"*) ;; *) false ;; esac
}

# su_exact: `busybox su $name` would give exactly our uid, gid and groups.
su_exact() {
	set -- "$uid $gid $groups" "$uid" "$gid" "$groups" "$home" "$name"
	pw n "$name" && groups=$gid && gr m "$name" && [ "$uid $gid $groups" = "$1" ]
	set -- $? "$@"
	uid=$3 gid=$4 groups=$5 home=$6 name=$7
	return "$1"
}

# identity [VERB]: resolve, then pick the first tool in this guest that sets exactly uid,
# gid and groups (with VERB, say which):
#  setpriv  util-linux: --reuid/--regid/--groups and nothing else (no PAM, no env changes).
#           It looks "1000" up as a name before taking it as a number, so it is skipped when
#           /etc/passwd has a user named like our uid or /etc/group a group named like one
#           of our gids (say, a user "1000" with uid 0).
#  chroot   GNU coreutils: --userspec/--groups with '+' prefixes, which it never looks up as
#           names; a chroot to / with --skip-chdir changes nothing else.
#  su       busybox su NAME: initgroups(NAME, its passwd gid), setgid, setuid. Only when the
#           first passwd entry named NAME gives exactly our uid, gid and groups.
#  none     the target is root:root and we are root.
# Otherwise refuse: the app must never run as root when the image asked for another user.
# (gosu, su-exec, runuser and chpst are left out: they do not set exactly Docker's groups,
# resolve names, or go through PAM.)
identity() {
	resolve
	if has setpriv --reuid && ! grep -q "^$uid:" /etc/passwd 2>/dev/null &&
		! grep -Eq "^($(echo "$groups" | tr , '|')):" /etc/group 2>/dev/null; then
		tool=setpriv
	elif has chroot --skip-chdir; then
		tool=chroot
	elif [ -n "$name" ] && path_of busybox && case $name in -*) false ;; esac && su_exact; then
		tool=su
	elif [ "$uid:$gid" = 0:0 ]; then
		tool=none found=
	else
		die "cannot switch to uid $uid gid $gid groups $groups (image User '$spec'): no" \
			"util-linux setpriv (Alpine: apk add setpriv) or GNU chroot, and busybox su" \
			"cannot set exactly these groups. Refusing to run the app as root"
	fi
	tool_path=$found
	[ -z "${1-}" ] || log "app $1 as uid $uid gid $gid groups $groups (via $tool) in $workdir"
}

# starttime PID: print the start time (field 22 of /proc/PID/stat) of a live, non-zombie
# PID. The command name (field 2) may hold spaces and ')': the fields are read from after
# the last ')', the state (field 3) first.
starttime() {
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	read -r st _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ t _ <<EOF
${st##*) }
EOF
	[ "$st" != Z ] && [ -n "$t" ] && echo "$t"
}

# alive FILE: FILE holds "BOOT_ID PID START" of a process of this boot that still runs (its
# start time tells it from a later process that reuses the pid). Sets old_pid, old_start.
alive() {
	old_pid=''
	read -r b p s 2>/dev/null <"$1" && [ "$b" = "$boot_id" ] && [ -n "$s" ] && [ "$(starttime "$p")" = "$s" ] &&
		old_pid=$p old_start=$s
}

# put FILE MODE <TEXT: install TEXT as FILE (MODE) atomically unless FILE holds it already;
# new=1 when it did not.
put() {
	new=0
	{ cat >"$1.new" && chmod "$2" "$1.new"; } || fail "cannot write $1"
	if cmp -s "$1" "$1.new"; then rm -f "$1.new"; else mv -f "$1.new" "$1" && new=1; fi
}

# run: become the app. Everything that may fail is checked before the final exec.
run() {
	set --
	#@if context_env
	if [ -r /var/run/one-context/one_env ]; then
		# Like OpenNebula's /one_entrypoint.sh: source one-context's variables (a root-only
		# file of `export NAME="value"` lines from the VM's CONTEXT, which the VM owner
		# controls as much as START_SCRIPT) and let them override the image's Env. They are
		# collected into the positional parameters and unset again, then settings restores
		# ours, so nothing the file sets changes what is computed below.
		set +u
		# shellcheck source=/dev/null
		. /var/run/one-context/one_env
		set -u
		while IFS= read -r l || [ -n "$l" ]; do
			case $l in "export "[A-Za-z_]*=*) ;; *) continue ;; esac
			n=${l#export }
			n=${n%%=*}
			case $n in *[!A-Za-z0-9_]*) continue ;; esac
			# $n is a plain identifier here, so this eval only reads a variable: v=${NAME}.
			v=
			eval "[ -n \"\${$n+set}\" ] && v=\${$n}" || continue
			set -- "$@" "$n=$v"
			unset -v "$n" 2>/dev/null
		done </var/run/one-context/one_env
		settings
	fi
	#@fi
	identity
	# Docker creates a missing WorkingDir (root-owned, 0755) and starts the app in it.
	{ mkdir -p "$workdir" && cd "$workdir"; } || die "cannot create or enter WorkingDir '$workdir'"
	# shellcheck disable=SC2034 # used by app(), rendered from @ENV@
	hostname=$(uname -n)
	app "$@"
}

# become ENV_OPERANDS...: exec env -i ENV_OPERANDS through the tool picked by identity.
become() {
	path_of env || die "no env(1) in this guest"
	set -- "$found" -i "$@"
		case $tool in
	setpriv) set -- "$tool_path" --reuid="$uid" --regid="$gid" --groups="$groups" -- "$@" ;;
	chroot)
		set -- "$tool_path" --userspec="+$uid:+$gid" \
			--groups="+$(echo "$groups" | sed 's/,/,+/g')" --skip-chdir -- / "$@"
		;;
	su) env_bin=$1 && shift && set -- "$tool_path" su -s "$env_bin" -- "$name" "$@" ;;
	esac
	exec "$@"
}

# detached [PID START]: started without a service manager. Register in the pidfile (the pid
# stays the app's: everything below execs), wait for the copy being replaced to exit (like
# `docker stop`: StopSignal was sent, SIGKILL after 10 s), then become the app.
detached() {
	exec </dev/null >>"$logfile" 2>&1
	{ st=$(starttime $$) && echo "$boot_id $$ $st" >"$base.pid.new" &&
		mv -f "$base.pid.new" "$base.pid"; } || die "cannot write $base.pid"
	i=0
	while [ -n "${1-}" ] && [ "$(starttime "$1")" = "$2" ]; do
		i=$((i + 1))
		[ $i -ne 11 ] || kill -s 9 "$1"
		[ $i -le 15 ] || die "pid $1 does not exit; not starting a second copy"
		sleep 1
	done
	run
}

# The unit / init script below is installed with put, which sets new=1 when it changed. A
# running app is restarted when that or the launcher (changed=1) changed, else left alone.
start_systemd() {
	unit=/run/systemd/system/$svc.service
	[ -f "$unit" ] && existed=1 || existed=0
	# Not enabled, no [Install]: the START_SCRIPT starts it on every boot. Like docker stop:
	# StopSignal to the app, SIGKILL to whatever is left after 10 s. 78: the launcher refused.
	put "$unit" 0644 <<EOF
[Unit]
Description=hookd: app of the container image ($svc)
[Service]
ExecStart=/bin/sh $base.launch run
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=78
KillMode=mixed
KillSignal=$stopname
TimeoutStopSec=10
StandardInput=null
StandardOutput=journal
StandardError=journal
SyslogIdentifier=$svc
EOF
	# systemd loads a new unit file on first use; one it has loaded needs a reload.
	[ "$existed$new" != 11 ] || systemctl daemon-reload || log "systemctl daemon-reload failed"
	action=restart
	[ "$changed$new" != 00 ] || action=start
	# --no-block: only queue the job; one-context runs us from a oneshot unit that must never
	# wait for the app. A name looked up before its file existed can be cached as not-found:
	# then reload once.
	systemctl --no-block "$action" "$svc.service" || {
		systemctl daemon-reload && systemctl --no-block "$action" "$svc.service"
	} || fail "systemctl $action $svc.service failed"
	log "systemctl $action $svc.service queued (journalctl -u $svc)"
}

start_openrc() {
	# Not in a runlevel: the START_SCRIPT starts it on every boot. retry: like docker stop.
	put "/etc/init.d/$svc" 0755 <<EOF
#!/sbin/openrc-run
description="hookd: app of the container image"
supervisor=supervise-daemon
command=/bin/sh
command_args="$base.launch run"
output_log=$logfile
error_log=$logfile
retry="$rcsig/10/KILL/5"
respawn_delay=5
respawn_max=5
respawn_period=120
EOF
	action=restart
	[ "$changed$new" != 00 ] || action=start
	rc-service "$svc" "$action" || fail "rc-service $svc $action failed"
	log "rc-service $svc $action done (output in $logfile)"
}

# Without a service manager: at most one copy, found again through the pidfile.
start_plain() {
	# One start at a time (one-context serialises its own runs; this covers manual ones). A
	# lock left by a run that died is taken over.
	lock=$base.pid.lock
	if ! mkdir "$lock" 2>/dev/null; then
		alive "$lock/owner" && log "another start is in progress (pid $old_pid)" && exit 0
		rm -rf "$lock"
		mkdir "$lock" 2>/dev/null || fail "another start is in progress"
	fi
	trap 'rm -rf "$lock"' EXIT
	echo "$boot_id $$ $(starttime $$)" >"$lock/owner"
	set --
	if alive "$base.pid"; then
		if [ "$changed" = 0 ]; then
			log "already running (pid $old_pid)"
			return
		fi
		log "configuration changed: stopping pid $old_pid ($stopname)"
		kill -s "$stopsig" "$old_pid"
		set -- "$old_pid" "$old_start"
	fi
	# The app's output may hold secrets: a new log file is root-only, like docker logs.
	{ mkdir -p "${logfile%/*}" && (umask 077 && : >>"$logfile"); } || fail "cannot create $logfile"
	# Detach: a new session, stdin /dev/null, output to $logfile, none of one-context's open
	# files. Spawned by a daemonizer run in the foreground, because a shell starts `cmd &`
	# with SIGINT and SIGQUIT ignored and no later shell can undo that; Docker starts the app
	# with default handlers. busybox start-stop-daemon -S -b forks, calls setsid and forks
	# again; its -p names a file that never exists, so no running process is taken for ours.
	exec </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
	if has setsid --fork; then
		"$found" -f /bin/sh "$base.launch" detached "$@" >>"$logfile" 2>&1
	elif path_of busybox && "$found" start-stop-daemon --help >/dev/null 2>&1; then
		"$found" start-stop-daemon -S -b -p "$base.none" -x /bin/sh -- "$base.launch" detached "$@"
	else
		log "no util-linux setsid or busybox start-stop-daemon: the app ignores SIGINT and SIGQUIT"
		path_of setsid || log "no setsid either: the app stays in this session"
		${found:+"$found"} /bin/sh "$base.launch" detached "$@" >>"$logfile" 2>&1 &
	fi
	# Hold the lock until the new copy has registered (a few milliseconds), so a run right
	# after this one finds it. (Fractional sleep: GNU and busybox, not POSIX.)
	i=0
	until read -r b p s 2>/dev/null <"$base.pid" && [ "$b" = "$boot_id" ] && [ "$p" != "${1-}" ]; do
		i=$((i + 1))
		[ $i -le 100 ] || fail "the app did not start, see $logfile"
		sleep 0.05 2>/dev/null || sleep 1
	done
	log "started (pid $p, output in $logfile)"
}

# start [CHANGED]: CHANGED=1 (the default) when the START_SCRIPT installed a new version of
# this file, so a running app must be restarted to pick it up.
start() {
	changed=${1-1} new=0
		identity runs
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		start_systemd
	elif [ -d /run/openrc ] && command -v rc-service >/dev/null &&
		command -v supervise-daemon >/dev/null; then
		start_openrc
	else
		start_plain
	fi
}

case ${1-} in
start) shift && start "$@" ;;
run) run ;;
detached) shift && detached "$@" ;;
check) identity "would run" ;;
*)
	log "usage: sh $base.launch start|run|detached|check"
	exit 2
	;;
esac
