/*
 * Deterministic page generators shared by the C workloads and zdtmpy.pagegen
 * (the same file is compiled into a cffi extension).  A page is 4096 bytes and
 * page `index` of generator `gen` with `seed` is always the same bytes, so the
 * framework can recompute any page a workload declared in its manifest.
 */
#ifndef ZDTM_PAGEGEN_H
#define ZDTM_PAGEGEN_H

#include <stddef.h>
#include <stdint.h>

#define PG_PAGE_SIZE 4096

enum pg_gen {
	PG_ZERO = 0,	/* all zero bytes */
	PG_FILL,	/* every byte = seed & 0xff */
	PG_PATTERN,	/* compressible text naming seed, page index and line */
	PG_RANDOM,	/* xorshift64* seeded from (seed, index) */
	PG_HALF,	/* first half random, second half zero */
	PG_ALT,		/* even index: random, odd index: zero */
	PG_NR_GENS
};

/* Generator number for a name ("zero", "fill", ...), or -1 if unknown. */
int pagegen_parse(const char *name);
/* Name of a generator, or NULL if out of range. */
const char *pagegen_name(int gen);

/* Write npages pages of gen/seed starting at page `index` to dst. 0, or -1 on a bad gen. */
int pagegen_fill(int gen, uint64_t seed, uint64_t index, void *dst, size_t npages);

/*
 * Compare npages pages at src with gen/seed from page `index`.
 * Returns -1 when all match, else the 0-based page number (relative to src) of
 * the first page that differs; -2 on a bad gen.
 */
long pagegen_check(int gen, uint64_t seed, uint64_t index, const void *src, size_t npages);

#endif
