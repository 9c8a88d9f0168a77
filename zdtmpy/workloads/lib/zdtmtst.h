/*
 * zdtmpy C test library: the workload side of the protocol in docs/DESIGN.md
 * ("Workload protocol", "Manifest").
 *
 * A workload's main() looks like:
 *
 *	zt_init(argc, argv);		// options, PID namespace, signals
 *	... map memory, zt_area_gen(), zt_fork() children ...
 *	zt_ready();			// manifest step 0, then the pidfile appears
 *	zt_run(step_fn, arg);		// SIGUSR1 -> step_fn(k); SIGTERM -> check, verdict, exit
 *
 * Every process of the tree registers the pages it owns (gen/seed/index per
 * page, see pagegen.h); on SIGTERM each process checks its own pages, children
 * report through their exit status and the init prints PASS or FAIL: ...
 *
 * Nothing here is thread-safe; workloads are single-threaded processes.
 */
#ifndef ZDTM_ZDTMTST_H
#define ZDTM_ZDTMTST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pagegen.h"

#define ZT_LABEL_MAX 48

struct zt_options {
	const char *pidfile;
	const char *outfile;
	const char *manifest;
	int no_ns;
	int argc;		/* workload arguments (not ours), argv[argc] == NULL */
	char **argv;
};

extern struct zt_options zt_opt;
extern const char *zt_name;	/* basename of argv[0], for messages */

/*
 * Parse the options and, unless --no-ns, become the init of a new PID
 * namespace: the calling process turns into the launcher and never returns;
 * zt_init() returns in the test process.  Bad options exit 2.
 */
void zt_init(int argc, char **argv);

/* Path "<outfile>.<suffix>" for files the workload maps (they must outlive the dump). */
const char *zt_aux_path(const char *suffix);

/* One line to stderr (the outfile), unbuffered, prefixed with the name and pid. */
void zt_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Before zt_ready(): print "SKIP: <reason>" and exit 0 (the pidfile never appears). */
void zt_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Before zt_ready(): print "FAIL: <what>" and exit 1. */
void zt_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Like zt_fatal(), appending ": strerror(errno)". */
void zt_fatal_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* mmap() or zt_fatal() naming `what`. */
void *zt_mmap(size_t pages, int prot, int flags, int fd, off_t off, const char *what);
/* Create (truncate) a file of `pages` pages, every byte = `byte`; returns an O_RDWR fd. */
int zt_make_file(const char *path, size_t pages, int byte);

/*
 * Areas: a mapping (or part of one) whose content is known page by page.
 * zt_area_gen() writes pages and remembers what it wrote; zt_area_note()
 * only remembers (another process wrote a shared page); zt_area_publish()
 * turns the area into manifest/check records owned by the calling process.
 */
struct zt_page_desc {
	int32_t gen;		/* -1: unknown, not published */
	uint64_t seed;
	uint64_t index;
};

struct zt_area {
	char *addr;
	size_t pages;
	char label[ZT_LABEL_MAX];
	struct zt_page_desc *pg;
};

struct zt_area *zt_area_new(void *addr, size_t pages, const char *label);
/* Write pages [first, first+n) with gen/seed, page first+i gets index `index + i`. */
void zt_area_gen(struct zt_area *a, size_t first, size_t n, int gen, uint64_t seed,
		 uint64_t index);
void zt_area_note(struct zt_area *a, size_t first, size_t n, int gen, uint64_t seed,
		  uint64_t index);

#define ZT_NO_MANIFEST 0x1	/* check these pages, but do not list them (shared, not ours) */

/* Replace the caller's records of this label with the area's runs. */
void zt_area_publish(const struct zt_area *a, unsigned flags);

/* Raw record for the caller's pid (label must be unique to what it describes). */
void zt_region(void *addr, size_t pages, int gen, uint64_t seed, uint64_t index,
	       const char *label, unsigned flags);

/* Write the manifest (all processes' records) atomically with this step number. */
void zt_manifest_write(int step);

/*
 * Fork a child that runs setup(arg) (map, write, publish, fork grandchildren)
 * and then waits for SIGTERM, checks its pages and exits 0 (pass) or 1 (fail,
 * with a detail line on stderr).  Returns the child's pid once its setup is
 * done; zt_fatal() if the child died during setup.
 */
pid_t zt_fork(void (*setup)(void *arg), void *arg);

/* Manifest step 0 written, pidfile appears: the tree may be dumped from now on. */
void zt_ready(void);

/*
 * Serve steps and stop: on SIGUSR1 call step(k, arg) for k = 1, 2, ... then
 * rewrite the manifest with step k (step may be NULL: nothing changes); a
 * non-zero return marks the test failed.  On SIGTERM check everything and
 * print the verdict; exits 0.
 */
void zt_run(int (*step)(int k, void *arg), void *arg) __attribute__((noreturn));

/* Record a failure found by workload code (first one goes into the verdict). */
void zt_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
