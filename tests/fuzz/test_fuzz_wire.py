"""Fuzz the page server: its header parser with arbitrary bytes, and whole sessions over
real sockets mutated at the byte and header-field level. Every session ends in success or
a PageServerError-style refusal (never an internal error), the server keeps serving,
nothing is staged or written outside its images directory."""

import os
import socket
import struct
import time

import pytest
from fuzzkit import Counts, guard, outcome, sandbox, snapshot
from hypothesis import given
from hypothesis import strategies as st
from imagemut import INTERESTING64

from zdtmpy.codec import Compression
from zdtmpy.codec.coding import encode_chunk
from zdtmpy.compress.synth import make_layer
from zdtmpy.images import PE_LAZY, PE_PARENT, PE_PRESENT
from zdtmpy.transport import pageserver as ps
from zdtmpy.transport import pswire

PS = 4096
PID = 42
A = 0x7F0000000000


@pytest.mark.parametrize("size", [24, 32])
def test_header_parser(size):
    counts = Counts(f"wire-parser-{size}")
    layout = ps.HeaderLayout(size)

    @given(data=st.binary(min_size=size, max_size=size))
    def case(data):
        def parse():
            h = layout.unpack(data)
            pswire.pagemap_for(h.dst_id)
            pswire.check_range(h)
            pswire.check_page_flags(h, h.flags)
        with guard("header parser"):
            counts.add("wire-parser", f"hdr{size}", "byte", outcome(parse))

    try:
        case()
    finally:
        counts.report()


def session(compressed):
    """A good dump session as (header fields, payload) steps."""
    data = bytes(range(256)) * 16 * 3 + os.urandom(2 * PS)
    steps = [((ps.OPEN2, 0, 0, 0, ps.encode_dst(PID)), b"")]
    if compressed:
        sizes, payload = encode_chunk(data, PS)
        body = struct.pack(f"<{len(sizes)}I", *sizes) + payload
        steps.append(((ps.ADD_F_COMPRESSED, PE_PRESENT, 5, A, ps.encode_dst(PID)),
                      struct.pack("<I", len(body)) + body))
    else:
        steps.append(((ps.ADD_F, PE_PRESENT, 5, A, ps.encode_dst(PID)), data))
    steps += [((ps.ADD_F, PE_LAZY, 2, A + 0x10000, ps.encode_dst(PID)), b""),
              ((ps.ADD_F, PE_PARENT, 1, A + 0x20000, ps.encode_dst(PID)), b""),
              ((ps.CLOSE, 0, 0, 0, 0), b"")]
    return steps


@st.composite
def wire_mutation(draw, nsteps):
    level = draw(st.sampled_from(["byte", "field", "structure"]))
    if level == "field":
        i = draw(st.integers(0, nsteps - 1))
        k = draw(st.integers(0, 4))
        value = draw(st.one_of(st.sampled_from(INTERESTING64 + [1, 2, 3, 4, 5, 6, 7, 8,
                                                                0x1023, 0x1024]),
                               st.integers(0, (1 << 16) - 1)))
        return level, ("field", i, k, value)
    if level == "structure":
        op = draw(st.sampled_from(["drop", "repeat", "swap", "cut-close", "garbage-after"]))
        return level, (op, draw(st.integers(0, nsteps - 1)), draw(st.binary(max_size=40)))
    op = draw(st.sampled_from(["flip", "set", "truncate", "insert"]))
    return level, (op, draw(st.integers(0, 1 << 16)), draw(st.binary(min_size=1, max_size=8)))


def render(layout, steps, mut):
    level, m = mut
    steps = [list(s) for s in steps]
    if m[0] == "field":
        _, i, k, value = m
        fields = list(steps[i][0])
        limit = (1 << 16) - 1 if k in (0, 1) else (1 << 64) - 1
        if layout.size == 24 and k == 2:
            limit = (1 << 32) - 1
        fields[k] = value & limit
        steps[i][0] = tuple(fields)
    elif m[0] == "drop":
        del steps[m[1]]
    elif m[0] == "repeat":
        steps.insert(m[1], steps[m[1]])
    elif m[0] == "swap" and m[1] + 1 < len(steps):
        steps[m[1]], steps[m[1] + 1] = steps[m[1] + 1], steps[m[1]]
    elif m[0] == "cut-close":
        steps = steps[:-1]
    blob = b"".join(layout.pack(c, f, n, v, d) + p for (c, f, n, v, d), p in steps)
    if m[0] == "garbage-after":
        blob += m[2]
    elif level == "byte":
        op, pos, b = m
        data = bytearray(blob)
        at = pos % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << (b[0] % 8)
        elif op == "set":
            data[at:at + len(b)] = b
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = b
        blob = bytes(data)
    return blob


def converse(port, blob):
    """Send the whole session, half-close, read whatever the server answers until it hangs
    up (a stuck server shows as the case deadline)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(blob)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
        except OSError:
            pass  # the server may hang up first: that is its answer


@pytest.mark.parametrize("compressed", [False, True], ids=["add_f", "compressed"])
@pytest.mark.parametrize("size", [24, 32])
def test_dump_sessions(tmp_path_factory, size, compressed):
    counts = Counts(f"wire-session-{size}-{compressed}")
    base = tmp_path_factory.mktemp("wire")
    steps = session(compressed)
    layout = ps.HeaderLayout(size)

    with sandbox(base) as root:
        images = root / "img"
        make_layer(images, {}, pids=[PID])
        srv = ps.PageServer(images, header_size=size, timeout=0.3,
                            spec=Compression("page"), log_path=base / "ps.log")
        srv.start()
        fmt = f"hdr{size}-{'compressed' if compressed else 'add_f'}"

        @given(mut=wire_mutation(len(steps)))
        def case(mut):
            blob = render(layout, steps, mut)
            outside = snapshot(root, skip=images)
            index, strays = len(srv.results), len(srv.ignored)
            with guard(f"session {mut}"):
                converse(srv.port, blob)
                while len(srv.results) == index and len(srv.ignored) == strays:
                    time.sleep(0.01)  # the session ends: as a result, or ignored as stray
            if len(srv.results) > index:
                got = outcome(lambda: srv.wait(0, index))
                result = srv.results[index]
            else:  # refused at its first command: not counted as criu's session
                got, result = "refused", srv.ignored[strays]
            assert not (result.error or "").startswith("internal error"), result.error
            counts.add("page-server", fmt, mut[0], got)
            assert srv._thread.is_alive(), "the server died"
            assert not [n for n in os.listdir(images) if n.startswith(".")], "staging left"
            assert snapshot(root, skip=images) == outside
            for n in os.listdir(images):  # the next case starts from the bare dump again
                if n.startswith(("pagemap-", "pages-")):
                    os.unlink(images / n)

        try:
            case()
        finally:
            srv.stop()
            counts.report()
