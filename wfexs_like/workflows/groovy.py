"""Just enough Groovy syntax to read Nextflow files, without running any of them.

Nextflow scripts and configs are Groovy programs; the only safe way to learn
what they name is to read them. This module tokenizes the full lexical
language (strings of every quoting style, GString interpolation nested to
any depth, comments, slashy strings) so that nothing in a ``script:`` block
can be mistaken for a directive, and parses expressions into small trees;
``groovy_eval`` computes the values it can. Statement-level structure is
left to the readers of scripts and configs, which skip what they do not need
with the cursor helpers here.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import UnsafeInputError
from .base import WorkflowScanError

#: Interpolations nested deeper than this (``"${ "${ ... }" }"``) or expressions parenthesised
#: deeper than this are not something a person wrote; refused before Python's stack is.
MAX_NESTING = 100

ID, STR, GSTR, NUM, OP, NL, EOF = "id", "str", "gstr", "num", "op", "nl", "eof"

_OPERATORS = (
    "==~", "<=>", "?.", "?:", "=~", "==", "!=", "<=", ">=", "&&", "||", "->", "..", "++", "--",
    "**", "<<", ">>", "+=", "-=", "*=", "/=", "::", ".&", "*.",
)  # fmt: skip
#: The tokens that need no Python loop: blanks, line continuations, names, numbers, operators.
_SIMPLE = re.compile(
    r"(?P<ws>(?:[ \t\r\f]|\\\n)+)"
    r"|(?P<nl>\n)"
    r"|(?P<comment>//[^\n]*)"
    r"|(?P<id>[^\W\d][\w$]*|\$(?!/)[\w$]*)"
    r"|(?P<num>\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?(?:[lLgGdDfFiI](?!\w))?)"
    r"|(?P<op>[^\s'\"/{}$\w])"
)
_OPERATORS_2 = frozenset(o for o in _OPERATORS if len(o) == 2)
_OPERATORS_3 = frozenset(o for o in _OPERATORS if len(o) == 3)
#: Where a string's plain text stops: an escape, an interpolation, a quote, a line end.
_STRING_STOP = {"'": re.compile(r"[\\'\n]"), '"': re.compile(r'[\\"$\n]')}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0"}
#: After one of these a ``/`` starts a slashy string, not a division.
_REGEX_AFTER_IDS = frozenset({"return", "in", "case", "when", "assert", "and", "or", "not"})


class Token(NamedTuple):
    kind: str
    #: the identifier, operator, or (for STR) the string's value
    text: str
    line: int
    start: int
    end: int
    #: GSTR only: literal text pieces and token lists of the interpolated expressions, in order
    parts: tuple[str | tuple[Token, ...], ...] = ()


def syntax_error(where: str, line: int, what: str) -> WorkflowScanError:
    return WorkflowScanError(
        f"{where}:{line}: {what}; the file is not valid Groovy, so its containers cannot be read "
        "(fix the file, or scan the files that are valid)"
    )


class _Lexer:
    def __init__(self, src: str, where: str) -> None:
        self.src = src
        self.where = where
        self.newlines = [m.start() for m in re.finditer("\n", src)]

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self.newlines, pos - 1) + 1

    def tok(self, kind: str, text: str, start: int, end: int, parts: tuple = ()) -> Token:
        return Token(kind, text, self.line(start), start, end, parts)

    def run(self, pos: int, *, in_brace: bool, depth: int) -> tuple[list[Token], int]:
        """Tokens from ``pos``; with ``in_brace``, up to the ``}`` closing a ``${``, and the
        position past it."""
        if depth > MAX_NESTING:
            raise UnsafeInputError(f"{self.where}:{self.line(pos)}: interpolations nested too deeply")
        src, n, out = self.src, len(self.src), []
        braces = 0
        if pos == 0 and src.startswith("#!"):
            pos = self._eol(0)
        line = self.line(pos)
        simple = _SIMPLE.match
        while pos < n:
            m = simple(src, pos)
            if m is not None:
                kind, end = m.lastgroup, m.end()
                if kind == "nl":
                    out.append(Token(NL, "\n", line, pos, end))
                    line += 1
                elif kind == "ws":
                    line += src.count("\n", pos, end)
                elif kind == "op":
                    if src[pos : pos + 3] in _OPERATORS_3:
                        end = pos + 3
                    elif src[pos : pos + 2] in _OPERATORS_2:
                        end = pos + 2
                    out.append(Token(OP, src[pos:end], line, pos, end))
                elif kind != "comment":
                    out.append(Token(kind, m.group(), line, pos, end))
                pos = end
                continue
            c = src[pos]
            if c == "/" and src.startswith("*", pos + 1):
                end = src.find("*/", pos + 2)
                if end < 0:
                    raise syntax_error(self.where, line, "unterminated /* comment")
                pos = end + 2
            elif c in "'\"":
                tok, pos = self._string(pos, depth)
                out.append(tok)
            elif c == "$" and src.startswith("/", pos + 1):
                end = src.find("/$", pos + 2)
                if end < 0:
                    raise syntax_error(self.where, line, "unterminated $/ string")
                out.append(Token(STR, src[pos + 2 : end], line, pos, end + 2))
                pos = end + 2
            elif c == "/" and _regex_allowed(out):
                tok = self._slashy(pos)
                out.append(tok or Token(OP, "/", line, pos, pos + 1))
                pos = tok.end if tok else pos + 1
            elif in_brace and c == "}" and braces == 0:
                out.append(Token(EOF, "", line, pos, pos))
                return out, pos + 1
            else:
                if in_brace and c in "{}":
                    braces += 1 if c == "{" else -1
                out.append(Token(OP, c, line, pos, pos + 1))
                pos += 1
            line = self.line(pos)
        if in_brace:
            raise syntax_error(self.where, line, "unterminated ${ interpolation")
        out.append(Token(EOF, "", line, n, n))
        return out, n

    def _eol(self, pos: int) -> int:
        end = self.src.find("\n", pos)
        return len(self.src) if end < 0 else end

    def _slashy(self, pos: int) -> Token | None:
        src, n, i = self.src, len(self.src), pos + 1
        if i < n and src[i] in " \t\n=":
            return None  # `/ 2`, `/=`: an operator
        chars: list[str] = []
        while i < n:
            c = src[i]
            if c == "\\" and src.startswith("/", i + 1):
                chars.append("/")
                i += 2
            elif c == "/":
                return self.tok(STR, "".join(chars), pos, i + 1)
            else:
                chars.append(c)
                i += 1
        return None

    def _string(self, pos: int, depth: int) -> tuple[Token, int]:
        src, n = self.src, len(self.src)
        quote = src[pos]
        triple = src.startswith(quote * 3, pos)
        delim = quote * 3 if triple else quote
        stop = _STRING_STOP[quote]
        i = pos + len(delim)
        parts: list[str | tuple[Token, ...]] = []
        chars: list[str] = []
        while True:
            m = stop.search(src, i)
            if m is None:
                raise syntax_error(self.where, self.line(pos), "unterminated string")
            chars.append(src[i : m.start()])
            i, c = m.start(), m.group()
            if c == quote:
                if src.startswith(delim, i):
                    i += len(delim)
                    break
                chars.append(c)
                i += 1
            elif c == "\n":
                if not triple:
                    raise syntax_error(self.where, self.line(pos), "unterminated string")
                chars.append(c)
                i += 1
            elif c == "\\":
                i = self._escape(i, chars)
            elif src.startswith("{", i + 1):
                inner, i = self.run(i + 2, in_brace=True, depth=depth + 1)
                parts += ["".join(chars), tuple(inner)]
                chars = []
            elif i + 1 < n and (src[i + 1].isalpha() or src[i + 1] == "_"):
                inner, i = self._dotted(i + 1)
                parts += ["".join(chars), tuple(inner)]
                chars = []
            else:
                chars.append(c)
                i += 1
        if not parts:
            return self.tok(STR, "".join(chars), pos, i), i
        parts.append("".join(chars))
        return self.tok(GSTR, "", pos, i, tuple(p for p in parts if p != "")), i

    def _escape(self, i: int, chars: list[str]) -> int:
        src = self.src
        e = src[i + 1 : i + 2]
        if e == "\n":
            return i + 2
        if e == "u":
            try:
                chars.append(chr(int(src[i + 2 : i + 6], 16)))
                return i + 6
            except ValueError:
                pass
        chars.append(_ESCAPES.get(e, e))
        return i + 2

    def _dotted(self, pos: int) -> tuple[list[Token], int]:
        """``$a.b.c`` inside a GString: the property path, ending before a ``.`` no name follows."""
        src, n, out, i = self.src, len(self.src), [], pos
        while True:
            end = i
            while end < n and (src[end].isalnum() or src[end] == "_"):
                end += 1
            out.append(self.tok(ID, src[i:end], i, end))
            if end + 1 < n and src[end] == "." and (src[end + 1].isalpha() or src[end + 1] == "_"):
                out.append(self.tok(OP, ".", end, end + 1))
                i = end + 1
                continue
            out.append(self.tok(EOF, "", end, end))
            return out, end


def _regex_allowed(out: list[Token]) -> bool:
    if not out:
        return True
    last = out[-1]
    if last.kind == OP:
        return last.text not in (")", "]", "}", "++", "--")
    return last.kind == NL or (last.kind == ID and last.text in _REGEX_AFTER_IDS)


def tokenize(src: str, where: str) -> list[Token]:
    """All tokens of a Groovy source, ending with an EOF token; ``where`` names it in errors."""
    tokens, _ = _Lexer(src, where).run(0, in_brace=False, depth=0)
    return tokens


# -- expressions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    kind: str
    args: tuple[Any, ...]
    start: int
    end: int
    line: int


#: Binary operators by binding power (Groovy's precedence, loosest first).
_BINARY = {
    "||": 3, "&&": 4, "|": 5, "^": 6, "&": 7,
    "==": 8, "!=": 8, "=~": 8, "==~": 8, "<=>": 8,
    "<": 9, ">": 9, "<=": 9, ">=": 9, "in": 9, "instanceof": 9,
    "<<": 10, ">>": 10, "..": 10,
    "+": 11, "-": 11, "*": 12, "/": 12, "%": 12, "**": 13,
}  # fmt: skip
#: A statement continues on the next line when that line starts with one of these.
_CONTINUES = frozenset({"?", ":", "?:", "&&", "||", ".", "?.", "==", "!="})
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


class Parser:
    """A cursor over tokens that parses expressions and skips what it does not need to understand."""

    def __init__(self, tokens: list[Token] | tuple[Token, ...], where: str) -> None:
        self.t = tokens
        self.i = 0
        self.where = where
        self.depth = 0

    # cursor

    @property
    def tok(self) -> Token:
        return self.t[self.i]

    def advance(self) -> Token:
        tok = self.t[self.i]
        if tok.kind != EOF:
            self.i += 1
        return tok

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == OP and self.tok.text in ops

    def is_id(self, *names: str) -> bool:
        return self.tok.kind == ID and (not names or self.tok.text in names)

    def at_end(self) -> bool:
        return self.tok.kind == EOF

    def skip_newlines(self) -> None:
        while self.tok.kind == NL or self.is_op(";"):
            self.i += 1

    def peek_past_newlines(self) -> Token:
        j = self.i
        while self.t[j].kind == NL:
            j += 1
        return self.t[j]

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            raise syntax_error(
                self.where, self.tok.line, f"expected {op!r}, found {self.tok.text or 'end'!r}"
            )
        return self.advance()

    def skip_balanced(self) -> None:
        """At an opening bracket: move past its matching closer."""
        stack = [_CLOSERS[self.advance().text]]
        while stack:
            tok = self.advance()
            if tok.kind == EOF:
                raise syntax_error(self.where, tok.line, f"missing {stack[-1]!r}")
            if tok.kind == OP and tok.text in _CLOSERS:
                stack.append(_CLOSERS[tok.text])
            elif tok.kind == OP and tok.text == stack[-1]:
                stack.pop()

    def block(self) -> tuple[Token, ...]:
        """At ``{``: the tokens between it and its matching ``}`` (plus EOF), the cursor past the ``}``."""
        first = self.i + 1
        self.skip_balanced()
        end = self.t[self.i - 1]
        return (*self.t[first : self.i - 1], Token(EOF, "", end.line, end.start, end.start))

    def skip_statement(self) -> None:
        """To the end of the current statement: a newline, ``;`` or ``}`` outside brackets."""
        while not self.at_end():
            tok = self.tok
            if tok.kind == NL or (tok.kind == OP and tok.text in (";", "}")):
                if tok.kind == NL and _continues(self.peek_past_newlines()):
                    self.skip_newlines()
                    continue
                return
            if tok.kind == OP and tok.text in _CLOSERS:
                self.skip_balanced()
            else:
                self.advance()

    # expressions

    def expression(self, *, newlines: bool = True) -> Node:
        """One expression; with ``newlines`` a line break ends it unless the next line continues it."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise UnsafeInputError(f"{self.where}:{self.tok.line}: expression nested too deeply; refused")
        try:
            return self._ternary(newlines)
        finally:
            self.depth -= 1

    def _continue_op(self, newlines: bool, ops: Iterable[str]) -> bool:
        if not newlines or (self.tok.kind == NL and _continues(self.peek_past_newlines())):
            self.skip_newlines_only()
        return self.tok.kind in (OP, ID) and self.tok.text in ops

    def skip_newlines_only(self) -> None:
        while self.tok.kind == NL:
            self.i += 1

    def _ternary(self, newlines: bool) -> Node:
        cond = self._binary(0, newlines)
        if self._continue_op(newlines, ("?", "?:")):
            op = self.advance().text
            self.skip_newlines_only()
            if op == "?:":
                other = self.expression(newlines=newlines)
                return self._node("elvis", (cond, other), cond, other)
            yes = self.expression(newlines=newlines)
            self._continue_op(newlines, (":",))
            self.expect_op(":")
            self.skip_newlines_only()
            no = self.expression(newlines=newlines)
            return self._node("tern", (cond, yes, no), cond, no)
        return cond

    def _binary(self, min_bp: int, newlines: bool) -> Node:
        left = self._unary(newlines)
        while True:
            if not self._continue_op(newlines, _BINARY):
                return left
            op = self.tok.text
            bp = _BINARY[op]
            if bp <= min_bp:
                return left
            self.advance()
            self.skip_newlines_only()
            right = self._binary(bp, newlines)
            left = self._node("bin", (op, left, right), left, right)

    def _unary(self, newlines: bool) -> Node:
        if self.is_op("!", "-", "+", "~"):
            tok = self.advance()
            operand = self._unary(newlines)
            return Node("unary", (tok.text, operand), tok.start, operand.end, tok.line)
        if self.is_id("new"):
            tok = self.advance()
            operand = self._unary(newlines)
            return Node("opaque", (), tok.start, operand.end, tok.line)
        return self._postfix(self._primary(), newlines)

    def _postfix(self, node: Node, newlines: bool) -> Node:
        while True:
            if self._continue_op(newlines, (".", "?.", "*.", ".&")) and self.t[self.i + 1].kind in (ID, STR):
                self.advance()
                name = self.advance()
                node = Node("attr", (node, name.text), node.start, name.end, node.line)
            elif self.is_op("("):
                args, end = self._arguments()
                node = Node("call", (node, args), node.start, end, node.line)
            elif self.is_op("["):
                self.advance()
                self.skip_newlines_only()
                index = self.expression(newlines=False)
                end = self.expect_op("]").end
                node = Node("index", (node, index), node.start, end, node.line)
            elif self.is_op("{") and node.kind in ("attr", "call"):
                self.skip_balanced()  # a trailing closure argument: `list.collect { ... }`
                node = Node("call", (node, ()), node.start, self.t[self.i - 1].end, node.line)
            elif self.is_op("++", "--"):
                end = self.advance().end
                node = Node("opaque", (), node.start, end, node.line)
            else:
                return node

    def _arguments(self) -> tuple[tuple[Node, ...], int]:
        self.advance()
        args = []
        while True:
            self.skip_newlines_only()
            if self.is_op(")"):
                return tuple(args), self.advance().end
            if (
                self.tok.kind in (ID, STR)
                and self.t[self.i + 1].kind == OP
                and self.t[self.i + 1].text == ":"
            ):
                self.advance()
                self.advance()  # a named argument: its value is what matters here
            args.append(self.expression(newlines=False))
            self.skip_newlines_only()
            if self.is_op(","):
                self.advance()
            elif not self.is_op(")"):
                raise syntax_error(self.where, self.tok.line, f"unexpected {self.tok.text!r} in arguments")

    def _primary(self) -> Node:
        tok = self.tok
        if tok.kind == STR:
            self.advance()
            return Node("lit", (tok.text,), tok.start, tok.end, tok.line)
        if tok.kind == GSTR:
            self.advance()
            parts = []
            for part in tok.parts:
                if isinstance(part, str):
                    parts.append(part)
                else:
                    sub = Parser(part, self.where)
                    sub.depth = self.depth
                    sub.skip_newlines_only()
                    parts.append(sub.expression(newlines=False) if not sub.at_end() else None)
            return Node("gstr", tuple(parts), tok.start, tok.end, tok.line)
        if tok.kind == NUM:
            self.advance()
            return Node("lit", (_number(tok.text),), tok.start, tok.end, tok.line)
        if tok.kind == ID:
            self.advance()
            if tok.text in ("true", "false", "null"):
                return Node("lit", ({"true": True, "false": False, "null": None}[tok.text],), *_span(tok))
            return Node("name", (tok.text,), tok.start, tok.end, tok.line)
        if tok.kind == OP and tok.text == "(":
            self.advance()
            self.skip_newlines_only()
            inner = self.expression(newlines=False)
            self.skip_newlines_only()
            end = self.expect_op(")").end
            return Node(inner.kind, inner.args, tok.start, end, tok.line)
        if tok.kind == OP and tok.text == "[":
            return self._list_or_map()
        if tok.kind == OP and tok.text == "{":
            body = self.block()
            return Node("closure", (body,), tok.start, self.t[self.i - 1].end, tok.line)
        raise syntax_error(self.where, tok.line, f"unexpected {tok.text or 'end of input'!r}")

    def _list_or_map(self) -> Node:
        open_ = self.advance()
        items: list[Node] = []
        pairs: list[tuple[Node, Node]] = []
        while True:
            self.skip_newlines_only()
            if self.is_op("]"):
                break
            if self.is_op(":") and self.t[self.i + 1].text == "]":
                self.advance()
                continue  # `[:]`, the empty map
            key = self.expression(newlines=False)
            self.skip_newlines_only()
            if self.is_op(":"):
                self.advance()
                self.skip_newlines_only()
                if key.kind == "name":  # `[a: 1]`: a bare key is a string
                    key = Node("lit", (key.args[0],), key.start, key.end, key.line)
                pairs.append((key, self.expression(newlines=False)))
            else:
                items.append(key)
            self.skip_newlines_only()
            if self.is_op(","):
                self.advance()
            elif not self.is_op("]"):
                raise syntax_error(self.where, self.tok.line, f"unexpected {self.tok.text!r} in a list")
        end = self.advance().end
        if pairs:
            return Node("map", tuple(pairs), open_.start, end, open_.line)
        return Node("list", tuple(items), open_.start, end, open_.line)

    @staticmethod
    def _node(kind: str, args: tuple[Any, ...], first: Node, last: Node) -> Node:
        return Node(kind, args, first.start, last.end, first.line)


def raw_text(src: str, node: Node) -> str:
    """What a value looks like in the file: a plain string's value without its quotes, any other
    expression as written."""
    if node.kind == "lit" and isinstance(node.args[0], str):
        return node.args[0]
    return src[node.start : node.end]


def _continues(tok: Token) -> bool:
    return tok.kind == OP and tok.text in _CONTINUES


def _span(tok: Token) -> tuple[int, int, int]:
    return tok.start, tok.end, tok.line


def _number(text: str) -> int | float | str:
    digits = text.rstrip("lLgGdDfFiI").replace("_", "")
    try:
        return int(digits)
    except ValueError:
        try:
            return float(digits)
        except ValueError:
            return text
