/*
 * pages02: eight mapping kinds in a parent/child tree, each checked by both:
 * private anonymous data, private anonymous zeros, shared anonymous, private
 * file-backed (written after mapping: all pages COW), shared file-backed,
 * memfd shared, read-only (PROT_READ after fill), and a data page next to a
 * PROT_NONE guard page.  The child writes to its private copies and to the
 * shared mappings; the parent records the child's shared writes as its own
 * (shared pages are listed under the process that created them; their labels
 * start with "shared-", and "shared-file" pages live in the file, not in images).
 */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <unistd.h>

#include "lib/zdtmtst.h"

#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)
#define RW (PROT_READ | PROT_WRITE)
#define N 32

enum { PRIV_DATA, PRIV_ZERO, SHARED_ANON, FILE_PRIV, FILE_SHARED, MEMFD, READ_ONLY, GUARDED, NR };
static struct zt_area *m[NR];
static const int is_shared[NR] = { [SHARED_ANON] = 1, [FILE_SHARED] = 1, [MEMFD] = 1 };

static void child(void *arg)
{
	int i;

	(void)arg;
	/* COW: only the child sees these. */
	zt_area_gen(m[PRIV_DATA], 0, 4, PG_FILL, 0x11, 0);
	zt_area_gen(m[FILE_PRIV], 8, 2, PG_FILL, 0x12, 0);
	/* Shared: the parent sees these too (it notes them after our setup). */
	zt_area_gen(m[SHARED_ANON], 0, 2, PG_FILL, 0x22, 0);
	zt_area_gen(m[FILE_SHARED], 4, 2, PG_RANDOM, 0x23, 4);
	zt_area_gen(m[MEMFD], 30, 2, PG_ZERO, 0, 0);
	for (i = 0; i < NR; i++)
		zt_area_publish(m[i], is_shared[i] ? ZT_NO_MANIFEST : 0);
}

int main(int argc, char **argv)
{
	const char *path;
	char *p;
	int fd, i;

	zt_init(argc, argv);

	m[PRIV_DATA] = zt_area_new(zt_mmap(N, RW, ANON, -1, 0, "private data"), N, "anon-private-data");
	zt_area_gen(m[PRIV_DATA], 0, N, PG_RANDOM, 101, 0);

	m[PRIV_ZERO] = zt_area_new(zt_mmap(N, RW, ANON, -1, 0, "private zeros"), N, "anon-private-zero");
	zt_area_gen(m[PRIV_ZERO], 0, N, PG_ZERO, 0, 0);

	p = zt_mmap(N, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0, "shared anonymous");
	m[SHARED_ANON] = zt_area_new(p, N, "shared-anon");
	zt_area_gen(m[SHARED_ANON], 0, N, PG_PATTERN, 103, 0);

	/* File holds 0xc3; every page is written after mmap, so all are anonymous COW copies. */
	path = zt_aux_path("file-private");
	fd = zt_make_file(path, N, 0xc3);
	m[FILE_PRIV] = zt_area_new(zt_mmap(N, RW, MAP_PRIVATE, fd, 0, path), N, "file-private");
	close(fd);
	zt_area_gen(m[FILE_PRIV], 0, N, PG_RANDOM, 104, 0);

	/* Content lives in the file: criu does not dump it, the file must survive. */
	path = zt_aux_path("file-shared");
	fd = zt_make_file(path, N, 0);
	m[FILE_SHARED] = zt_area_new(zt_mmap(N, RW, MAP_SHARED, fd, 0, path), N, "shared-file");
	close(fd);
	zt_area_gen(m[FILE_SHARED], 0, N, PG_PATTERN, 105, 0);

	fd = memfd_create("zdtm-pages02", MFD_CLOEXEC);
	if (fd < 0)
		zt_fatal_errno("memfd_create");
	if (ftruncate(fd, N * PG_PAGE_SIZE))
		zt_fatal_errno("ftruncate memfd");
	m[MEMFD] = zt_area_new(zt_mmap(N, RW, MAP_SHARED, fd, 0, "memfd"), N, "shared-memfd");
	close(fd);
	zt_area_gen(m[MEMFD], 0, N, PG_RANDOM, 106, 0);

	p = zt_mmap(N, RW, ANON, -1, 0, "read-only");
	m[READ_ONLY] = zt_area_new(p, N, "read-only");
	zt_area_gen(m[READ_ONLY], 0, N, PG_PATTERN, 107, 0);
	if (mprotect(p, N * PG_PAGE_SIZE, PROT_READ))
		zt_fatal_errno("mprotect read-only");

	/* One data page, then a PROT_NONE page in the same mapping. */
	p = zt_mmap(2, RW, ANON, -1, 0, "guarded page");
	m[GUARDED] = zt_area_new(p, 1, "guarded-data");
	zt_area_gen(m[GUARDED], 0, 1, PG_RANDOM, 108, 0);
	if (mprotect(p + PG_PAGE_SIZE, PG_PAGE_SIZE, PROT_NONE))
		zt_fatal_errno("mprotect guard page");

	zt_fork(child, NULL);

	/* What the child wrote into shared mappings is what we must see too. */
	zt_area_note(m[SHARED_ANON], 0, 2, PG_FILL, 0x22, 0);
	zt_area_note(m[FILE_SHARED], 4, 2, PG_RANDOM, 0x23, 4);
	zt_area_note(m[MEMFD], 30, 2, PG_ZERO, 0, 0);
	/* Our private pages after the fork: the child keeps the old ones. */
	zt_area_gen(m[PRIV_ZERO], 16, 2, PG_FILL, 0x31, 0);
	for (i = 0; i < NR; i++)
		zt_area_publish(m[i], 0);

	zt_ready();
	zt_run(NULL, NULL);
}
