"""A tiny parser for the proto2 subset our .proto files use, building descriptors at run time.

Why: the project keeps CRIU's message definitions as .proto text but must not need protoc.
Supported: `syntax`, `package`, `import`, comments, top-level `message` and `enum` blocks,
fields labelled required/optional/repeated of scalar, message or enum type, and the
`[packed = ...]` / `[default = ...]` options.
Anything else is a ValueError naming the file and line, so a typo never loads silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NoReturn

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT, "int64": _F.TYPE_INT64,
    "uint64": _F.TYPE_UINT64, "int32": _F.TYPE_INT32, "fixed64": _F.TYPE_FIXED64,
    "fixed32": _F.TYPE_FIXED32, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES, "uint32": _F.TYPE_UINT32, "sfixed32": _F.TYPE_SFIXED32,
    "sfixed64": _F.TYPE_SFIXED64, "sint32": _F.TYPE_SINT32, "sint64": _F.TYPE_SINT64,
}
_LABELS = {"required": _F.LABEL_REQUIRED, "optional": _F.LABEL_OPTIONAL,
           "repeated": _F.LABEL_REPEATED}

_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|"[^"]*"|[A-Za-z_][\w.]*|-?(?:0x[0-9a-fA-F]+|\d+)'
                    r'|[{}=;,\[\]]', re.DOTALL)


def _tokens(text: str, name: str) -> Iterator[tuple[str, int]]:
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"{name}:{line}: unexpected character {text[pos]!r}")
        tok = m.group()
        if not (tok.isspace() or tok.startswith(("//", "/*"))):
            yield tok, line
        line += tok.count("\n")
        pos = m.end()


class _Stream:
    def __init__(self, text: str, name: str) -> None:
        self.toks = list(_tokens(text, name))
        self.i = 0
        self.name = name

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def next(self, expect: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise ValueError(f"{self.name}: unexpected end of file")
        tok, line = self.toks[self.i]
        self.i += 1
        if expect is not None and tok != expect:
            raise ValueError(f"{self.name}:{line}: expected {expect!r}, got {tok!r}")
        return tok

    def fail(self, what: str) -> NoReturn:
        line = self.toks[min(self.i, len(self.toks) - 1)][1]
        raise ValueError(f"{self.name}:{line}: {what}")


def parse_proto(text: str, name: str) -> Any:
    """Parse .proto text into a FileDescriptorProto called `name`."""
    fdp = descriptor_pb2.FileDescriptorProto(name=name, syntax="proto2")
    s = _Stream(text, name)
    while s.peek() is not None:
        tok = s.next()
        if tok == "syntax":
            s.next("=")
            if s.next() != '"proto2"':
                s.fail("only proto2 is supported")
            s.next(";")
        elif tok == "package":
            fdp.package = s.next()
            s.next(";")
        elif tok == "import":
            fdp.dependency.append(s.next().strip('"'))
            s.next(";")
        elif tok == "message":
            _parse_message(s, fdp.message_type.add())
        elif tok == "enum":
            _parse_enum(s, fdp.enum_type.add())
        else:
            s.fail(f"unsupported statement {tok!r}")
    return fdp


def _parse_message(s: _Stream, msg: Any) -> None:
    msg.name = s.next()
    s.next("{")
    while s.peek() != "}":
        label = s.next()
        if label not in _LABELS:
            s.fail(f"expected a field label, got {label!r}")
        ftype, fname = s.next(), s.next()
        s.next("=")
        number = s.next()
        if not number.isdigit():
            s.fail(f"bad field number {number!r}")
        field = msg.field.add(name=fname, number=int(number), label=_LABELS[label])
        if ftype in _SCALARS:
            field.type = _SCALARS[ftype]
        else:  # a message or enum type, resolved in load_messages
            field.type_name = ftype
        if s.peek() == "[":
            s.next()
            while True:
                _field_option(s, field, s.next())
                if s.peek() != ",":
                    break
                s.next(",")
            s.next("]")
        s.next(";")
    s.next("}")
    if s.peek() == ";":  # criu's files end some blocks with "};"
        s.next()


def _field_option(s: _Stream, field: Any, key: str) -> None:
    s.next("=")
    value = s.next()
    if key == "packed" and value in ("true", "false"):
        field.options.packed = value == "true"
    elif key == "default":
        try:
            field.default_value = str(int(value, 0))
        except ValueError:  # an enum value name, true / false
            field.default_value = value
    else:
        s.fail(f"unsupported field option {key}")


def _parse_enum(s: _Stream, enum: Any) -> None:
    enum.name = s.next()
    s.next("{")
    while s.peek() != "}":
        name = s.next()
        s.next("=")
        number = s.next()
        try:
            enum.value.add(name=name, number=int(number, 0))
        except ValueError:
            s.fail(f"bad enum value {number!r}")
        s.next(";")
    s.next("}")
    if s.peek() == ";":
        s.next()


def load_messages(sources: dict[str, str]) -> dict[str, Any]:
    """sources: {file name: proto text}, dependencies first. Returns {full name: class}."""
    pool = descriptor_pool.DescriptorPool()
    classes = {}
    for name, text in sources.items():
        fdp = parse_proto(text, name)
        enums = {e.name for e in fdp.enum_type}
        for msg in fdp.message_type:  # named types become absolute within the package
            for field in msg.field:
                if field.type_name and not field.type_name.startswith("."):
                    field.type = _F.TYPE_ENUM if field.type_name in enums else _F.TYPE_MESSAGE
                    prefix = f".{fdp.package}." if fdp.package else "."
                    field.type_name = prefix + field.type_name
        pool.Add(fdp)
        prefix = f"{fdp.package}." if fdp.package else ""
        for msg in fdp.message_type:
            desc = pool.FindMessageTypeByName(prefix + msg.name)
            classes[msg.name] = message_factory.GetMessageClass(desc)
    return classes
