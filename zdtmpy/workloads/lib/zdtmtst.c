/* zdtmpy C test library: see zdtmtst.h and docs/DESIGN.md "Workload protocol". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sched.h>

#include "zdtmtst.h"

#define ZT_MAX_RECS 4096
#define ZT_MAX_CHILDREN 64
#define ZT_DETAIL 512

struct zt_options zt_opt;
const char *zt_name = "workload";

/* One manifest/check record: pages [start, start+pages) hold gen(seed, index+i). */
struct zt_rec {
	pid_t pid;
	unsigned flags;
	int32_t gen;
	uint64_t seed;
	uint64_t index;
	uintptr_t start;
	size_t pages;
	char label[ZT_LABEL_MAX];
};

/*
 * Records of the whole tree live in one MAP_SHARED page range so that records
 * a child publishes after fork() are visible to the init, which writes the
 * manifest.  Setup is sequential (a parent waits for each child's setup), so
 * no locking is needed.
 */
struct zt_shared {
	int nrecs;
	char child_fail[ZT_DETAIL];	/* first failure a child reported */
	struct zt_rec rec[ZT_MAX_RECS];
};

static struct zt_shared *shared;
static int ready_fd = -1;		/* test -> launcher "ready" pipe (ns mode) */
static int setup_fd = -1;		/* child -> parent "setup done" pipe, during setup */
static int is_ready;
static int cur_step;
static pid_t children[ZT_MAX_CHILDREN];
static int nchildren;
static char my_fail[ZT_DETAIL];		/* first failure of this process */
static int nfails;

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t steps_requested;
static sigset_t zt_sigs;		/* SIGTERM + SIGUSR1: blocked outside sigsuspend */

static sigjmp_buf check_jmp;
static volatile sig_atomic_t check_armed;

/* ---- output ---------------------------------------------------------- */

/* Whole lines with one write(2): stdio buffers would be duplicated by fork(). */
static void out_line(int fd, const char *prefix, const char *fmt, va_list ap)
{
	char buf[1024];
	int n = 0, m;

	if (prefix)
		n = snprintf(buf, sizeof(buf), "%s", prefix);
	m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	while (write(fd, buf, n) < 0 && errno == EINTR)
		;
}

static void out_fmt(int fd, const char *prefix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	out_line(fd, prefix, fmt, ap);
	va_end(ap);
}

void zt_info(const char *fmt, ...)
{
	char prefix[128];
	va_list ap;

	snprintf(prefix, sizeof(prefix), "%s[%d]: ", zt_name, (int)getpid());
	va_start(ap, fmt);
	out_line(2, prefix, fmt, ap);
	va_end(ap);
}

void zt_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	out_line(1, "SKIP: ", fmt, ap);
	va_end(ap);
	_exit(0);
}

void zt_fatal(const char *fmt, ...)
{
	char prefix[128];
	va_list ap;

	snprintf(prefix, sizeof(prefix), "FAIL: %s[%d]: ", zt_name, (int)getpid());
	va_start(ap, fmt);
	out_line(1, prefix, fmt, ap);
	va_end(ap);
	_exit(1);
}

void zt_fatal_errno(const char *fmt, ...)
{
	char msg[512];
	int err = errno;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	zt_fatal("%s: %s", msg, strerror(err));
}

void zt_fail(const char *fmt, ...)
{
	char msg[ZT_DETAIL];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!nfails++)
		snprintf(my_fail, sizeof(my_fail), "%s", msg);
	zt_info("fail: %s", msg);
}

/* ---- files and options ----------------------------------------------- */

/* Write "<value>\n" to path atomically: temp file in the same directory + rename. */
static int write_atomic(const char *path, const char *text)
{
	char tmp[4096];
	size_t len = strlen(text);
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (close(fd) || rename(tmp, path)) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int write_pidfile(pid_t pid)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	return write_atomic(zt_opt.pidfile, buf);
}

static void usage(void)
{
	fprintf(stderr, "usage: %s --pidfile=PATH --outfile=PATH --manifest=PATH "
		"[--no-ns] [workload args...]\n", zt_name);
	exit(2);
}

static void parse_options(int argc, char **argv)
{
	int i;

	zt_opt.argv = calloc(argc + 1, sizeof(char *));
	if (!zt_opt.argv)
		usage();
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strncmp(a, "--pidfile=", 10))
			zt_opt.pidfile = a + 10;
		else if (!strncmp(a, "--outfile=", 10))
			zt_opt.outfile = a + 10;
		else if (!strncmp(a, "--manifest=", 11))
			zt_opt.manifest = a + 11;
		else if (!strcmp(a, "--no-ns"))
			zt_opt.no_ns = 1;
		else
			zt_opt.argv[zt_opt.argc++] = argv[i];
	}
	if (!zt_opt.pidfile || !*zt_opt.pidfile || !zt_opt.outfile || !*zt_opt.outfile ||
	    !zt_opt.manifest || !*zt_opt.manifest)
		usage();
}

const char *zt_aux_path(const char *suffix)
{
	char *p;

	if (asprintf(&p, "%s.%s", zt_opt.outfile, suffix) < 0)
		zt_fatal("out of memory building a path for %s", suffix);
	return p;
}

void *zt_mmap(size_t pages, int prot, int flags, int fd, off_t off, const char *what)
{
	void *p = mmap(NULL, pages * PG_PAGE_SIZE, prot, flags, fd, off);

	if (p == MAP_FAILED)
		zt_fatal_errno("mmap %zu pages for %s", pages, what);
	return p;
}

int zt_make_file(const char *path, size_t pages, int byte)
{
	char page[PG_PAGE_SIZE];
	size_t i;
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		zt_fatal_errno("create %s", path);
	memset(page, byte, sizeof(page));
	for (i = 0; i < pages; i++)
		if (write(fd, page, sizeof(page)) != sizeof(page))
			zt_fatal_errno("write %s", path);
	return fd;
}

/*
 * 1 when the other side wrote its byte and then closed the pipe, else 0.
 * Waiting for EOF too means the writer no longer holds the pipe when we go
 * on, so nobody can see it as a stray fd once the pidfile exists.
 */
static int wait_ready(int fd)
{
	int got = 0;
	ssize_t n;
	char c;

	for (;;) {
		n = read(fd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return got;
		got = 1;
	}
}

/* ---- launcher -------------------------------------------------------- */

/*
 * The launcher is outside the dumped tree: it waits for "ready", publishes the
 * host pid of the namespace init, then mirrors the init's exit status.  It may
 * die with the framework (PDEATHSIG); the init must not have a pdeathsig since
 * criu would restore it under a parent that exits.
 */
static void launcher(void)
{
	pid_t ppid = getppid(), pid;
	int p[2], st, n;

	if (unshare(CLONE_NEWPID))
		zt_fatal_errno("launcher: unshare(CLONE_NEWPID) (use --no-ns without CAP_SYS_ADMIN)");
	if (pipe2(p, O_CLOEXEC))
		zt_fatal_errno("launcher: pipe");
	pid = fork();
	if (pid < 0)
		zt_fatal_errno("launcher: fork");
	if (pid == 0) {
		close(p[0]);
		ready_fd = p[1];
		return;
	}
	close(p[1]);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != ppid)	/* the framework died before PDEATHSIG was set */
		kill(pid, SIGKILL);

	n = wait_ready(p[0]);
	close(p[0]);
	if (n == 1 && write_pidfile(pid)) {
		out_fmt(1, NULL, "FAIL: %s launcher: write pidfile %s: %s", zt_name,
			zt_opt.pidfile, strerror(errno));
		kill(pid, SIGKILL);
	}

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			_exit(1);
	if (WIFEXITED(st))
		_exit(WEXITSTATUS(st));
	_exit(128 + WTERMSIG(st));
}

/* ---- signals --------------------------------------------------------- */

static void on_term(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void on_usr1(int sig)
{
	(void)sig;
	steps_requested++;
}

static void on_fault(int sig)
{
	if (check_armed)
		siglongjmp(check_jmp, sig);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void setup_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&zt_sigs);
	sigaddset(&zt_sigs, SIGTERM);
	sigaddset(&zt_sigs, SIGUSR1);
	/* Blocked except inside sigsuspend(): no wakeup can be lost. */
	sigprocmask(SIG_BLOCK, &zt_sigs, NULL);
	sa.sa_mask = zt_sigs;
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_fault;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

enum { EV_STOP = 1, EV_STEP };

static int wait_event(void)
{
	sigset_t old, wait_mask;

	for (;;) {
		/* Re-block every time: a restore may hand back another mask. */
		sigprocmask(SIG_BLOCK, &zt_sigs, &old);
		if (stop_requested)
			return EV_STOP;
		if (steps_requested > 0) {
			steps_requested--;
			return EV_STEP;
		}
		wait_mask = old;
		sigdelset(&wait_mask, SIGTERM);
		sigdelset(&wait_mask, SIGUSR1);
		sigsuspend(&wait_mask);
	}
}

/* ---- init ------------------------------------------------------------ */

void zt_init(int argc, char **argv)
{
	const char *slash;

	if (argc > 0 && argv[0]) {
		slash = strrchr(argv[0], '/');
		zt_name = slash ? slash + 1 : argv[0];
	}
	/* Whatever we inherited beyond stdio would end up in the images. */
	close_range(3, ~0U, 0);
	parse_options(argc, argv);
	if (!zt_opt.no_ns)
		launcher();

	/*
	 * Own session: criu refuses a tree whose session leader lives outside
	 * it (or outside its PID namespace).  Fails harmlessly if we already
	 * lead a process group in --no-ns mode.
	 */
	setsid();
	setup_signals();
	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		zt_fatal_errno("mmap the record table");
}

/* ---- records --------------------------------------------------------- */

static void rec_add(pid_t pid, uintptr_t start, size_t pages, int gen, uint64_t seed,
		    uint64_t index, const char *label, unsigned flags)
{
	struct zt_rec *r;

	if (shared->nrecs >= ZT_MAX_RECS)
		zt_fatal("more than %d manifest records (label %s)", ZT_MAX_RECS, label);
	r = &shared->rec[shared->nrecs];
	r->pid = pid;
	r->flags = flags;
	r->gen = gen;
	r->seed = seed;
	r->index = index;
	r->start = start;
	r->pages = pages;
	snprintf(r->label, sizeof(r->label), "%s", label);
	shared->nrecs++;
}

void zt_region(void *addr, size_t pages, int gen, uint64_t seed, uint64_t index,
	       const char *label, unsigned flags)
{
	if (!pagegen_name(gen))
		zt_fatal("region %s: bad generator %d", label, gen);
	rec_add(getpid(), (uintptr_t)addr, pages, gen, seed, index, label, flags);
}

struct zt_area *zt_area_new(void *addr, size_t pages, const char *label)
{
	struct zt_area *a = calloc(1, sizeof(*a));
	size_t i;

	if (!a || !(a->pg = calloc(pages, sizeof(*a->pg))))
		zt_fatal("out of memory for area %s (%zu pages)", label, pages);
	a->addr = addr;
	a->pages = pages;
	snprintf(a->label, sizeof(a->label), "%s", label);
	for (i = 0; i < pages; i++)
		a->pg[i].gen = -1;
	return a;
}

void zt_area_note(struct zt_area *a, size_t first, size_t n, int gen, uint64_t seed,
		  uint64_t index)
{
	size_t i;

	if (first > a->pages || n > a->pages - first || !pagegen_name(gen))
		zt_fatal("area %s: bad range %zu+%zu or generator %d", a->label, first, n, gen);
	for (i = 0; i < n; i++) {
		a->pg[first + i].gen = gen;
		a->pg[first + i].seed = seed;
		a->pg[first + i].index = index + i;
	}
}

void zt_area_gen(struct zt_area *a, size_t first, size_t n, int gen, uint64_t seed,
		 uint64_t index)
{
	zt_area_note(a, first, n, gen, seed, index);
	pagegen_fill(gen, seed, index, a->addr + first * PG_PAGE_SIZE, n);
}

void zt_area_publish(const struct zt_area *a, unsigned flags)
{
	pid_t me = getpid();
	size_t i, j;
	int k, w;

	/* Drop this process's earlier records of the area, keeping the order of the rest. */
	for (k = 0, w = 0; k < shared->nrecs; k++) {
		struct zt_rec *r = &shared->rec[k];

		if (r->pid == me && !strcmp(r->label, a->label))
			continue;
		if (w != k)
			shared->rec[w] = *r;
		w++;
	}
	shared->nrecs = w;

	/* One record per run of pages whose gen/seed match and whose indexes follow on. */
	for (i = 0; i < a->pages; i = j) {
		const struct zt_page_desc *d = &a->pg[i];

		for (j = i + 1; j < a->pages; j++) {
			const struct zt_page_desc *e = &a->pg[j];

			if (e->gen != d->gen || e->seed != d->seed || e->index != d->index + (j - i))
				break;
		}
		if (d->gen >= 0)
			rec_add(me, (uintptr_t)(a->addr + i * PG_PAGE_SIZE), j - i, d->gen,
				d->seed, d->index, a->label, flags);
	}
}

static int rec_cmp(const void *x, const void *y)
{
	const struct zt_rec *a = x, *b = y;

	if (a->pid != b->pid)
		return a->pid < b->pid ? -1 : 1;
	if (a->start != b->start)
		return a->start < b->start ? -1 : 1;
	return (a->flags > b->flags) - (a->flags < b->flags);
}

void zt_manifest_write(int step)
{
	char tmp[4096];
	FILE *f;
	int k;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", zt_opt.manifest) >= (int)sizeof(tmp))
		zt_fatal("manifest path too long: %s", zt_opt.manifest);
	f = fopen(tmp, "we");
	if (!f)
		zt_fatal_errno("write manifest %s", tmp);
	/* Sorted by pid, then address: stable, readable manifests. */
	qsort(shared->rec, shared->nrecs, sizeof(shared->rec[0]), rec_cmp);
	fprintf(f, "zdtm-manifest 1\nstep %d\n", step);
	for (k = 0; k < shared->nrecs; k++) {
		const struct zt_rec *r = &shared->rec[k];

		if (r->flags & ZT_NO_MANIFEST)
			continue;
		fprintf(f, "region pid=%d start=%#lx pages=%zu gen=%s seed=%llu index=%llu label=%s\n",
			(int)r->pid, (unsigned long)r->start, r->pages, pagegen_name(r->gen),
			(unsigned long long)r->seed, (unsigned long long)r->index, r->label);
	}
	if (fflush(f) || ferror(f)) {
		fclose(f);
		zt_fatal_errno("write manifest %s", tmp);
	}
	if (fclose(f) || rename(tmp, zt_opt.manifest))
		zt_fatal_errno("write manifest %s", zt_opt.manifest);
}

/* ---- checking -------------------------------------------------------- */

/* Check every record of this process; failures go through zt_fail(). */
static void check_own(void)
{
	pid_t me = getpid();
	volatile int k;
	int sig;

	for (k = 0; k < shared->nrecs; k++) {
		const struct zt_rec *r = &shared->rec[k];
		long bad;

		if (r->pid != me)
			continue;
		sig = sigsetjmp(check_jmp, 1);
		if (sig) {
			check_armed = 0;
			zt_fail("pid %d region %s at %#lx (%zu pages): unreadable (signal %d)",
				(int)me, r->label, (unsigned long)r->start, r->pages, sig);
			continue;
		}
		check_armed = 1;
		bad = pagegen_check(r->gen, r->seed, r->index, (const void *)r->start, r->pages);
		check_armed = 0;
		if (bad >= 0)
			zt_fail("pid %d region %s page %ld at %#lx is not %s(seed=%llu, index=%llu)",
				(int)me, r->label, bad,
				(unsigned long)(r->start + (uintptr_t)bad * PG_PAGE_SIZE),
				pagegen_name(r->gen), (unsigned long long)r->seed,
				(unsigned long long)(r->index + bad));
	}
}

/* SIGTERM the children, check our pages, collect the children's verdicts. */
static void finish_tree(void)
{
	int i, st;

	for (i = 0; i < nchildren; i++)
		kill(children[i], SIGTERM);
	check_own();
	for (i = 0; i < nchildren; i++) {
		pid_t pid = children[i];

		while (waitpid(pid, &st, 0) < 0) {
			if (errno != EINTR) {
				zt_fail("child %d is gone: waitpid: %s", (int)pid, strerror(errno));
				break;
			}
		}
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			continue;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 1 && shared->child_fail[0])
			zt_fail("%s", shared->child_fail);
		else if (WIFEXITED(st))
			zt_fail("child %d exited with status %d", (int)pid, WEXITSTATUS(st));
		else
			zt_fail("child %d killed by signal %d", (int)pid, WTERMSIG(st));
	}
	nchildren = 0;
}

/* ---- children -------------------------------------------------------- */

pid_t zt_fork(void (*setup)(void *arg), void *arg)
{
	int p[2], n, st;
	pid_t pid;
	char c = 'R';

	if (nchildren >= ZT_MAX_CHILDREN)
		zt_fatal("more than %d children", ZT_MAX_CHILDREN);
	if (pipe2(p, O_CLOEXEC))
		zt_fatal_errno("pipe for a child");
	pid = fork();
	if (pid < 0)
		zt_fatal_errno("fork");
	if (pid == 0) {
		close(p[0]);
		/* The launcher pipe belongs to the init: no stray fds in the image. */
		if (ready_fd >= 0) {
			close(ready_fd);
			ready_fd = -1;
		}
		/* Nor our parent's setup pipe (we are a grandchild forked during its setup). */
		if (setup_fd >= 0)
			close(setup_fd);
		setup_fd = p[1];
		nchildren = 0;
		nfails = 0;
		my_fail[0] = 0;
		setup(arg);
		if (write(setup_fd, &c, 1) != 1)
			zt_fatal_errno("child: report setup done");
		close(setup_fd);
		setup_fd = -1;

		while (wait_event() != EV_STOP)
			;	/* steps are the init's business */
		finish_tree();
		if (nfails) {
			/* The first failure wins the slot; later ones are on stderr anyway. */
			if (!shared->child_fail[0])
				snprintf(shared->child_fail, sizeof(shared->child_fail), "%s", my_fail);
			_exit(1);
		}
		_exit(0);
	}
	close(p[1]);
	n = wait_ready(p[0]);
	close(p[0]);
	if (n != 1) {
		if (waitpid(pid, &st, 0) == pid && WIFEXITED(st))
			zt_fatal("child %d died during setup (exit status %d)", (int)pid,
				 WEXITSTATUS(st));
		zt_fatal("child %d died during setup", (int)pid);
	}
	children[nchildren++] = pid;
	return pid;
}

/* ---- ready, steps, verdict ------------------------------------------- */

void zt_ready(void)
{
	char c = 'R';

	zt_manifest_write(0);
	cur_step = 0;
	if (zt_opt.no_ns) {
		if (write_pidfile(getpid()))
			zt_fatal_errno("write pidfile %s", zt_opt.pidfile);
	} else {
		if (write(ready_fd, &c, 1) != 1)
			zt_fatal_errno("tell the launcher we are ready");
		close(ready_fd);
		ready_fd = -1;
	}
	is_ready = 1;
}

void zt_run(int (*step)(int k, void *arg), void *arg)
{
	if (!is_ready)
		zt_fatal("zt_run() before zt_ready()");
	while (wait_event() == EV_STEP) {
		int k = cur_step + 1, before = nfails;

		if (step && step(k, arg) && nfails == before)
			zt_fail("step %d failed", k);
		zt_manifest_write(k);
		cur_step = k;
	}
	finish_tree();
	if (nfails)
		out_fmt(1, "FAIL: ", "%s", my_fail);
	else
		out_fmt(1, NULL, "PASS");
	exit(0);
}
