/*
 * pages00: one process, the page kinds a dump must get right:
 * touched zero pages, a compressible pattern region larger than 32 MiB,
 * random pages in their own mapping between PROT_NONE guards, a private file
 * mapping zeroed in memory (restore must give zeros, not the file's bytes),
 * alternating random/zero pages, half pages and a byte fill.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "lib/zdtmtst.h"

#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)
#define RW (PROT_READ | PROT_WRITE)

int main(int argc, char **argv)
{
	struct zt_area *a;
	const char *path;
	size_t n;
	char *p;
	int fd;

	zt_init(argc, argv);

	/* Zero pages that are really there: written, not just reserved. */
	n = 256;
	p = zt_mmap(n, RW, ANON, -1, 0, "zero pages");
	a = zt_area_new(p, n, "zero-touched");
	zt_area_gen(a, 0, n, PG_ZERO, 0, 0);
	for (size_t i = 0; i < n; i++)
		((volatile char *)p)[i * PG_PAGE_SIZE] = 0;
	zt_area_publish(a, 0);

	/* 40 MiB: above the 32 MiB a compressor may want to stream in pieces. */
	n = 40 * 256;
	p = zt_mmap(n, RW, ANON, -1, 0, "pattern region");
	a = zt_area_new(p, n, "compressible");
	zt_area_gen(a, 0, n, PG_PATTERN, 3, 0);
	zt_area_publish(a, 0);

	/* Random pages with a PROT_NONE page on each side, in one mapping. */
	n = 256;
	p = zt_mmap(n + 2, RW, ANON, -1, 0, "guarded random pages");
	if (mprotect(p, PG_PAGE_SIZE, PROT_NONE) ||
	    mprotect(p + (n + 1) * PG_PAGE_SIZE, PG_PAGE_SIZE, PROT_NONE))
		zt_fatal_errno("mprotect the guard pages");
	a = zt_area_new(p + PG_PAGE_SIZE, n, "random-guarded");
	zt_area_gen(a, 0, n, PG_RANDOM, 4, 0);
	zt_area_publish(a, 0);

	/* The file keeps 0xa5 on disk; memory must come back as zeros. */
	n = 64;
	path = zt_aux_path("private-file");
	fd = zt_make_file(path, n, 0xa5);
	p = zt_mmap(n, RW, MAP_PRIVATE, fd, 0, path);
	close(fd);
	a = zt_area_new(p, n, "file-private-zeroed");
	zt_area_gen(a, 0, n, PG_ZERO, 0, 0);
	zt_area_publish(a, 0);

	n = 128;
	p = zt_mmap(n, RW, ANON, -1, 0, "alternating pages");
	a = zt_area_new(p, n, "alternating");
	zt_area_gen(a, 0, n, PG_ALT, 5, 0);
	zt_area_publish(a, 0);

	n = 64;
	p = zt_mmap(n, RW, ANON, -1, 0, "half pages");
	a = zt_area_new(p, n, "half");
	zt_area_gen(a, 0, n, PG_HALF, 6, 0);
	zt_area_publish(a, 0);

	n = 16;
	p = zt_mmap(n, RW, ANON, -1, 0, "fill pages");
	a = zt_area_new(p, n, "fill");
	zt_area_gen(a, 0, n, PG_FILL, 0x5a, 0);
	zt_area_publish(a, 0);

	zt_ready();
	zt_run(NULL, NULL);
}
