/*
 * pages03: for parent chains.  A 64 MiB anonymous mapping holds a pattern at
 * step 0; each SIGUSR1 applies the next step with sparse changes: single
 * pages, runs crossing a 256 KiB (64-page) region boundary, pages set back to
 * zero, and page 777 changed in step 1 and again in step 3.  Steps after 3
 * change a few pages chosen from k.  The manifest is rewritten after every
 * step and describes every page exactly; SIGTERM checks the current state.
 */
#include <sys/mman.h>

#include "lib/zdtmtst.h"

#define NPAGES (64 * 256)	/* 64 MiB */
#define REGION 64		/* pages per 256 KiB compression region */

static struct zt_area *area;

/* Pages [first, first+n) take gen/seed with index = page number. */
static void set(size_t first, size_t n, int gen, uint64_t seed)
{
	zt_area_gen(area, first, n, gen, seed, first);
}

static int step(int k, void *arg)
{
	uint64_t seed = 1000 + k;
	size_t j;

	(void)arg;
	switch (k) {
	case 1:
		set(10, 1, PG_RANDOM, seed);
		set(777, 1, PG_RANDOM, seed);
		set(5000, 1, PG_FILL, 0x11);
		set(REGION - 4, 10, PG_RANDOM, seed);		/* crosses page 64 */
		set(63 * REGION - 32, 100, PG_HALF, seed);	/* crosses 2 boundaries */
		set(2000, 4, PG_ZERO, 0);
		break;
	case 2:
		set(2 * REGION - 1, 2, PG_RANDOM, seed);	/* one page on each side */
		set(9000, 1, PG_ZERO, 0);
		set(12000, 300, PG_ALT, seed);
		set(REGION, 1, PG_RANDOM, seed);		/* inside step 1's run */
		break;
	case 3:
		set(777, 1, PG_RANDOM, seed);			/* changed again */
		set(10, 1, PG_ZERO, 0);				/* back to zero */
		set(NPAGES - REGION, REGION, PG_HALF, seed);	/* the last region */
		set(0, 1, PG_RANDOM, seed);
		set(2002, 1, PG_PATTERN, 7);			/* back to the original */
		break;
	default:
		for (j = 0; j < 8; j++)
			set((k * 7919 + j * 1237) % NPAGES, 1, PG_RANDOM, seed);
		set(((k * 13) % 255 + 1) * REGION - 40, 80, PG_RANDOM, seed);
		break;
	}
	zt_area_publish(area, 0);
	return 0;
}

int main(int argc, char **argv)
{
	char *p;

	zt_init(argc, argv);
	p = zt_mmap(NPAGES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0,
		    "64 MiB step area");
	area = zt_area_new(p, NPAGES, "steps");
	zt_area_gen(area, 0, NPAGES, PG_PATTERN, 7, 0);
	zt_area_publish(area, 0);
	zt_ready();
	zt_run(step, NULL);
}
