/*
 * pages01: copy-on-write process tree.  The init fills two regions and forks;
 * child 1 rewrites part of them (and forks a grandchild that rewrites part of
 * child 1's view), child 2 changes nothing (its pages stay shared with the
 * init), and the init rewrites other pages after the forks.  Every process
 * checks its own view, so a restore that mixes up COW pages between the
 * processes fails - in particular the init must still see its original
 * content where the children wrote.
 */
#include <sys/mman.h>

#include "lib/zdtmtst.h"

#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)
#define RW (PROT_READ | PROT_WRITE)
#define NA 512		/* pages of region A: random */
#define NB 256		/* pages of region B: pattern */

static struct zt_area *a, *b;

static void grandchild(void *arg)
{
	(void)arg;
	zt_area_gen(a, 150, 10, PG_RANDOM, 31, 150);
	zt_area_gen(b, 100, 4, PG_ZERO, 0, 0);
	zt_area_publish(a, 0);
	zt_area_publish(b, 0);
}

static void child1(void *arg)
{
	(void)arg;
	zt_area_gen(a, 100, 100, PG_RANDOM, 21, 100);
	zt_area_gen(a, 300, 10, PG_ZERO, 0, 0);
	zt_area_gen(b, 0, 16, PG_FILL, 0x33, 0);
	zt_area_publish(a, 0);
	zt_area_publish(b, 0);
	/* Forked after child 1's writes: sees them, then adds its own. */
	zt_fork(grandchild, NULL);
	/* Written after the grandchild exists: must not show up in its view. */
	zt_area_gen(a, 0, 8, PG_FILL, 0x44, 0);
	zt_area_publish(a, 0);
}

static void child2(void *arg)
{
	(void)arg;
	zt_area_publish(a, 0);
	zt_area_publish(b, 0);
}

int main(int argc, char **argv)
{
	zt_init(argc, argv);

	a = zt_area_new(zt_mmap(NA, RW, ANON, -1, 0, "region A"), NA, "cow-random");
	zt_area_gen(a, 0, NA, PG_RANDOM, 11, 0);
	b = zt_area_new(zt_mmap(NB, RW, ANON, -1, 0, "region B"), NB, "cow-pattern");
	zt_area_gen(b, 0, NB, PG_PATTERN, 12, 0);

	zt_fork(child1, NULL);
	zt_fork(child2, NULL);

	/* The init's own writes after fork: private to it. */
	zt_area_gen(a, 400, 10, PG_RANDOM, 41, 400);
	zt_area_gen(b, 200, 8, PG_HALF, 42, 200);
	zt_area_publish(a, 0);
	zt_area_publish(b, 0);

	zt_ready();
	zt_run(NULL, NULL);
}
