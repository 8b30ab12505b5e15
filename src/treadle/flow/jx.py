"""JX: JSON plus expressions, the language of ``--jx`` workflows (docs/makeflow.md, 'The JSON and JX form').

A small tokenizer, a precedence-climbing parser that builds a tree of nodes,
and an evaluator over plain Python values (``None``, ``bool``, ``int``,
``float``, ``str``, ``list``, ``dict``). Nothing here calls Python's ``eval``:
a workflow file is data, and only the operators and functions below exist.

Arithmetic follows the reference: integers are 64-bit and divide toward
zero, an integer meets a double as a double, a string plus any atomic value
concatenates, and operators on mismatched types are errors. Symbols are
looked up in a context whose entries may be unevaluated expressions (the
workflow's ``define`` object), evaluated when used.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable

from treadle.flow.lexer import excerpt, match_run

MAX_RANGE = 10_000_000  # elements; a typo like range(1e12) must fail, not fill the memory
MAX_PARSE_DEPTH = 400  # grammar levels on the parser's stack (about 55 nested brackets)
MAX_DEPTH = 250  # nested evaluations, symbol definitions included
MAX_STEPS = 50_000_000  # node evaluations per load: bounded work whatever the input
MAX_SIZE = 1 << 26  # elements of a list, characters of a string made by an operator
_INT_BITS = 1 << 64  # integers are the reference's 64-bit ints and wrap like them


class JXError(Exception):
    """A JX syntax or evaluation error at a line and column of the source."""

    def __init__(self, message: str, line: int = 0, column: int = 0):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class JXObject(dict):
    """A JX object value that remembers the line of its ``{`` (rule lines in messages)."""

    __slots__ = ("line",)

    def __init__(self, *args, line: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.line = line


# ---------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<num>(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<str>")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!()\[\]{},:.])
    """,
    re.VERBOSE,
)
_STRING_BODY = re.compile(r'[^"\\\x00-\x1f]*')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUL_IN_STRING = "NUL character in string: a workflow cannot hold one"
_KEYWORDS = {"true", "false", "null", "and", "or", "not", "for", "in", "if"}


class _Tok:
    __slots__ = ("kind", "value", "line", "col")

    def __init__(self, kind: str, value, line: int, col: int):
        self.kind = kind  # num, str, name, kw, op, end
        self.value = value
        self.line = line
        self.col = col


def tokenize(text: str) -> list[_Tok]:
    """Split JX text into tokens; comments run from ``#`` to the end of the line."""
    toks: list[_Tok] = []
    pos = 0
    n = len(text)
    line = 1
    line_start = 0
    while pos < n:
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            raise JXError(f"unexpected character {text[pos]!r}", line, col)
        kind = m.lastgroup
        if kind == "ws":
            chunk = m.group()
            nl = chunk.count("\n")
            if nl:
                line += nl
                line_start = pos + chunk.rfind("\n") + 1
            pos = m.end()
            continue
        if kind == "str":
            value, end = _read_string(text, pos + 1, line, col)
            toks.append(_Tok("str", value, line, col))
            pos = end
            continue
        word = m.group()
        if kind == "num":
            if any(c in word for c in ".eE"):
                toks.append(_Tok("num", float(word), line, col))
            else:
                digits = word.lstrip("0") or "0"
                if len(digits) > 19 or int(digits) >= 1 << 63:
                    raise JXError(f"integer {word[:20]} does not fit in 64 bits", line, col)
                toks.append(_Tok("num", int(digits), line, col))
        elif kind == "name":
            toks.append(_Tok("kw" if word in _KEYWORDS else "name", word, line, col))
        else:
            toks.append(_Tok("op", word, line, col))
        pos = m.end()
    toks.append(_Tok("end", None, line, pos - line_start + 1))
    return toks


def _read_string(text: str, pos: int, line: int, col: int) -> tuple[str, int]:
    """The string whose ``"`` stands before ``pos`` (at ``line``, ``col``), and the offset after it.

    A NUL, raw or escaped, is refused at its own column: no command, file name
    or variable a workflow hands to the OS can hold one (issue 9, defect 5).
    """
    out: list[str] = []
    n = len(text)
    column_base = col - (pos - 1)  # a string stays on one line: column = offset + column_base
    while True:
        m = match_run(_STRING_BODY, text, pos)
        out.append(m.group())
        pos = m.end()
        if pos >= n:
            raise JXError("unterminated string", line, col)
        c = text[pos]
        if c == '"':
            return "".join(out), pos + 1
        if c == "\0" or text.startswith("\\u0000", pos):
            raise JXError(_NUL_IN_STRING, line, pos + column_base)
        if c != "\\":
            raise JXError("control character in string", line, col)
        if pos + 1 >= n:
            raise JXError("unterminated string", line, col)
        e = text[pos + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            pos += 2
        elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[pos + 2 : pos + 6]):
            out.append(chr(int(text[pos + 2 : pos + 6], 16)))
            pos += 6
        else:
            raise JXError(f"invalid escape \\{e} in string", line, col)


# ----------------------------------------------------------------------- nodes


class Node:
    """An expression; ``ev(ctx)`` gives its value."""

    __slots__ = ("line", "col")
    line: int
    col: int

    def fail(self, message: str) -> JXError:
        return JXError(message, self.line, self.col)


class Const(Node):
    __slots__ = ("value",)

    def __init__(self, value, line: int, col: int):
        self.value, self.line, self.col = value, line, col


class Symbol(Node):
    __slots__ = ("name",)

    def __init__(self, name: str, line: int, col: int):
        self.name, self.line, self.col = name, line, col


class ListNode(Node):
    __slots__ = ("items",)  # each item: (expr, [(var, iterable, condition|None), ...])

    def __init__(self, items, line: int, col: int):
        self.items, self.line, self.col = items, line, col


class ObjectNode(Node):
    __slots__ = ("pairs",)

    def __init__(self, pairs, line: int, col: int):
        self.pairs, self.line, self.col = pairs, line, col


class BinOp(Node):
    __slots__ = ("op", "left", "right")

    def __init__(self, op: str, left: Node, right: Node, line: int, col: int):
        self.op, self.left, self.right, self.line, self.col = op, left, right, line, col


class UnOp(Node):
    __slots__ = ("op", "operand")

    def __init__(self, op: str, operand: Node, line: int, col: int):
        self.op, self.operand, self.line, self.col = op, operand, line, col


class Call(Node):
    __slots__ = ("name", "args")

    def __init__(self, name: str, args: list[Node], line: int, col: int):
        self.name, self.args, self.line, self.col = name, args, line, col


class Index(Node):
    __slots__ = ("target", "index", "stop", "is_slice")

    def __init__(self, target, index, stop, is_slice, line, col):
        self.target, self.index, self.stop, self.is_slice = target, index, stop, is_slice
        self.line, self.col = line, col


# ---------------------------------------------------------------------- parser

_BINARY_LEVELS = [
    ("or", "||"),
    ("and", "&&"),
    None,  # "not" sits here
    ("==", "!=", "<", "<=", ">", ">="),
    ("+", "-"),
    ("*", "/", "%"),
]
_CANONICAL = {"||": "or", "&&": "and", "!": "not"}


class _Parser:
    def __init__(self, toks: list[_Tok]):
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def at(self, kind: str, value=None) -> bool:
        t = self.toks[self.i]
        return t.kind == kind and (value is None or t.value == value)

    def expect(self, kind: str, value=None) -> _Tok:
        t = self.peek()
        if not self.at(kind, value):
            raise JXError(f"expected {value or kind}, got {_describe(t)}", t.line, t.col)
        return self.next()

    def expression(self, level: int = 0) -> Node:
        self.depth += 1
        if self.depth > MAX_PARSE_DEPTH:
            t = self.peek()
            raise JXError("expression nested too deeply", t.line, t.col)
        try:
            if level >= len(_BINARY_LEVELS):
                return self.unary()
            ops = _BINARY_LEVELS[level]
            if ops is None:
                t = self.peek()
                if (t.kind == "kw" and t.value == "not") or (t.kind == "op" and t.value == "!"):
                    self.next()
                    return UnOp("not", self.expression(level), t.line, t.col)
                return self.expression(level + 1)
            left = self.expression(level + 1)
            while True:
                t = self.peek()
                if t.kind in ("op", "kw") and t.value in ops:
                    self.next()
                    right = self.expression(level + 1)
                    left = BinOp(_CANONICAL.get(t.value, t.value), left, right, t.line, t.col)
                else:
                    return left
        finally:
            self.depth -= 1

    def unary(self) -> Node:
        t = self.peek()
        if t.kind == "op" and t.value in ("-", "+"):
            self.next()
            self.depth += 1
            if self.depth > MAX_PARSE_DEPTH:
                raise JXError("expression nested too deeply", t.line, t.col)
            operand = self.unary()
            self.depth -= 1
            return UnOp(t.value, operand, t.line, t.col)
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while True:
            t = self.peek()
            if t.kind != "op":
                return node
            if t.value == "[":
                self.next()
                start = None if self.at("op", ":") else self.expression()
                if self.at("op", ":"):
                    self.next()
                    stop = None if self.at("op", "]") else self.expression()
                    self.expect("op", "]")
                    node = Index(node, start, stop, True, t.line, t.col)
                else:
                    self.expect("op", "]")
                    node = Index(node, start, None, False, t.line, t.col)
            elif t.value == "(":
                if not isinstance(node, Symbol):
                    raise JXError("only functions can be called", t.line, t.col)
                node = Call(node.name, self.arguments(), node.line, node.col)
            elif t.value == ".":
                self.next()
                name = self.expect("name")
                if not self.at("op", "("):
                    raise JXError(f"expected ( after .{excerpt(name.value)}", name.line, name.col)
                node = Call(name.value, [node, *self.arguments()], name.line, name.col)
            else:
                return node

    def arguments(self) -> list[Node]:
        self.expect("op", "(")
        args: list[Node] = []
        if not self.at("op", ")"):
            while True:
                args.append(self.expression())
                if not self.at("op", ","):
                    break
                self.next()
        self.expect("op", ")")
        return args

    def primary(self) -> Node:
        t = self.next()
        if t.kind in ("num", "str"):
            return Const(t.value, t.line, t.col)
        if t.kind == "kw":
            if t.value in ("true", "false"):
                return Const(t.value == "true", t.line, t.col)
            if t.value == "null":
                return Const(None, t.line, t.col)
        if t.kind == "name":
            return Symbol(t.value, t.line, t.col)
        if t.kind == "op":
            if t.value == "(":
                e = self.expression()
                self.expect("op", ")")
                return e
            if t.value == "[":
                return self.list_literal(t)
            if t.value == "{":
                return self.object_literal(t)
        raise JXError(f"unexpected {_describe(t)}", t.line, t.col)

    def list_literal(self, open_tok: _Tok) -> Node:
        items = []
        while not self.at("op", "]"):
            expr = self.expression()
            comps = []
            while self.at("kw", "for"):
                self.next()
                var = self.expect("name").value
                self.expect("kw", "in")
                iterable = self.expression()
                cond = None
                if self.at("kw", "if"):
                    self.next()
                    cond = self.expression()
                comps.append((var, iterable, cond))
            items.append((expr, comps))
            if not self.at("op", ","):
                break
            self.next()
        self.expect("op", "]")
        return ListNode(items, open_tok.line, open_tok.col)

    def object_literal(self, open_tok: _Tok) -> Node:
        pairs = []
        while not self.at("op", "}"):
            key = self.expression()
            self.expect("op", ":")
            pairs.append((key, self.expression()))
            if not self.at("op", ","):
                break
            self.next()
        self.expect("op", "}")
        return ObjectNode(pairs, open_tok.line, open_tok.col)


def _describe(t: _Tok) -> str:
    if t.kind == "end":
        return "end of input"
    if t.kind == "str":
        return f"string {excerpt(json.dumps(t.value))}"
    return excerpt(repr(str(t.value)))


def parse(text: str) -> Node:
    """Parse one JX expression (the whole text)."""
    p = _Parser(tokenize(text))
    node = p.expression()
    t = p.peek()
    if t.kind != "end":
        raise JXError(f"unexpected {_describe(t)} after the expression", t.line, t.col)
    return node


# ------------------------------------------------------------------ evaluation


class Lazy:
    """A context entry evaluated on first use (a ``define`` value or a ``--jx-define``).

    The value is kept after the first use, so definitions built from other
    definitions cost linear, not exponential, time.
    """

    __slots__ = ("node", "value", "done")

    def __init__(self, node: Node):
        self.node = node
        self.value = None
        self.done = False


class Context:
    """Symbol bindings, with a guard against definitions that refer to themselves."""

    __slots__ = ("bindings", "busy", "depth", "steps")

    def __init__(self, bindings: dict | None = None):
        self.bindings = dict(bindings or {})
        self.busy: set[str] = set()
        self.depth = 0
        self.steps = [0]  # shared with child contexts: the whole evaluation's budget

    def child(self, name: str, value) -> Context:
        return self.extended({name: value})

    def extended(self, more: dict) -> Context:
        c = Context.__new__(Context)
        c.bindings = {**self.bindings, **more}
        c.busy = self.busy
        c.depth = self.depth
        c.steps = self.steps
        return c


def type_name(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def is_atomic(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def to_text(v) -> str:
    """A value as JX prints it (strings without quotes, others as JSON)."""
    if isinstance(v, str):
        return v
    return dumps(v)


def _shown(v) -> str:
    """A value as an error message quotes it: its JSON text, cut to a few hundred characters."""
    return excerpt(dumps(v))


def dumps(v) -> str:
    """JSON text of a value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return "null"
        return format(v, ".16g")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(dumps(x) for x in v) + "]"
    return (
        "{"
        + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{dumps(x)}" for k, x in v.items())
        + "}"
    )


def evaluate(node: Node, ctx: Context | dict | None = None):
    """The value of ``node`` with the symbols of ``ctx``."""
    if not isinstance(ctx, Context):
        ctx = Context(ctx)
    return _ev(node, ctx)


def _ev(node: Node, ctx: Context):
    ctx.depth += 1
    ctx.steps[0] += 1
    try:
        if ctx.depth > MAX_DEPTH:
            raise node.fail("expression nested too deeply")
        if ctx.steps[0] > MAX_STEPS:
            raise node.fail(f"evaluation takes more than {MAX_STEPS} steps")
        return _EVALUATORS[type(node)](node, ctx)
    finally:
        ctx.depth -= 1


def _ev_const(node: Const, ctx: Context):
    return node.value


def _ev_symbol(node: Symbol, ctx: Context):
    if node.name not in ctx.bindings:
        raise node.fail(f"{excerpt(node.name)}: undefined symbol")
    v = ctx.bindings[node.name]
    if isinstance(v, Lazy):
        if v.done:
            return v.value
        if node.name in ctx.busy:
            raise node.fail(f"{excerpt(node.name)}: symbol defined in terms of itself")
        ctx.busy.add(node.name)
        try:
            v.value = _ev(v.node, ctx)
            v.done = True
        finally:
            ctx.busy.discard(node.name)
        return v.value
    return v


def _ev_list(node: ListNode, ctx: Context):
    out: list = []
    for expr, comps in node.items:
        if comps:
            _comprehend(expr, comps, 0, ctx, out)
        else:
            out.append(_ev(expr, ctx))
    return out


def _comprehend(expr: Node, comps, k: int, ctx: Context, out: list) -> None:
    var, iterable, cond = comps[k]
    seq = _ev(iterable, ctx)
    if not isinstance(seq, list):
        raise iterable.fail("list comprehension takes an array")
    for item in seq:
        inner = ctx.child(var, item)
        if cond is not None:
            ok = _ev(cond, inner)
            if not isinstance(ok, bool):
                raise cond.fail(f"{_shown(ok)}: list comprehension condition takes a boolean")
            if not ok:
                continue
        if k + 1 < len(comps):
            _comprehend(expr, comps, k + 1, inner, out)
        else:
            out.append(_ev(expr, inner))
        if len(out) > MAX_RANGE:
            raise expr.fail("list comprehension makes too many elements")


def _ev_object(node: ObjectNode, ctx: Context):
    out = JXObject(line=node.line)
    for knode, vnode in node.pairs:
        k = _ev(knode, ctx)
        if not isinstance(k, str):
            raise knode.fail(f"object keys must be strings, got {type_name(k)}")
        out[k] = _ev(vnode, ctx)
    return out


def _ev_unop(node: UnOp, ctx: Context):
    v = _ev(node.operand, ctx)
    if node.op == "not":
        if not isinstance(v, bool):
            raise node.fail(f"not {_shown(v)}: unsupported operator on {type_name(v)}")
        return not v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise node.fail(f"{node.op}{_shown(v)}: unsupported operator on {type_name(v)}")
    if node.op == "+":
        return v
    return _wrap(-v) if isinstance(v, int) else -v


def _ev_binop(node: BinOp, ctx: Context):
    a = _ev(node.left, ctx)
    b = _ev(node.right, ctx)
    return binary(node.op, a, b, node)


def binary(op: str, a, b, node: Node):
    """Apply a binary operator with the reference's type rules."""
    ta, tb = type_name(a), type_name(b)
    if ta != tb:
        if ta == "integer" and tb == "double":
            a = float(a)
        elif ta == "double" and tb == "integer":
            b = float(b)
        elif op == "==":
            return False
        elif op == "!=":
            return True
        elif op == "+" and ta == "string" and is_atomic(b):
            b = to_text(b)
        elif op == "+" and tb == "string" and is_atomic(a):
            a = to_text(a)
        else:
            raise node.fail(f"{_shown(a)} {op} {_shown(b)}: mismatched types for operator")
        ta = type_name(a)
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if ta == "boolean":
        if op == "and":
            return a and b
        if op == "or":
            return a or b
    elif ta in ("integer", "double"):
        if op in ("<", "<=", ">", ">="):
            return _compare(op, a, b)
        if op in ("+", "-", "*"):
            r = a + b if op == "+" else a - b if op == "-" else a * b
            return _wrap(r) if ta == "integer" else r
        if op in ("/", "%"):
            if b == 0:
                raise node.fail(f"{_shown(a)} {op} {_shown(b)}: division by zero")
            if ta == "integer":
                q = abs(a) // abs(b)
                if (a < 0) != (b < 0):
                    q = -q
                return q if op == "/" else a - b * q
            if op == "/":
                return a / b
            try:
                return math.fmod(a, b)
            except ValueError:
                raise node.fail(f"{_shown(a)} % {_shown(b)}: not a number") from None
    elif ta == "string":
        if op in ("<", "<=", ">", ">="):
            return _compare(op, a, b)
        if op == "+":
            return _sized(a + b, node)
    elif ta == "array":
        if op == "+":
            return _sized(a + b, node)
    raise node.fail(f"{_shown(a)} {op} {_shown(b)}: unsupported operator on {ta}")


def _wrap(n: int) -> int:
    """``n`` as a signed 64-bit integer, the reference's integer type."""
    n %= _INT_BITS
    return n - _INT_BITS if n >= _INT_BITS >> 1 else n


def _sized(v, node: Node):
    if len(v) > MAX_SIZE:
        raise node.fail(f"result too large ({len(v)} elements)")
    return v


def _compare(op: str, a, b) -> bool:
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _ev_index(node: Index, ctx: Context):
    target = _ev(node.target, ctx)
    if node.is_slice:
        start = _ev(node.index, ctx) if node.index is not None else None
        stop = _ev(node.stop, ctx) if node.stop is not None else None
        if not isinstance(target, list):
            raise node.fail("only arrays support slicing")
        for v in (start, stop):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise node.fail("slice indices must be integers")
        return target[start:stop]
    key = _ev(node.index, ctx)
    if isinstance(target, dict) and isinstance(key, str):
        if key not in target:
            raise node.fail(f"{excerpt(str(key))}: key not found")
        return target[key]
    if isinstance(target, list) and isinstance(key, int) and not isinstance(key, bool):
        if not -len(target) <= key < len(target):
            raise node.fail("array index out of range")
        return target[key]
    raise node.fail(f"{_shown(key)}: invalid type for lookup in {type_name(target)}")


def _ev_call(node: Call, ctx: Context):
    fn = FUNCTIONS.get(node.name)
    if fn is None:
        raise node.fail(f"unknown function: {excerpt(node.name)}")
    if node.name in _UNEVALUATED:
        return fn(node, node.args, ctx)
    return fn(node, [_ev(a, ctx) for a in node.args], ctx)


_EVALUATORS: dict[type, Callable] = {
    Const: _ev_const,
    Symbol: _ev_symbol,
    ListNode: _ev_list,
    ObjectNode: _ev_object,
    UnOp: _ev_unop,
    BinOp: _ev_binop,
    Index: _ev_index,
    Call: _ev_call,
}


# ------------------------------------------------------------------- functions


def _want(node: Node, name: str, args: list, counts: tuple[int, ...]) -> None:
    if len(args) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise node.fail(f"{name}: expected {want} arguments, got {len(args)}")


def _int_arg(node: Node, name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise node.fail(f"{name}: expected integer arguments, got {type_name(v)}")
    return v


def _str_arg(node: Node, name: str, v) -> str:
    if not isinstance(v, str):
        raise node.fail(f"{name}: expected a string, got {type_name(v)}")
    return v


def _fn_range(node, args, ctx):
    _want(node, "range", args, (1, 2, 3))
    nums = [_int_arg(node, "range", a) for a in args]
    if len(nums) == 1:
        r = range(nums[0])
    elif len(nums) == 2:
        r = range(nums[0], nums[1])
    else:
        if nums[2] == 0:
            raise node.fail("range: step must not be zero")
        r = range(*nums)
    if len(r) > MAX_RANGE:
        raise node.fail(f"range: too many elements ({len(r)})")
    return list(r)


_FORMAT_SPEC = re.compile(r"%([-+ #0]*)(\d*)(?:\.(\d+))?([diouxXeEfFgGcs%])")


def _fn_format(node, args, ctx):
    if not args:
        raise node.fail("format: expected a format string")
    fmt = _str_arg(node, "format", args[0])
    rest = list(args[1:])
    out: list[str] = []
    pos = 0
    for m in _FORMAT_SPEC.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, conv = m.groups()
        if conv == "%":
            out.append("%")
            continue
        if not rest:
            raise node.fail("format: not enough arguments for the format")
        v = rest.pop(0)
        spec = "%" + flags + width + ("." + prec if prec is not None else "")
        if isinstance(v, float) and not math.isfinite(v) and conv in "diouxXc":
            raise node.fail(f"format: %{conv} needs a finite number")
        if len(width) > 6 or (prec is not None and len(prec) > 6):
            raise node.fail("format: field width or precision too large")
        if conv in "diouxXc":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise node.fail(f"format: %{conv} needs a number, got {type_name(v)}")
            try:
                out.append((spec + ("d" if conv in "iu" else conv)) % int(v))
            except (OverflowError, ValueError) as e:
                raise node.fail(f"format: %{conv}: {e}") from None
        elif conv in "eEfFgG":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise node.fail(f"format: %{conv} needs a number, got {type_name(v)}")
            out.append((spec + conv) % float(v))
        else:
            out.append((spec + "s") % to_text(v))
    out.append(fmt[pos:])
    if rest:
        raise node.fail("format: too many arguments for the format")
    return "".join(out)


def _fn_join(node, args, ctx):
    _want(node, "join", args, (1, 2))
    items = args[0]
    if not isinstance(items, list):
        raise node.fail(f"join: expected an array, got {type_name(items)}")
    sep = _str_arg(node, "join", args[1]) if len(args) == 2 else " "
    for x in items:
        if not isinstance(x, str):
            raise node.fail(f"join: expected an array of strings, got {type_name(x)}")
    return sep.join(items)


def _number(node, name, args):
    _want(node, name, args, (1,))
    v = args[0]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise node.fail(f"{name}: expected a number, got {type_name(v)}")
    return v


def _fn_ceil(node, args, ctx):
    v = _number(node, "ceil", args)
    return v if isinstance(v, int) or not math.isfinite(v) else float(math.ceil(v))


def _fn_floor(node, args, ctx):
    v = _number(node, "floor", args)
    return v if isinstance(v, int) or not math.isfinite(v) else float(math.floor(v))


def _fn_basename(node, args, ctx):
    _want(node, "basename", args, (1,))
    p = _str_arg(node, "basename", args[0]).rstrip("/")
    if not p:
        return "/" if args[0] else ""
    return p.rsplit("/", 1)[-1]


def _fn_dirname(node, args, ctx):
    _want(node, "dirname", args, (1,))
    p = _str_arg(node, "dirname", args[0]).rstrip("/")
    if "/" not in p:
        return "/" if args[0].startswith("/") else "."
    head = p.rsplit("/", 1)[0].rstrip("/")
    return head or "/"


def _fn_escape(node, args, ctx):
    _want(node, "escape", args, (1,))
    s = _str_arg(node, "escape", args[0])
    return "'" + s.replace("'", "'\\''") + "'"


def _fn_len(node, args, ctx):
    _want(node, "len", args, (1,))
    v = args[0]
    if not isinstance(v, (list, str, dict)):
        raise node.fail(f"len: expected an array, string or object, got {type_name(v)}")
    return len(v)


def _object_arg(node, name, args):
    _want(node, name, args, (1,))
    if not isinstance(args[0], dict):
        raise node.fail(f"{name}: expected an object, got {type_name(args[0])}")
    return args[0]


def _fn_keys(node, args, ctx):
    return list(_object_arg(node, "keys", args))


def _fn_values(node, args, ctx):
    return list(_object_arg(node, "values", args).values())


def _fn_items(node, args, ctx):
    return [[k, v] for k, v in _object_arg(node, "items", args).items()]


_TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _fn_template(node, args, ctx):
    _want(node, "template", args, (1, 2))
    s = _str_arg(node, "template", args[0])
    extra = args[1] if len(args) == 2 else {}
    if not isinstance(extra, dict):
        raise node.fail(f"template: expected an object, got {type_name(extra)}")

    def field(m: re.Match) -> str:
        name = m.group(1)
        if name in extra:
            return to_text(extra[name])
        if name in ctx.bindings:
            return to_text(_ev_symbol(Symbol(name, node.line, node.col), ctx))
        raise node.fail(f"template: {excerpt(name)}: undefined symbol")

    return _TEMPLATE_FIELD.sub(field, s)


def _each(node, name, args, ctx):
    """Evaluate ``args[1]`` for each element of ``args[0]``; an object's fields become symbols."""
    if len(args) != 2:
        raise node.fail(f"{name}: expected 2 arguments, got {len(args)}")
    seq = _ev(args[0], ctx)
    if not isinstance(seq, list):
        raise node.fail(f"{name}: expected an array, got {type_name(seq)}")
    for item in seq:
        inner = ctx.extended(item if isinstance(item, dict) else {})
        yield item, _ev(args[1], inner)


def _fn_select(node, args, ctx):
    out = []
    for item, ok in _each(node, "select", args, ctx):
        if not isinstance(ok, bool):
            raise node.fail(f"select: the condition must be a boolean, got {type_name(ok)}")
        if ok:
            out.append(item)
    return out


def _fn_project(node, args, ctx):
    return [v for _, v in _each(node, "project", args, ctx)]


def _fn_schema(node, args, ctx):
    obj = _object_arg(node, "schema", args)
    return JXObject({k: type_name(v) for k, v in obj.items()}, line=node.line)


def _fn_like(node, args, ctx):
    _want(node, "like", args, (2,))
    s = _str_arg(node, "like", args[0])
    pattern = _str_arg(node, "like", args[1])
    try:
        return re.search(pattern, s) is not None
    except re.error as e:
        raise node.fail(f"like: bad pattern: {e}") from None


def _fn_listdir(node, args, ctx):
    _want(node, "listdir", args, (1,))
    path = _str_arg(node, "listdir", args[0])
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        raise node.fail(f"listdir: {excerpt(path)}: {e.strerror}") from None


def _fn_fetch(node, args, ctx):
    _want(node, "fetch", args, (1,))
    where = _str_arg(node, "fetch", args[0])
    try:
        if re.match(r"[a-z]+://", where):
            import urllib.request

            with urllib.request.urlopen(where, timeout=30) as resp:  # noqa: S310 - user's own URL
                text = resp.read().decode("utf-8", "surrogateescape")
        else:
            with open(where, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
    except (OSError, ValueError) as e:
        raise node.fail(f"fetch: {excerpt(where)}: {e}") from None
    try:
        return evaluate(parse(text))
    except JXError as e:
        raise node.fail(f"fetch: {excerpt(where)}:{e.line}: {e.message}") from None


FUNCTIONS: dict[str, Callable] = {
    "range": _fn_range,
    "format": _fn_format,
    "join": _fn_join,
    "ceil": _fn_ceil,
    "floor": _fn_floor,
    "basename": _fn_basename,
    "dirname": _fn_dirname,
    "escape": _fn_escape,
    "len": _fn_len,
    "keys": _fn_keys,
    "values": _fn_values,
    "items": _fn_items,
    "template": _fn_template,
    "select": _fn_select,
    "where": _fn_select,
    "project": _fn_project,
    "schema": _fn_schema,
    "like": _fn_like,
    "listdir": _fn_listdir,
    "fetch": _fn_fetch,
}
# These see their second argument unevaluated: it is evaluated once per element.
_UNEVALUATED = {"select", "where", "project"}
