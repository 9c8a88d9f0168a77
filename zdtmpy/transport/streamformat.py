"""The zdtmpy stream file: CRIU image files multiplexed into one checksummed record stream.

Layout (docs/STREAM-FORMAT.md): a 20-byte header, then records
`u8 type, u8 0, u16 0, u32 file_id, u64 offset, u32 length, payload, u32 crc32`, all
little-endian, the CRC covering the record header and payload. Files are opened, fed and
closed by records that may interleave; an END record closes the stream. Readers check
every CRC, offset and size, and refuse a stream without its END record, so a truncated or
corrupted stream is an error, never a short image.

Pages files may be carried as BLOCKS records: the file's bytes cut into blocks of one page
or one region on a grid of the pages file itself (criu sends pages before the pagemap
that describes them, so the grid cannot follow pagemap entries), each block stored as
zero / raw / LZ4 exactly like CRIU's compressed images.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, NoReturn

from ..codec import LAYOUT_BY_ID, OFF, Compression
from ..codec.algorithm import Buffer
from ..errors import ImageError
from .crc import crc32

MAGIC = b"ZDTMSTRM"
VERSION = 1
_HEAD = struct.Struct("<8sHBBI")  # magic, version, layout id, 0, region size
RECORD_HEAD = struct.Struct("<BBHIQI")   # type, 0, 0, file id, offset, payload length
CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + CRC.size
REC_OVERHEAD = RECORD_HEAD.size + CRC.size

OPEN, DATA, CLOSE, END, BLOCKS = 1, 2, 3, 4, 5
TYPE_NAMES = {OPEN: "open", DATA: "data", CLOSE: "close", END: "end", BLOCKS: "blocks"}
_BLK = struct.Struct("<IIQ")  # block bytes, number of blocks, decoded length
MAX_PAYLOAD = 16 << 20   # a bigger length field is corruption, never an allocation
# capture writes at most one chunk (1 MiB) or one 4 MiB region per BLOCKS record: a record
# announcing more decoded bytes is refused before anything is decoded or allocated
MAX_DECODED = 16 << 20
MAX_NAME = 255
MAX_OPEN_FILES = 4096


class StreamError(ImageError):
    """A stream file is truncated, corrupt, or breaks the record rules."""


def check_name(name: object, where: str = "peer") -> str:
    """An image file name as a peer may send it: one plain path component, nothing else."""
    if not isinstance(name, str) or not name:
        raise StreamError(f"{where}: empty image file name")
    bad = None
    if name in (".", ".."):
        bad = "is a relative directory"
    elif "/" in name or "\\" in name:
        bad = "contains a path separator"
    elif len(name.encode()) > MAX_NAME:
        bad = f"is longer than {MAX_NAME} bytes"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        bad = "contains control characters"
    elif name.startswith(".") or name.endswith(".part"):
        bad = "is a hidden or staging name"
    if bad:
        raise StreamError(f"{where}: refusing image file name {name!r}: it {bad} "
                          "(expected a plain file name inside the images directory)")
    return name


@dataclass(frozen=True)
class Header:
    compression: Compression   # how the stream's BLOCKS records store pages

    @property
    def enabled(self) -> bool:
        return self.compression.enabled


def encode_header(compression: Compression) -> bytes:
    region_size = compression.region_size if compression.is_region else 0
    head = _HEAD.pack(MAGIC, VERSION, compression.layout_id, 0, region_size)
    return head + CRC.pack(crc32(head))


def decode_header(data: bytes, where: str) -> Header:
    if len(data) < HEADER_SIZE:
        raise StreamError(f"{where}: truncated: {len(data)} bytes, shorter than the "
                          f"{HEADER_SIZE}-byte stream header")
    magic, version, layout_id, _, region = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise StreamError(f"{where}: not a zdtmpy stream (magic {magic!r}, expected {MAGIC!r})")
    if CRC.unpack_from(data, _HEAD.size)[0] != crc32(data[:_HEAD.size]):
        raise StreamError(f"{where}: stream header checksum mismatch (corrupt header)")
    if version != VERSION:
        raise StreamError(f"{where}: stream version {version} is not supported (only {VERSION})")
    if layout_id not in LAYOUT_BY_ID:
        raise StreamError(f"{where}: unknown compression layout {layout_id} in the stream "
                          "header")
    try:
        return Header(Compression.from_ids(layout_id, region))
    except ImageError as exc:
        raise StreamError(f"{where}: stream header: {exc}") from None


def encode_record(rtype: int, file_id: int, offset: int,
                  payload: Buffer = b"") -> tuple[bytes, int]:
    """A record's header and the CRC of header and payload."""
    head = RECORD_HEAD.pack(rtype, 0, 0, file_id, offset, len(payload))
    crc = crc32(payload, crc32(head))
    return head, crc


def blocks_record(fid: int, offset: int, block_bytes: int, decoded_len: int,
                  sizes: Sequence[int], payload: Buffer) -> tuple[bytes, Buffer, bytes]:
    """A whole BLOCKS record (header + blocks header + sizes, the payload, the CRC), the
    same bytes as StreamWriter.blocks writes, built without the writer: a pool thread
    does the CRC and the packing, the writer only writes (StreamWriter.put_blocks).
    sizes: a list, or C uint32s (array 'I': taken as they are on a little-endian host)."""
    if type(sizes) is array and sizes.itemsize == 4 and sys.byteorder == "little":
        packed = sizes.tobytes()
    else:
        packed = struct.pack(f"<{len(sizes)}I", *sizes)
    prefix = _BLK.pack(block_bytes, len(sizes), decoded_len) + packed
    head = RECORD_HEAD.pack(BLOCKS, 0, 0, fid, offset, len(prefix) + len(payload))
    crc = crc32(payload, crc32(prefix, crc32(head)))
    return head + prefix, payload, CRC.pack(crc)


class StreamWriter:
    """Writes a stream to a binary file object; tracks each file's size for CLOSE."""

    def __init__(self, out: BinaryIO, compression: Compression = OFF,
                 chunk: int = 1 << 20) -> None:
        self.out = out
        self.chunk = chunk
        self._sizes: dict[int, int] = {}   # file id -> bytes so far (open files)
        self.names: set[str] = set()       # every file opened
        self._next_id = 1
        self.files = 0
        self.data_bytes = 0   # payload bytes of all files
        self.written = 0      # bytes of stream written
        self._emit(encode_header(compression))

    def _emit(self, data: Buffer) -> None:
        self.out.write(data)
        self.written += len(data)

    def _record(self, rtype: int, file_id: int, offset: int, payload: Buffer = b"") -> None:
        head, crc = encode_record(rtype, file_id, offset, payload)
        self._emit(head)
        if payload:
            self._emit(payload)
        self._emit(CRC.pack(crc))

    def open(self, name: str) -> int:
        check_name(name)
        if name in self.names:
            raise StreamError(f"{name}: sent twice in one stream")
        self.names.add(name)
        fid = self._next_id
        self._next_id += 1
        self._sizes[fid] = 0
        self._record(OPEN, fid, 0, name.encode())
        return fid

    def write(self, fid: int, data: Buffer) -> None:
        mv = memoryview(data)
        for off in range(0, len(mv), self.chunk):
            piece = mv[off:off + self.chunk]
            self._record(DATA, fid, self._sizes[fid], piece)
            self._sizes[fid] += len(piece)
            self.data_bytes += len(piece)

    def blocks(self, fid: int, block_bytes: int, decoded_len: int, sizes: list[int],
               payload: Buffer) -> None:
        """One BLOCKS record: encoded blocks of `decoded_len` bytes of the file."""
        head = _BLK.pack(block_bytes, len(sizes), decoded_len)
        body = head + struct.pack(f"<{len(sizes)}I", *sizes) + payload
        self._record(BLOCKS, fid, self._sizes[fid], body)
        self._sizes[fid] += decoded_len
        self.data_bytes += decoded_len

    def put_blocks(self, fid: int, offset: int, decoded_len: int,
                   record: tuple[bytes, Buffer, bytes]) -> None:
        """A BLOCKS record built by `blocks_record` (in a pool thread), in file order."""
        if offset != self._sizes[fid]:
            raise StreamError(f"file #{fid}: blocks record for offset {offset}, the file is "
                              f"at {self._sizes[fid]} (records out of order)")
        for part in record:
            self._emit(part)
        self._sizes[fid] += decoded_len
        self.data_bytes += decoded_len

    def close(self, fid: int) -> None:
        self._record(CLOSE, fid, self._sizes.pop(fid))
        self.files += 1

    def end(self) -> None:
        if self._sizes:
            raise StreamError(f"stream end with {len(self._sizes)} file(s) still open")
        self._record(END, self.files, self.data_bytes)
        self.out.flush()


@dataclass
class Record:
    type: int
    file_id: int
    offset: int
    payload: bytes
    pos: int  # stream position of the record header
    name: str = ""  # the file's name (open/data/close)
    length: int = 0  # payload bytes in the stream

    def data(self, where: str = "") -> bytes:
        """The file bytes this record carries (BLOCKS decoded)."""
        if self.type == BLOCKS:
            return decode_blocks(self.payload, f"{where}: {self.name} at file offset "
                                 f"{self.offset}")
        return self.payload


def blocks_header(payload: Buffer, length: int, where: str) -> tuple[int, int, int]:
    """(block bytes, number of blocks, decoded length) of a BLOCKS payload, checked."""
    if length < _BLK.size or len(payload) < _BLK.size:
        raise StreamError(f"{where}: blocks record too short for its header")
    bb: int
    n: int
    total: int
    bb, n, total = _BLK.unpack_from(payload)
    if (not bb or bb % 4096 or bb > 4 << 20 or not n or not total
            or not (n - 1) * bb < total <= n * bb or length < _BLK.size + 4 * n):
        raise StreamError(f"{where}: corrupt blocks header (block {bb} bytes, {n} blocks, "
                          f"{total} bytes)")
    if total > MAX_DECODED:
        raise StreamError(f"{where}: blocks record announces {total} decoded bytes, more "
                          f"than a record may carry ({MAX_DECODED}); refusing to decode it")
    return bb, n, total


def decode_blocks(payload: bytes, where: str) -> bytes:
    """Decoded bytes of a BLOCKS payload (zero / raw / LZ4 blocks, CRIU's semantics)."""
    from ..codec.coding import decode_chunk

    bb, n, total = blocks_header(payload, len(payload), where)
    sizes = struct.unpack_from(f"<{n}I", payload, _BLK.size)
    start = _BLK.size + 4 * n
    if sum(sizes) != len(payload) - start:
        raise StreamError(f"{where}: block sizes sum to {sum(sizes)}, the record holds "
                          f"{len(payload) - start} bytes")
    try:
        return decode_chunk(memoryview(payload)[start:], sizes, bb, total)
    except ImageError as exc:
        raise StreamError(f"{where}: {exc}") from None


def read_exact(f: BinaryIO, n: int) -> bytes:
    """n bytes from f; fewer only at its end (b"" when it is already there)."""
    buf = f.read(n)
    if len(buf) == n or not buf:
        return buf
    parts = [buf]
    got = len(buf)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class StreamReader:
    """Sequential reader: yields records after checking CRC, offsets and the record rules.

    `skip_data=True` seeks over DATA payloads (a seekable file) without checking their CRC;
    the caller checks them when it reads them (see read_chunk)."""

    def __init__(self, f: BinaryIO, where: str, skip_data: bool = False) -> None:
        self.f = f
        self.where = where
        self.skip_data = skip_data
        self.header = decode_header(read_exact(f, HEADER_SIZE), where)
        self.pos = HEADER_SIZE
        self.names: dict[int, str] = {}    # id -> name, every file seen
        self.sizes: dict[int, int] = {}    # id -> size, open files
        self.closed: dict[str, int] = {}   # name -> size
        self._seen: set[str] = set()
        self.ended = False
        self.total = 0

    def _fail(self, what: str, index: int | None = None) -> NoReturn:
        at = f" at byte {self.pos}" if index is None else f" at byte {index}"
        raise StreamError(f"{self.where}: {what}{at}")

    def __iter__(self) -> Iterator[Record]:
        while True:
            rec = self.next()
            if rec is None:
                return
            yield rec

    def next(self) -> Record | None:
        start = self.pos
        self.current: tuple[int, int, int, int, int] | None = None   # the record being read
        head = read_exact(self.f, RECORD_HEAD.size)
        if not head:
            if not self.ended:
                self._fail("truncated: the stream ends without its end record (capture did "
                           "not finish, or the file was cut)")
            return None
        if self.ended:
            self._fail("data after the end record")
        if len(head) < RECORD_HEAD.size:
            self._fail(f"truncated inside a record header ({len(head)} of "
                       f"{RECORD_HEAD.size} bytes)")
        rtype: int
        fid: int
        offset: int
        length: int
        rtype, z1, z2, fid, offset, length = RECORD_HEAD.unpack(head)
        if rtype not in TYPE_NAMES or z1 or z2 or length > MAX_PAYLOAD:
            self._fail(f"corrupt record header (type {rtype}, length {length})")
        self.pos += RECORD_HEAD.size
        self.current = (start, rtype, fid, offset, length)
        if self.skip_data and rtype in (DATA, BLOCKS):
            payload = b""
            if rtype == BLOCKS:  # its decoded length is needed to follow the file offsets
                payload = read_exact(self.f, min(length, _BLK.size))
            self.f.seek(length - len(payload), os.SEEK_CUR)
            tail = read_exact(self.f, CRC.size)
            if len(tail) < CRC.size:
                got = max(0, self.f.seek(0, os.SEEK_END) - self.pos)
                self._fail(f"truncated inside a {TYPE_NAMES[rtype]} record of "
                           f"{self._name(fid)} ({got} of {length + CRC.size} bytes)", start)
        else:
            body = read_exact(self.f, length + CRC.size)
            if len(body) < length + CRC.size:
                self._fail(f"truncated inside a {TYPE_NAMES[rtype]} record of "
                           f"{self._name(fid)} ({len(body)} of {length + CRC.size} bytes)",
                           start)
            payload = body[:length]
            (crc,) = CRC.unpack_from(body, length)
            if crc != crc32(payload, crc32(head)):
                self._fail(f"checksum mismatch in a {TYPE_NAMES[rtype]} record of "
                           f"{self._name(fid)} (file offset {offset}): the stream is corrupt",
                           start)
        self.pos += length + CRC.size
        rec = Record(rtype, fid, offset, payload, start)
        rec.length = length
        if rtype == BLOCKS:
            length = blocks_header(payload, length, f"{self.where}: {self._name(fid)} record "
                                   f"at byte {start}")[2]
        self._apply(rec, length)
        return rec

    def _name(self, fid: int) -> str:
        return self.names.get(fid, f"file #{fid}")

    def _apply(self, rec: Record, length: int) -> None:
        fid = rec.file_id
        if rec.type == OPEN:
            name = rec.payload.decode(errors="replace")
            check_name(name, f"{self.where} (record at byte {rec.pos})")
            if fid in self.names or name in self._seen:
                self._fail(f"{name} (file #{fid}) opened twice", rec.pos)
            if len(self.sizes) >= MAX_OPEN_FILES:
                self._fail(f"more than {MAX_OPEN_FILES} files open at once", rec.pos)
            self.names[fid] = name
            self._seen.add(name)
            self.sizes[fid] = 0
        elif rec.type in (DATA, BLOCKS, CLOSE):
            if fid not in self.sizes:
                self._fail(f"{TYPE_NAMES[rec.type]} record for {self._name(fid)}, which is "
                           "not open", rec.pos)
            if rec.offset != self.sizes[fid]:
                self._fail(f"{self._name(fid)}: record at file offset {rec.offset}, expected "
                           f"{self.sizes[fid]} (a record is missing)", rec.pos)
            if rec.type != CLOSE:
                self.sizes[fid] += length
                self.total += length
            else:
                self.closed[self.names[fid]] = self.sizes.pop(fid)
        else:  # END
            if self.sizes:
                names = ", ".join(sorted(self._name(i) for i in self.sizes))
                self._fail(f"end record while files are still open: {names}", rec.pos)
            if fid != len(self.closed) or rec.offset != self.total:
                self._fail(f"end record says {fid} files / {rec.offset} bytes, the stream "
                           f"holds {len(self.closed)} / {self.total}", rec.pos)
            self.ended = True
        rec.name = self.names.get(fid, "")
