/*
 * zdtmpy's block coder: the per-block loops of codec.encode_into and codec.decode_into in
 * C, so that one call codes a whole chunk (256 pages in per-page mode) without going back
 * to Python (ctypes releases the GIL for the call: the worker threads code in parallel).
 *
 * LZ4 itself is python-lz4's bundled library: its functions come in as pointers (codec.py
 * looks them up), so the bytes are those of lz4.block.compress(mode="fast",
 * store_size=False): a reset stream, then LZ4_compress_fast_continue into a buffer of
 * LZ4_compressBound bytes. The rules are codec.encode_block's: an all-zero block is size 0;
 * LZ4 output of at least 7/8 of the block (or a failure) stores the block raw.
 *
 * LZ4 is given room for just under 7/8 of the block: it gives up as soon as its output
 * cannot fit (on incompressible data, once about 7/8 of the block is done) instead of
 * finishing a result that would be stored raw anyway. Its checks against that room only
 * ever refuse output that would not fit, and output that fits is the same bytes as with
 * the full bound (LZ4_compress_fast_continue always runs its limited-output variant).
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
	uint64_t head = 0;

	if (n < 16) {
		for (size_t i = 0; i < n; i++)
			head |= p[i];
		return head == 0;
	}
	/* zero head and every byte equal to the one 8 before it: all zero. memcmp is the
	 * library's vectorised loop (the second read hits the cache line just read) */
	memcpy(&head, p, sizeof(head));
	return head == 0 && memcmp(p, p + 8, n - 8) == 0;
}

/* All n bytes at p are zero (exported: a whole chunk is tested without the GIL). */
int zdtm_all_zero(const unsigned char *p, long n)
{
	return n <= 0 || all_zero(p, (size_t)n);
}

/* What encode_block made of a block, when it wrote no LZ4 output (else: its length > 0). */
enum { BLOCK_ZERO = 0, BLOCK_RAW = -1, BLOCK_NO_ROOM = -2 };

/*
 * One block of `size` bytes at blk, encoded at dst where `room` bytes are free. The rules
 * of both loops below: all zero -> BLOCK_ZERO; LZ4 output of 7/8 of the block or more (or a
 * failure) -> BLOCK_RAW; else the LZ4 output's length. `raw_here`: a raw block is copied to
 * dst too, so it needs room for the whole block (else for LZ4's capped output only);
 * BLOCK_NO_ROOM when there is less.
 */
static long encode_block(const unsigned char *blk, long size, unsigned char *dst, long room,
			 int raw_here, int acceleration, void *state, reset_fn reset,
			 compress_fn compress, bound_fn bound)
{
	long limit = (size * 7 + 7) / 8;
	long cap = limit - 1;   /* output of limit bytes or more is stored raw */
	int r;

	if (all_zero(blk, (size_t)size))
		return BLOCK_ZERO;
	if (cap > bound((int)size))
		cap = bound((int)size);
	if ((raw_here ? size : cap) > room)
		return BLOCK_NO_ROOM;
	reset(state);
	r = compress(state, (const char *)blk, (char *)dst, (int)size, (int)cap, acceleration);
	return r <= 0 || r >= limit ? BLOCK_RAW : r;
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
		long r = encode_block(src + off, size, out + opos, out_cap - opos, 0,
				      acceleration, state, reset, compress, bound);

		if (r == BLOCK_ZERO) {
			sizes[b] = 0;
			continue;
		}
		if (r == BLOCK_NO_ROOM)
			return -1;
		if (r == BLOCK_RAW) {
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

/*
 * zdtm_encode_blocks with every stored byte in out, back to back in block order: raw
 * blocks are copied there too (the copy is of a block just read, still in the cache), so
 * the whole payload is one buffer (no pieces to join, no Python work per block). sizes[i]
 * as there. Returns the payload's length, or -1 when out (out_cap bytes) could be too
 * small (n bytes are always enough: no block is stored bigger than it is).
 */
long zdtm_encode_packed(const unsigned char *src, long n, unsigned char *out, long out_cap,
			long block, int acceleration, void *state, reset_fn reset,
			compress_fn compress, bound_fn bound, uint32_t *sizes)
{
	long opos = 0, b = 0;

	for (long off = 0; off < n; off += block, b++) {
		long size = n - off < block ? n - off : block;
		long r = encode_block(src + off, size, out + opos, out_cap - opos, 1,
				      acceleration, state, reset, compress, bound);

		if (r == BLOCK_NO_ROOM)
			return -1;
		if (r == BLOCK_RAW) {
			memcpy(out + opos, src + off, (size_t)size);
			r = size;
		}
		sizes[b] = (uint32_t)r;
		opos += r;
	}
	return opos;
}

typedef int (*decompress_fn)(const char *src, char *dst, int src_size, int dst_cap);

/*
 * The decoder's counterpart: decode nblocks consecutive stored blocks (sizes[i] bytes
 * each, back to back in src, src_len bytes in all) of `block` decoded bytes each (the
 * last may be shorter; total decoded bytes in all) into out, block i at i * block.
 * A size of 0 is a zero block: memset when zero_fill, else left alone (out already holds
 * zeros there, or the caller skips it); the block's size stores it raw: copied to out
 * when copy_raw, else left where it is (its run points into src: a writer writes it from
 * there, one pass over memory less); anything else is an LZ4 block, which must decode to
 * exactly the block's size.
 *
 * runs gets (offset in out, length, offset in src or -1: the bytes are in out) triples of
 * the data the decoded range holds, in order, adjacent data merged. The gaps between runs
 * are zeros: zero blocks, and every `unit` bytes (a page) of a decoded or raw block that
 * is all zero, so that a writer leaves them as holes instead of writing zeros (unit 0:
 * whole blocks only). Returns the number of runs (at most one per unit or block), or
 * -1 - i when block i is bad (short, too large or corrupt; the caller decodes again in
 * Python to say which).
 */
struct runs {
	int64_t *r;
	long n;
};

static void add_run(struct runs *rs, long off, long len, long from)
{
	int64_t *last = rs->n ? rs->r + 3 * (rs->n - 1) : NULL;

	if (last && last[0] + last[1] == off &&
	    (from < 0 ? last[2] < 0 : last[2] >= 0 && last[2] + last[1] == from)) {
		last[1] += len;
		return;
	}
	rs->r[3 * rs->n] = off;
	rs->r[3 * rs->n + 1] = len;
	rs->r[3 * rs->n + 2] = from;
	rs->n++;
}

/* data[0, n) stands for out[off, off + n) (from: where data is in src, -1 for out):
 * record its units that are not all zero. */
static void add_data(struct runs *rs, const unsigned char *data, long off, long n,
		     long unit, long from)
{
	if (unit <= 0) {
		add_run(rs, off, n, from);
		return;
	}
	for (long u = 0; u < n; u += unit) {
		long len = n - u < unit ? n - u : unit;

		if (!all_zero(data + u, (size_t)len))
			add_run(rs, off + u, len, from < 0 ? -1 : from + u);
	}
}

long zdtm_decode_blocks(const unsigned char *src, long src_len, const uint32_t *sizes,
			long nblocks, long block, long total, unsigned char *out,
			int zero_fill, int copy_raw, decompress_fn decompress, int64_t *runs,
			long unit)
{
	struct runs rs = { runs, 0 };
	long pos = 0, off = 0;

	for (long b = 0; b < nblocks; b++, off += block) {
		long nbytes = total - off < block ? total - off : block;
		long size = sizes[b];

		if (nbytes <= 0)
			return -1 - b;
		if (size == 0) {
			if (zero_fill)
				memset(out + off, 0, (size_t)nbytes);
			continue;
		}
		if (size > nbytes || size > src_len - pos)
			return -1 - b;
		if (size == nbytes && !copy_raw) {
			add_data(&rs, src + pos, off, nbytes, unit, pos);
			pos += size;
			continue;
		}
		if (size == nbytes) {
			memcpy(out + off, src + pos, (size_t)nbytes);
		} else if (decompress((const char *)src + pos, (char *)out + off, (int)size,
				      (int)nbytes) != nbytes) {
			return -1 - b;
		}
		pos += size;
		add_data(&rs, out + off, off, nbytes, unit, -1);
	}
	return rs.n;
}
