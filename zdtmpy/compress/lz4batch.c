/*
 * zdtmpy's block encoder: the per-block loop of codec.encode_into in C, so that one call
 * encodes a whole chunk (256 pages in per-page mode) without going back to Python.
 *
 * LZ4 itself is python-lz4's bundled library: its functions come in as pointers (codec.py
 * looks them up), so the bytes are those of lz4.block.compress(mode="fast",
 * store_size=False): a reset stream, then LZ4_compress_fast_continue into a buffer of
 * LZ4_compressBound bytes. The rules are codec.encode_block's: an all-zero block is size 0;
 * LZ4 output of at least 7/8 of the block (or a failure) stores the block raw.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef void (*reset_fn)(void *state);
typedef int (*compress_fn)(void *state, const char *src, char *dst, int src_size,
			   int dst_cap, int acceleration);
typedef int (*bound_fn)(int size);

enum { RUN_RAW = 0, RUN_LZ4 = 1 };

static int all_zero(const unsigned char *p, size_t n)
{
	uint64_t acc = 0;
	size_t i = 0;

	for (; i + 32 <= n; i += 32) {
		uint64_t w[4];

		memcpy(w, p + i, sizeof(w));
		if (w[0] | w[1] | w[2] | w[3])
			return 0;
	}
	for (; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

/*
 * Encode the n bytes at src as consecutive blocks of `block` bytes (the last may be
 * shorter). sizes[i] gets block i's stored size. The stored pieces, in order, are described
 * as runs (kind, offset, length): RUN_RAW runs lie in src, RUN_LZ4 runs in out (LZ4 outputs
 * of consecutive stored blocks are adjacent there). Returns the number of runs, or -1 when
 * out (out_cap bytes) could be too small.
 */
long zdtm_encode_blocks(const unsigned char *src, long n, unsigned char *out, long out_cap,
			long block, int acceleration, void *state, reset_fn reset,
			compress_fn compress, bound_fn bound, uint32_t *sizes, int64_t *runs)
{
	long nruns = 0, opos = 0, b = 0;
	int last = -1;          /* kind of the open run, -1: none */
	long raw_end = -1;      /* end in src of the open raw run */

	for (long off = 0; off < n; off += block, b++) {
		long size = n - off < block ? n - off : block;
		long limit = (size * 7 + 7) / 8;
		long cap = bound((int)size);
		int r;

		if (all_zero(src + off, (size_t)size)) {
			sizes[b] = 0;
			continue;
		}
		if (opos + cap > out_cap)
			return -1;
		reset(state);
		r = compress(state, (const char *)src + off, (char *)out + opos, (int)size,
			     (int)cap, acceleration);
		if (r <= 0 || r >= limit) {
			sizes[b] = (uint32_t)size;
			if (last == RUN_RAW && raw_end == off) {
				runs[3 * (nruns - 1) + 2] += size;
			} else {
				runs[3 * nruns] = RUN_RAW;
				runs[3 * nruns + 1] = off;
				runs[3 * nruns + 2] = size;
				nruns++;
				last = RUN_RAW;
			}
			raw_end = off + size;
		} else {
			sizes[b] = (uint32_t)r;
			if (last == RUN_LZ4) {
				runs[3 * (nruns - 1) + 2] += r;
			} else {
				runs[3 * nruns] = RUN_LZ4;
				runs[3 * nruns + 1] = opos;
				runs[3 * nruns + 2] = r;
				nruns++;
				last = RUN_LZ4;
			}
			opos += r;
		}
	}
	return nruns;
}
