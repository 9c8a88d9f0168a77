/*
 * bigmix: hold MiB of mixed anonymous memory for dump benchmarks, then wait for a signal.
 *
 *   bigmix MIB      fills MIB MiB in 1 MiB stripes cycling through: compressible text,
 *                   random bytes, zero-filled (but touched) pages, half random / half zero;
 *                   prints "ready <pid>" on stdout once every page is written, then sleeps.
 *
 * Standalone (no test library) so the benchmark needs only a C compiler.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define PAGE 4096UL

static uint64_t rnd_state = 88172645463325252ULL;

static uint64_t xorshift64s(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 2685821657736338717ULL;
}

static void fill_random(unsigned char *p, size_t n)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t v = xorshift64s();
		memcpy(p + i, &v, 8);
	}
}

static void fill_text(unsigned char *p, size_t n, size_t stripe)
{
	for (size_t off = 0; off < n; off += PAGE) {
		size_t pos = 0;
		while (pos < PAGE) {
			char line[96];
			int len = snprintf(line, sizeof(line), "stripe %zu page %zu: the quick brown fox\n",
					   stripe, off / PAGE);
			size_t k = (size_t)len < PAGE - pos ? (size_t)len : PAGE - pos;
			memcpy(p + off + pos, line, k);
			pos += k;
		}
	}
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 64;
	unsigned char *mem;

	mem = mmap(NULL, mib * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		perror("bigmix: mmap");
		return 1;
	}
	for (size_t s = 0; s < mib; s++) {
		unsigned char *p = mem + s * MIB;
		switch (s % 4) {
		case 0:
			fill_text(p, MIB, s);
			break;
		case 1:
			fill_random(p, MIB);
			break;
		case 2: /* touched zero pages: real pages criu dumps, not the zero pfn */
			for (size_t off = 0; off < MIB; off += PAGE)
				p[off] = 1, p[off] = 0;
			break;
		case 3:
			for (size_t off = 0; off < MIB; off += PAGE)
				fill_random(p + off, PAGE / 2), memset(p + off + PAGE / 2, 0, PAGE / 2);
			break;
		}
	}
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}
