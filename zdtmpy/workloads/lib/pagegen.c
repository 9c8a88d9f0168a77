/* Page generators: see pagegen.h and docs/DESIGN.md ("Manifest"). */
#include <string.h>

#include "pagegen.h"

#define WORDS (PG_PAGE_SIZE / 8)
#define LINE 64

static const char *const gen_names[PG_NR_GENS] = {
	"zero", "fill", "pattern", "random", "half", "alt",
};

int pagegen_parse(const char *name)
{
	int i;

	for (i = 0; i < PG_NR_GENS; i++)
		if (name && strcmp(name, gen_names[i]) == 0)
			return i;
	return -1;
}

const char *pagegen_name(int gen)
{
	if (gen < 0 || gen >= PG_NR_GENS)
		return NULL;
	return gen_names[gen];
}

/* splitmix64 finaliser: spreads (seed, index) over the whole state space. */
static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* xorshift64* over `words` u64 words; state seeded from (seed, index), never 0. */
static void gen_random(uint64_t seed, uint64_t index, uint64_t *w, size_t words)
{
	uint64_t x = mix64(seed ^ mix64(index + 0x5a17));
	size_t i;

	if (!x)
		x = 0x2545f4914f6cdd1dULL;
	for (i = 0; i < words; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		w[i] = x * 0x2545f4914f6cdd1dULL;
	}
}

static void put_hex(char *p, uint64_t v, int digits)
{
	static const char hex[] = "0123456789abcdef";

	while (digits--) {
		p[digits] = hex[v & 0xf];
		v >>= 4;
	}
}

/*
 * 64 lines of 64 bytes: "zdtm-pattern s=<16 hex> p=<16 hex> l=<2 hex> ...\n".
 * Lines differ only in the line number, so LZ4 finds long matches (~15x) while
 * every page is still distinguishable by its index.
 */
static void gen_pattern(uint64_t seed, uint64_t index, char *page)
{
	static const char tmpl[] =
		"zdtm-pattern s=................ p=................ l=.. .......\n";
	_Static_assert(sizeof(tmpl) == LINE + 1, "pattern line must be 64 bytes");
	char *line;
	int l;

	memcpy(page, tmpl, LINE);
	put_hex(page + 15, seed, 16);
	put_hex(page + 34, index, 16);
	for (l = 1; l < PG_PAGE_SIZE / LINE; l++)
		memcpy(page + l * LINE, page, LINE);
	for (l = 0; l < PG_PAGE_SIZE / LINE; l++) {
		line = page + l * LINE;
		put_hex(line + 53, l, 2);
		line[56] = 'a' + (l & 15);
	}
}

/* One page of gen/seed at `index` into a u64-aligned buffer. */
static void gen_page(int gen, uint64_t seed, uint64_t index, uint64_t *w)
{
	uint64_t f;
	size_t i;

	switch (gen) {
	case PG_ZERO:
		memset(w, 0, PG_PAGE_SIZE);
		break;
	case PG_FILL:
		f = (seed & 0xff) * 0x0101010101010101ULL;
		for (i = 0; i < WORDS; i++)
			w[i] = f;
		break;
	case PG_PATTERN:
		gen_pattern(seed, index, (char *)w);
		break;
	case PG_RANDOM:
		gen_random(seed, index, w, WORDS);
		break;
	case PG_HALF:
		gen_random(seed, index, w, WORDS / 2);
		memset(w + WORDS / 2, 0, PG_PAGE_SIZE / 2);
		break;
	case PG_ALT:
		if (index & 1)
			memset(w, 0, PG_PAGE_SIZE);
		else
			gen_random(seed, index, w, WORDS);
		break;
	}
}

int pagegen_fill(int gen, uint64_t seed, uint64_t index, void *dst, size_t npages)
{
	uint64_t buf[WORDS];
	char *d = dst;
	size_t i;

	if (gen < 0 || gen >= PG_NR_GENS)
		return -1;
	for (i = 0; i < npages; i++, d += PG_PAGE_SIZE) {
		if (((uintptr_t)d & 7) == 0) {
			gen_page(gen, seed, index + i, (uint64_t *)d);
		} else {
			/* Python may hand us an unaligned buffer. */
			gen_page(gen, seed, index + i, buf);
			memcpy(d, buf, PG_PAGE_SIZE);
		}
	}
	return 0;
}

static int page_is_zero(const char *p)
{
	uint64_t acc = 0, w;
	size_t i;

	for (i = 0; i < WORDS; i++) {
		memcpy(&w, p + i * 8, 8);
		acc |= w;
	}
	return acc == 0;
}

long pagegen_check(int gen, uint64_t seed, uint64_t index, const void *src, size_t npages)
{
	uint64_t buf[WORDS];
	const char *s = src;
	size_t i;

	if (gen < 0 || gen >= PG_NR_GENS)
		return -2;
	for (i = 0; i < npages; i++, s += PG_PAGE_SIZE) {
		if (gen == PG_ZERO || (gen == PG_ALT && ((index + i) & 1))) {
			if (!page_is_zero(s))
				return (long)i;
			continue;
		}
		gen_page(gen, seed, index + i, buf);
		if (memcmp(s, buf, PG_PAGE_SIZE))
			return (long)i;
	}
	return -1;
}
