"""Mutations of an image directory at four levels, as hypothesis strategies.

byte:   bit flips, overwrites, truncation, insertion, appended garbage in one file
field:  one protobuf field of a pagemap entry / head, the inventory, an mm VMA, pstree
type:   one file replaced by a FIFO, a directory, a symlink (inside or outside), emptied,
        deleted
dir:    orphan pages, second spellings, crafted journals and stages, odd parent links
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from zdtmpy.compress.install import JOURNAL_TMP, STAGE
from zdtmpy.images import messages, read_image, write_image
from zdtmpy.images.imageset import JOURNAL

INTERESTING = [0, 1, 2, 3, 7, 8, 15, 255, 256, 1023, 1024, 4095, 4096, 4097, 1 << 16,
               (1 << 20) - 1, 1 << 20, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
INTERESTING64 = INTERESTING + [1 << 32, 1 << 47, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


def u32():
    return st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 32) - 1))


def u64():
    return st.one_of(st.sampled_from(INTERESTING64), st.integers(0, (1 << 64) - 1))


@dataclass
class Mutation:
    level: str
    what: str
    apply: object  # callable(setdir: Path, root: Path) -> None

    def __repr__(self):
        return f"Mutation({self.level}: {self.what})"


def _files(setdir: Path) -> list[str]:
    return sorted(n for n in os.listdir(setdir) if (setdir / n).is_file())


@st.composite
def byte_mutation(draw, names):
    name = draw(st.sampled_from(names))
    op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "append"]))
    pos = draw(st.integers(0, 1 << 22))
    blob = draw(st.binary(min_size=1, max_size=64))

    def apply(setdir, root):
        p = setdir / name
        if p.is_symlink() or not p.is_file():
            return  # an earlier mutation made it a FIFO, a link...: leave it so
        data = bytearray(p.read_bytes())
        at = pos % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << (blob[0] % 8)
        elif op == "set":
            data[at:at + len(blob)] = blob
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = blob
        elif op == "delete":
            del data[at:at + len(blob)]
        else:
            data += blob
        p.write_bytes(bytes(data))
    return Mutation("byte", f"{op} {name} at {pos} ({blob[:8].hex()})", apply)


_ENTRY_FIELDS = ["vaddr", "compat_nr_pages", "in_parent", "flags", "nr_pages",
                 "compressed_size", "total_compressed_size", "region_pages"]


@st.composite
def field_mutation(draw, names):
    pagemaps = [n for n in names if n.startswith("pagemap-")]
    mms = [n for n in names if n.startswith("mm-")]
    targets = ["inventory"] + (["entry", "head"] if pagemaps else []) + \
        (["vma"] if mms else []) + (["pstree"] if "pstree.img" in names else [])
    target = draw(st.sampled_from(targets))
    index = draw(st.integers(0, 1 << 10))
    if target == "entry":
        name = draw(st.sampled_from(pagemaps))
        fld = draw(st.sampled_from(_ENTRY_FIELDS))
        small = fld in ("compat_nr_pages", "flags", "region_pages", "compressed_size")
        value = draw(u32() if small else u64())
        if fld == "in_parent":
            value = draw(st.booleans())
        op = draw(st.sampled_from(["set", "append", "pop", "clear"]))

        def apply(setdir, root):
            path = setdir / name
            raw = read_image(path)
            if len(raw.entries) < 2:
                return
            i = 1 + index % (len(raw.entries) - 1)
            msg = messages.PagemapEntry.FromString(raw.entries[i])
            if fld == "compressed_size":
                sizes = msg.compressed_size
                if op == "append" or not sizes:
                    sizes.append(value)
                elif op == "pop":
                    sizes.pop()
                elif op == "clear":
                    msg.ClearField("compressed_size")
                else:
                    sizes[index % len(sizes)] = value
            elif op == "clear" and fld not in ("vaddr", "compat_nr_pages"):
                msg.ClearField(fld)
            else:
                setattr(msg, fld, value)
            raw.entries[i] = msg.SerializeToString()
            write_image(path, raw.magic, raw.entries)
        return Mutation("field", f"{name} entry #{index} {fld} {op} {value}", apply)
    if target == "head":
        name = draw(st.sampled_from(pagemaps))
        value = draw(u32())

        def apply(setdir, root):
            raw = read_image(setdir / name)
            raw.entries[0] = messages.PagemapHead(pages_id=value).SerializeToString()
            write_image(setdir / name, raw.magic, raw.entries)
        return Mutation("field", f"{name} head pages_id {value}", apply)
    if target == "inventory":
        fld = draw(st.sampled_from(["img_version", "compress", "compress_region_size"]))
        value = draw(u32())
        clear = draw(st.booleans()) and fld != "img_version"

        def apply(setdir, root):
            raw = read_image(setdir / "inventory.img")
            inv = messages.InventoryEntry.FromString(raw.entries[0])
            inv.ClearField(fld) if clear else setattr(inv, fld, value)
            raw.entries[0] = inv.SerializeToString()
            write_image(setdir / "inventory.img", raw.magic, raw.entries)
        return Mutation("field", f"inventory {fld} {'cleared' if clear else value}", apply)
    if target == "vma":
        name = draw(st.sampled_from(mms))
        fld = draw(st.sampled_from(["start", "end", "shmid", "flags", "status"]))
        value = draw(u64() if fld in ("start", "end", "shmid") else u32())

        def apply(setdir, root):
            raw = read_image(setdir / name)
            mm = messages.MmEntry.FromString(raw.entries[0])
            if mm.vmas:
                setattr(mm.vmas[index % len(mm.vmas)], fld, value)
            raw.entries[0] = mm.SerializeToString()
            write_image(setdir / name, raw.magic, raw.entries)
        return Mutation("field", f"{name} vma #{index} {fld} {value}", apply)
    value = draw(u32())

    def apply(setdir, root):
        raw = read_image(setdir / "pstree.img")
        e = messages.PstreeEntry.FromString(raw.entries[index % len(raw.entries)])
        e.pid = value
        raw.entries[index % len(raw.entries)] = e.SerializeToString()
        write_image(setdir / "pstree.img", raw.magic, raw.entries)
    return Mutation("field", f"pstree entry #{index} pid {value}", apply)


@st.composite
def type_mutation(draw, names):
    name = draw(st.sampled_from(names))
    kind = draw(st.sampled_from(["fifo", "dir", "symlink-outside", "symlink-inside",
                                 "dangling", "empty", "delete"]))
    other = draw(st.sampled_from(names))

    def apply(setdir, root):
        p = setdir / name
        p.unlink()
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
            (p / "x").write_bytes(b"x")
        elif kind == "symlink-outside":
            os.symlink(root / "outside" / "victim.txt", p)
        elif kind == "symlink-inside":
            os.symlink(other if other != name else "inventory.img", p)
        elif kind == "dangling":
            os.symlink(root / "outside" / "nothing", p)
        elif kind == "empty":
            p.write_bytes(b"")
    return Mutation("type", f"{name} -> {kind}", apply)


_JOURNAL_NAMES = ["pages-1.img", "pagemap-25828.img", "inventory.img", "../outside/victim.txt",
                  "/etc/hostname", "", ".", "..", "parent", STAGE, JOURNAL, "x/y", "a.img"]


@st.composite
def dir_mutation(draw, names):
    kind = draw(st.sampled_from(["orphan", "second-spelling", "journal", "journal-tmp-dir",
                                 "stage-file", "stage-link", "parent-outside", "parent-self",
                                 "parent-file", "no-inventory", "stray-pagemap"]))
    name = draw(st.sampled_from(names))
    number = draw(st.integers(0, 1 << 20))
    if kind == "journal":
        files = draw(st.lists(st.one_of(st.sampled_from(_JOURNAL_NAMES), st.integers(),
                                        st.none()), max_size=5))
        backup = draw(st.one_of(st.booleans(), st.none(), st.just("yes")))
        stage = draw(st.sampled_from(["none", "dir", "link"]))
        staged = draw(st.lists(st.sampled_from(names + ["../outside/victim.txt"]),
                               max_size=3))
        body = draw(st.one_of(st.just(None), st.sampled_from(["{", "[]", "null", "5"])))

        def apply(setdir, root):
            doc = body if body is not None else json.dumps({"files": files, "backup": backup})
            (setdir / JOURNAL).write_text(doc)
            if stage == "dir":
                (setdir / STAGE).mkdir()
                for n in staged:
                    target = setdir / STAGE / n
                    if target.parent == setdir / STAGE and (setdir / n).is_file():
                        shutil.copy(setdir / n, target)
            elif stage == "link":
                os.symlink(root / "outside", setdir / STAGE)
        return Mutation("dir", f"journal {body or (files, backup)} stage={stage} {staged}",
                        apply)

    def apply(setdir, root):
        if kind == "orphan":
            (setdir / f"pages-{number}.img").write_bytes(bytes(4096))
        elif kind == "second-spelling" and name.startswith("pagemap-"):
            shutil.copy(setdir / name, setdir / name.replace("pagemap-", "pagemap-0"))
        elif kind == "journal-tmp-dir":
            (setdir / JOURNAL_TMP).mkdir()
        elif kind == "stage-file":
            (setdir / STAGE).write_bytes(b"x")
        elif kind == "stage-link":
            os.symlink(root / "outside", setdir / STAGE)
        elif kind in ("parent-outside", "parent-self", "parent-file"):
            link = setdir / "parent"
            if os.path.lexists(link):
                link.unlink()
            target = {"parent-outside": root / "outside", "parent-self": Path("."),
                      "parent-file": Path(name)}[kind]
            os.symlink(target, link)
        elif kind == "no-inventory":
            (setdir / "inventory.img").unlink()
        elif kind == "stray-pagemap" and name.startswith("pagemap-"):
            shutil.copy(setdir / name, setdir / f"pagemap-{number}.img")
    return Mutation("dir", f"{kind} ({name}, {number})", apply)


def mutations(names: list[str]):
    """One mutation of any level over a set holding `names`."""
    return st.one_of(byte_mutation(names), field_mutation(names), type_mutation(names),
                     dir_mutation(names))
