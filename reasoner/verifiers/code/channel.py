"""The result channel between the harness (in the sandbox) and the parent, both sides.

The parent opens a pipe before the program runs and passes its write end to the harness. The
harness writes one ASCII line per event, each starting with the run's 128-bit random nonce::

    <nonce> start                      before any untrusted code runs
    <nonce> p <i> r|t|k|m|e ...        assert test i's reference leaves (as the test lines
                                       below), written before the program is loaded
    <nonce> load t | load e <Name>     loading the program timed out / raised (then nothing else)
    <nonce> <i> r <payload>            assert test i: one outcome per leaf expression (below)
    <nonce> <i> t                      test i ran out of time (CPU or wall clock)
    <nonce> <i> k                      test i's process was killed by the kernel (CPU hard limit,
                                       memory cgroup) before it reported
    <nonce> <i> m                      test i's process exited without reporting (os._exit)
    <nonce> <i> x                      stdio test i's process exited (its stdout is judged)
    <nonce> <i> e <Name>               the harness could not run test i (e.g. fork failed)
    <nonce> end

An assert test's payload is a JSON array with one entry per leaf expression of the test line:
``["v", VALUE]`` (its value), ``["e", "Name"]`` (it raised), ``["u"]`` (not encodable). A VALUE is
a JSON list tagged by its first element: ``["n"]`` None, ``["b", 0|1]``, ``["i", "-7b"]`` (hex: decimal
conversion refuses ints over 4300 digits),
``["f", "1.5"]``, ``["c", "(1+2j)"]``, ``["s", HEX]`` (UTF-8, surrogates passed), ``["y", HEX]``
bytes, ``["l", ...]`` list, ``["t", ...]`` tuple, ``["S", ...]`` set, ``["F", ...]`` frozenset,
``["d", k1, v1, k2, v2, ...]`` dict, ``["g", ...]`` a drained iterator (generator, map, zip...),
``["r", ...]`` a range, ``["k", ...]`` / ``["a", ...]`` / ``["w", ...]`` a dict's keys / items /
values view.

Sandbox side (``make_encoder``, ``make_emitter``): shipped into the sandbox as source
(``sandbox_source``); they use nothing but builtins and capture every method they call when they
are created, before the program runs, so a program that patches ``builtins`` or returns a subclass
with forged ``__eq__`` / ``__repr__`` / ``__iter__`` / ``__getitem__`` cannot change what is
reported: scalars and containers are read through the base types' own methods.

Parent side (``parse_channel``, ``decode_value``): every line must carry the nonce and be well
formed, no index may repeat, and the run must start with ``start``; anything else voids the whole
run (``tampered``). Values decode into the hash-free representation of ``values``.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any

from reasoner.verifiers.code.values import MAX_INT_BITS, DictValue, IterValue, SetValue

MAX_ELEMENTS = 200_000  # scalars + containers in one value
MAX_DEPTH = 100  # nesting of one value
MAX_ENCODED = 4_000_000  # characters of one test's payload


# ---------------------------------------------------------------------------------------------
# Sandbox side (runs inside the sandbox, shipped as source: builtins only, no module globals but
# the three limits above)


def make_encoder(
    _type=type, _issub=issubclass, _len=len, _range=range, _ifmt=int.__format__,
    _frepr=float.__repr__, _crepr=complex.__repr__, _senc=str.encode, _bhex=bytes.hex,
    _llen=list.__len__, _lget=list.__getitem__, _tlen=tuple.__len__, _tget=tuple.__getitem__,
    _ditems=dict.items, _siter=set.__iter__, _fiter=frozenset.__iter__, _join="".join,
    _map=map, _filter=filter, _zip=zip, _enum=enumerate, _rev=reversed, _BE=BaseException,
):  # fmt: skip
    """encode(value) -> the JSON text of its tagged encoding, or None when it is not encodable
    (another type, more than MAX_ELEMENTS elements, deeper than MAX_DEPTH, an iterator that
    raised). Types are matched with issubclass against the builtin base types, and read only
    through their methods captured here."""
    # (exact type, tag, its __iter__, its __next__ or None): types no program can subclass
    views = [
        (_type({}.keys()), "k"), (_type({}.items()), "a"), (_type({}.values()), "w"),
        (_type(range(0)), "r"), (_type(x for x in ()), "g"),
    ]  # fmt: skip
    for it in (
        [],
        (),
        set(),
        "",
        b"",
        bytearray(),
        range(0),
        {},
        {}.keys(),
        {}.values(),
        {}.items(),
    ):
        views.append((_type(iter(it)), "g"))
    views = [(t, tag, t.__iter__, getattr(t, "__next__", None)) for t, tag in views]
    lazy = ((_map, map.__next__), (_filter, filter.__next__), (_zip, zip.__next__),
            (_enum, enumerate.__next__), (_rev, reversed.__next__))  # fmt: skip
    budget = [0]

    class _Stop(Exception):
        pass

    def drain(v, nxt):
        items = []
        while True:
            budget[0] -= 1
            if budget[0] < 0:
                raise _Stop()
            try:
                items.append(nxt(v))
            except StopIteration:
                return items

    def enc(v, depth):
        budget[0] -= 1
        if depth > MAX_DEPTH or budget[0] < 0:
            raise _Stop()
        t = _type(v)
        if v is None:
            return '["n"]'
        if t is bool:
            return '["b",1]' if v is True else '["b",0]'
        if _issub(t, int):
            return '["i","' + _ifmt(v, "x") + '"]'
        if _issub(t, float):
            return '["f","' + _frepr(v) + '"]'
        if _issub(t, complex):
            return '["c","' + _crepr(v) + '"]'
        if _issub(t, str):
            return '["s","' + _bhex(_senc(v, "utf-8", "surrogatepass")) + '"]'
        if _issub(t, bytes):
            return '["y","' + _bhex(v) + '"]'
        if _issub(t, list):
            items, tag = [_lget(v, i) for i in _range(_llen(v))], "l"
        elif _issub(t, tuple):
            items, tag = [_tget(v, i) for i in _range(_tlen(v))], "t"
        elif _issub(t, dict):
            items, tag = [x for kv in _ditems(v) for x in kv], "d"
        elif _issub(t, set):
            items, tag = [x for x in _siter(v)], "S"
        elif _issub(t, frozenset):
            items, tag = [x for x in _fiter(v)], "F"
        else:
            for vt, vtag, it, nxt in views:  # identity, not hashing: `t` is the program's
                if t is vt:
                    if nxt is None:
                        v = it(v)
                        nxt = _type(v).__next__
                    items, tag = drain(v, nxt), vtag
                    break
            else:
                for base, nxt in lazy:
                    if _issub(t, base):
                        items, tag = drain(v, nxt), "g"
                        break
                else:
                    raise _Stop()
        return _join(['["', tag, '"'] + ["," + enc(x, depth + 1) for x in items] + ["]"])

    def encode(v):
        budget[0] = MAX_ELEMENTS
        try:
            s = enc(v, 0)
        except _BE:
            return None
        return s if _len(s) <= MAX_ENCODED else None

    return encode


def make_emitter(fd, nonce, _senc=str.encode, _write=__import__("os").write):
    """emit(body) writes the line "<nonce> <body>" to `fd` (ASCII; the harness never passes it
    anything else)."""

    def emit(body):
        b = _senc(nonce + " " + body + "\n", "ascii")
        while b:
            b = b[_write(fd, b) :]

    return emit


SANDBOX_SIDE = (make_encoder, make_emitter)


def sandbox_source() -> str:
    """The source the harness gets as its `channel` module inside the sandbox."""
    consts = (
        f"MAX_ELEMENTS = {MAX_ELEMENTS}\nMAX_DEPTH = {MAX_DEPTH}\nMAX_ENCODED = {MAX_ENCODED}\n"
    )
    return consts + "\n\n".join(inspect.getsource(f) for f in SANDBOX_SIDE)


# ---------------------------------------------------------------------------------------------
# Parent side


class BadValue(ValueError):
    """A value that does not follow the encoding (or breaks its limits)."""


def decode_value(node: Any, depth: int = 0) -> Any:
    """Decode one tagged value into the parent's representation (see ``values``)."""
    if depth > 2 * MAX_DEPTH or not isinstance(node, list) or not node:
        raise BadValue("malformed value")
    tag, args = node[0], node[1:]
    if not isinstance(tag, str):
        raise BadValue("malformed value")
    try:
        if tag == "n":
            return None
        if tag == "b":
            return bool(args[0])
        if tag == "i":
            if not isinstance(args[0], str) or len(args[0]) > MAX_INT_BITS // 4 + 1:
                raise BadValue("malformed or too large int")
            return int(args[0], 16)
        if tag == "f":
            return float(args[0])
        if tag == "c":
            return complex(args[0])
        if tag == "s":
            return bytes.fromhex(args[0]).decode("utf-8", "surrogatepass")
        if tag == "y":
            return bytes.fromhex(args[0])
        if tag not in _CONTAINERS:
            raise BadValue(f"unknown tag {tag!r}")
        items = [decode_value(x, depth + 1) for x in args]
        if tag == "l":
            return items
        if tag == "t":
            return tuple(items)
        if tag in ("S", "F"):
            return SetValue(items, frozen=tag == "F")
        if tag == "d":
            if len(items) % 2:
                raise BadValue("odd dict")
            return DictValue(zip(items[::2], items[1::2]))
        if tag == "a" and not all(type(x) is tuple and len(x) == 2 for x in items):
            raise BadValue("malformed items view")
        return IterValue(items, _CONTAINERS[tag])
    except (ValueError, TypeError, IndexError, UnicodeDecodeError) as e:
        if isinstance(e, BadValue):
            raise
        raise BadValue(f"malformed {tag!r} value: {e}") from None


_CONTAINERS = {
    "l": "list", "t": "tuple", "S": "set", "F": "frozenset", "d": "dict", "g": "iter",
    "r": "range", "k": "keys", "a": "items", "w": "values",
}  # fmt: skip


@dataclass
class ChannelResult:
    """What the harness reported. results[i] is ("r", payload list) | ("t"|"k"|"m"|"x", None) |
    ("e", name). load is None, "timeout" or an exception name."""

    results: dict[int, tuple[str, Any]] = field(default_factory=dict)
    references: dict[int, tuple[str, Any]] = field(default_factory=dict)  # same, "p" lines
    tampered: bool = False
    load: str | None = None


_LINE = re.compile(r"(?P<i>\d{1,9}) (?:r (?P<val>.*)|e (?P<name>\w{1,60})|(?P<k>[tkmx]))")


def parse_channel(
    data: bytes, nonce: str, n: int, references: frozenset[int] = frozenset()
) -> ChannelResult:
    """Check and parse the channel's bytes for a run of `n` tests. Every line must be ours.
    `references`: the tests whose reference leaves the harness evaluates before the program; their
    "p" lines must come right after "start", one per test, none for another test."""
    out = ChannelResult()
    program = False  # a line the program could have written was seen: no "p" line after it
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    else:  # a partial last line: the run was killed mid-write
        lines = lines[:-1]
    prefix = nonce + " "
    for i, raw in enumerate(lines):
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            return ChannelResult(tampered=True)
        if not line.startswith(prefix):
            return ChannelResult(tampered=True)
        body = line[len(prefix) :]
        if i == 0:
            if body != "start":
                return ChannelResult(tampered=True)
            continue
        into = out.results
        if body.startswith("p "):
            if program:
                return ChannelResult(tampered=True)
            body, into = body[2:], out.references
        else:
            program = True
        if body == "end" or body == "load t" or body.startswith("load e "):
            if into is out.references:
                return ChannelResult(tampered=True)
            if i != len(lines) - 1:
                return ChannelResult(tampered=True)
            if body != "end":
                out.load = "timeout" if body == "load t" else body[7:]
            continue
        m = _LINE.fullmatch(body)
        if m is None:
            return ChannelResult(tampered=True)
        idx = int(m.group("i"))
        if idx >= n or idx in into or (into is out.references and idx not in references):
            return ChannelResult(tampered=True)
        if m.group("val") is not None:
            try:
                payload = json.loads(m.group("val"))
            except (ValueError, RecursionError):
                return ChannelResult(tampered=True)
            if not isinstance(payload, list):
                return ChannelResult(tampered=True)
            into[idx] = ("r", payload)
        elif m.group("name") is not None:
            into[idx] = ("e", m.group("name"))
        else:
            into[idx] = (m.group("k"), None)
    return out
