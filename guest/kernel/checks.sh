#!/bin/sh
# Runs inside the test guest (guest/kernel/kernel.test.ts), chrooted into the default root as PID 1:
# exercises what ordinary images need from the kernel and prints one "CHECK <name> ok|FAIL <why>"
# line each (the probe prints "PROBE ..." lines), then resets the VM so QEMU exits.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

check() {
	name=$1
	shift
	if out=$("$@" 2>&1); then
		echo "CHECK $name ok"
	else
		echo "CHECK $name FAIL $(echo "$out" | tr '\n' ' ' | cut -c1-300)"
	fi
}

# A virtio-blk disk by the serial the host gave it (device order is not guaranteed).
disk_by_serial() {
	for d in /sys/block/vd*; do
		[ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	echo "no disk with serial $1" >&2
	return 1
}

# --- the mounts every image's init (or our agent) sets up ---
check proc mount -t proc proc /proc
check sysfs mount -t sysfs sysfs /sys
check devtmpfs mount -t devtmpfs devtmpfs /dev
check tmpfs mount -t tmpfs -o mode=1777 tmpfs /tmp
check devpts sh -c 'mkdir -p /dev/pts && mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts && ln -sf pts/ptmx /dev/ptmx && test -c /dev/pts/ptmx'
check dev-shm sh -c 'mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 shm /dev/shm'
check mqueue sh -c 'mkdir -p /dev/mqueue && mount -t mqueue mqueue /dev/mqueue'
check binfmt_misc sh -c 'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && test -e /proc/sys/fs/binfmt_misc/register'
check sysctl sh -c 'test "$(sysctl -n net.ipv4.tcp_congestion_control)" = cubic && sysctl -w kernel.domainname=msb >/dev/null'
echo "INFO cmdline $(cat /proc/cmdline)"
echo "INFO config-md5 $(zcat /proc/config.gz | md5sum | cut -d' ' -f1)"
echo "INFO cpus $(nproc) date $(date -u +%Y-%m-%dT%H:%M:%S)"

cgroup2() {
	mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup || return 1
	controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
	for c in cpu memory pids io cpuset; do
		case " $controllers " in *" $c "*) ;; *) echo "controller $c missing (have: $controllers)"; return 1 ;; esac
	done
	echo "+cpu +memory +pids +io +cpuset" >/sys/fs/cgroup/cgroup.subtree_control || return 1
	mkdir /sys/fs/cgroup/box || return 1
	echo 64M >/sys/fs/cgroup/box/memory.max || return 1
	echo 100 >/sys/fs/cgroup/box/pids.max || return 1
	echo "50000 100000" >/sys/fs/cgroup/box/cpu.max || return 1
	echo 50 >/sys/fs/cgroup/box/cpu.weight || return 1
	dev=$(cat /sys/block/"$(basename "$(disk_by_serial msb-ext4)")"/dev) || return 1
	echo "$dev rbps=1048576" >/sys/fs/cgroup/box/io.max || return 1
	test -e /sys/fs/cgroup/box/cgroup.freeze || { echo "no cgroup.freeze"; return 1; }
	test -e /sys/fs/cgroup/box/memory.pressure || { echo "no PSI files"; return 1; }
	sh -c 'echo $$ >/sys/fs/cgroup/box/cgroup.procs && cat /proc/self/cgroup' | grep -qx '0::/box' || { echo "could not move a process into box"; return 1; }
}
check cgroup2 cgroup2

# --- filesystems images are made of ---
overlay() {
	o=/tmp/ov
	mkdir -p $o/lower $o/upper $o/work $o/merged && echo lower >$o/lower/a && echo doomed >$o/lower/b || return 1
	mount -t overlay overlay -o lowerdir=$o/lower,upperdir=$o/upper,workdir=$o/work $o/merged || return 1
	echo upper >$o/merged/c && rm $o/merged/b || return 1
	test "$(cat $o/merged/a)" = lower || { echo "lower file not visible"; return 1; }
	test -f $o/upper/c || { echo "write did not land in upper"; return 1; }
	test -c $o/upper/b || { echo "no whiteout for the deleted file"; return 1; }
}
check overlay overlay

erofs() {
	dev=$(disk_by_serial msb-erofs) || return 1
	mkdir -p /mnt/erofs && mount -t erofs -o ro "$dev" /mnt/erofs || return 1
	test "$(cat /mnt/erofs/hello.txt)" = "hello from erofs" || { echo "wrong content"; return 1; }
	test "$(cat /mnt/erofs/sub/nested.txt)" = nested || return 1
}
check erofs erofs
msb-probe xattr-check /mnt/erofs/hello.txt

# The root filesystem layout msb uses: read-only erofs layer under a tmpfs upper dir.
overlay_on_erofs() {
	r=/tmp/root
	mkdir -p $r/upper $r/work $r/merged || return 1
	mount -t overlay overlay -o lowerdir=/mnt/erofs,upperdir=$r/upper,workdir=$r/work $r/merged || return 1
	echo changed >$r/merged/hello.txt && test "$(cat /mnt/erofs/hello.txt)" = "hello from erofs" &&
		test "$(cat $r/merged/hello.txt)" = changed
}
check overlay-on-erofs overlay_on_erofs
msb-probe acl-fs overlay-xattr-acl /tmp/root/merged

ext4() {
	dev=$(disk_by_serial msb-ext4) || return 1
	mkdir -p /mnt/ext4 && mount -t ext4 "$dev" /mnt/ext4 || return 1
	echo persisted >/mnt/ext4/file && sync && test "$(cat /mnt/ext4/file)" = persisted
}
check ext4 ext4
msb-probe acl-fs ext4-xattr-acl /mnt/ext4

loop() {
	dd if="$(disk_by_serial msb-erofs)" of=/tmp/layer.img bs=64k 2>/dev/null || return 1
	mkdir -p /mnt/loop && mount -t erofs -o loop,ro /tmp/layer.img /mnt/loop && test -f /mnt/loop/hello.txt
}
check loop loop
check fuse test -c /dev/fuse

# --- network ---
check loopback-ipv4 sh -c 'ip link set lo up && ping -c1 -W2 127.0.0.1 >/dev/null'
check loopback-ipv6 sh -c 'ip -6 addr show dev lo | grep -q "inet6 ::1" && ping6 -c1 -W2 ::1 >/dev/null'
routes() {
	ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 &&
		ip -6 addr add fd00::15/64 dev eth0 && ip -6 route add default via fd00::2 || return 1
	ip route | grep -q '^default via 10.0.2.2' && ip -6 route | grep -q '^default via fd00::2'
}
check routes routes

# --- devices the VMM provides ---
virtio_port() {
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat "$p/name" 2>/dev/null)" = agent ] && { echo "INFO agent-port /dev/${p##*/}" >&2; test -c "/dev/${p##*/}"; return; }
	done
	echo "no virtio port named agent"
	return 1
}
check virtio-port virtio_port
check virtio-rng sh -c 'grep -q virtio_rng /sys/class/misc/hw_random/rng_current'
check vsock-dev test -c /dev/vsock
check smp test "$(nproc)" = 2

# --- process isolation with busybox's unshare, as container tools would ---
check unshare-user sh -c 'test "$(unshare -U -r id -u)" = 0'
unshare_net() {
	links=$(unshare -n ip -o link) || return 1
	echo "$links"
	case "$links" in *eth0*) return 1 ;; esac
	case "$links" in *" lo:"*) ;; *) return 1 ;; esac
}
check unshare-net unshare_net
check unshare-pid-mount-uts sh -c 'test "$(unshare -p -f -m -u --mount-proc sh -c "hostname inner && hostname && echo \$\$")" = "inner
1"'

# --- syscalls, sockets, ptys, xattrs: the probe ---
msb-probe all /tmp

dmesg | grep -iE 'warn|error|fail|call trace|bug' | head -n 20 | sed 's/^/INFO dmesg /'
echo MSB-CHECKS-DONE
sync
reboot -f
