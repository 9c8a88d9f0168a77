/*
 * pid 1 of one flavor-h test's PID namespace (zdtmpy/corpus/pidns.py starts it).
 *
 * It gives the namespace a mount namespace of its own (/ a recursive slave of the host's,
 * /proc showing this PID namespace, a new devpts instance at /dev/pts whose ptmx is
 * /dev/ptmx, as zdtm_ct's), says "ready" on stdout, then reaps every orphan that
 * is reparented to it, so a dumped test's pids are free again for the restore. It ends
 * when stdin reaches EOF (the runner closed its end, or died) or its parent dies; the
 * kernel then kills whatever is left in the namespace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what)
{
	dprintf(STDOUT_FILENO, "error: %s: %s\n", what, strerror(errno));
	return 1;
}

static void reap_all(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	sigset_t chld;
	struct pollfd fds[2];
	int sfd;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
		return fail("prctl(PR_SET_PDEATHSIG)");
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) != 0)
		return fail("sigprocmask");
	sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		return fail("signalfd");
	if (getpid() != 1) {
		errno = EINVAL;
		return fail("not pid 1 of a new PID namespace");
	}
	if (unshare(CLONE_NEWNS) != 0)
		return fail("unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0)
		return fail("making / a recursive slave");
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
		return fail("mounting this namespace's /proc");
	if (mount("zdtm_devpts", "/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666") != 0)
		return fail("mounting a devpts instance at /dev/pts");
	if (mount("/dev/pts/ptmx", "/dev/ptmx", NULL, MS_BIND, NULL) != 0)
		return fail("binding /dev/pts/ptmx on /dev/ptmx");
	if (dprintf(STDOUT_FILENO, "ready\n") < 0)
		return 1;
	close(STDOUT_FILENO);

	fds[0] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
	fds[1] = (struct pollfd){ .fd = sfd, .events = POLLIN };
	for (;;) {
		struct signalfd_siginfo si;
		char buf[64];

		reap_all();
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			return fail("poll");
		while (read(sfd, &si, sizeof(si)) > 0)
			;
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));

			if (n <= 0 && !(n < 0 && errno == EINTR))
				return 0; /* EOF: the runner is done with this namespace */
		}
	}
}
