"""A representative slice of the upstream corpus: files, pipes, unix sockets, signals, timers,
memory, IPC, process state. Chosen from tests that upstream's zdtm.py passes on this machine
kind with criu 4.1.1 in flavors h and ns (inet and packet sockets are left out: criu 4.1.1
cannot dump them on kernel 6.18). `--zdtm-corpus-tests slice` and `zdtmpy bench corpus` use it.
"""

SLICE = (
    "pipe00", "pipe01", "fifo", "write_read00", "unlink_fstat00", "unlink_mmap00",
    "file_locks00", "cwd00", "inotify00", "fanotify00", "eventfs00", "epoll",
    "sockets00", "sockets_dgram", "sk-unix-unconn",
    "sigaltstack", "sigpending", "posix_timers", "pthread_timers", "timerfd",
    "maps00", "maps01", "mprotect00", "cow01", "vdso00",
    "shm", "shm-mp", "msgque", "sem",
    "zombie00", "pthread00", "session00", "futex", "env00", "umask00", "selfexe00",
)

# Tests that pass only with what upstream's zdtm_ct gives a test (a private mount, network and
# PID namespace, binfmt_misc kept mounted, upstream's root layout and relative paths, a short
# cwd): in `--zdtm-corpus-tests slice` (so CI keeps them passing), not in the bench's default set.
ISOLATION = ("mnt_ext_manual", "mnt_ext_auto", "binfmt_misc", "macvlan", "cgroup_yard",
             "del_standalone_un_seqpacket", "cgroupns")
