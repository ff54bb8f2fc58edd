"""Values of the Groovy expressions Nextflow files hold, computed without running anything.

Only a pure subset is evaluated: literals, GStrings, ``params.*``,
``workflow.containerEngine``, ``task.ext.*``, comparisons, boolean logic,
ternaries, elvis, ``+`` and a few string methods. Anything else (a method
call, an environment variable, a run-time value) becomes :class:`Unknown`
carrying the text it waits for, and a ternary on an unknown condition
becomes a :class:`Choice` of its branches, so a caller can report every
possibility instead of guessing one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .groovy import ID, NL, OP, Node, Parser, Token

#: A ternary chain whose alternatives multiply past this is reported as one unknown value.
MAX_CHOICES = 32


@dataclass(frozen=True)
class Unknown:
    """A value that only the run knows; ``reasons`` name what it waits for (``params.genome``)."""

    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Choice:
    """One of ``options``, picked at run time by ``reason`` (the condition's text)."""

    options: tuple[Any, ...]
    reason: str


@dataclass(frozen=True)
class Closure:
    """A closure kept unevaluated: Nextflow calls config closures per task, so they are too, later."""

    body: tuple[Token, ...]
    where: str
    src: str


@dataclass
class Env:
    """What names mean while a value is evaluated."""

    src: str
    where: str
    params: Mapping[str, Any]
    engine: str
    #: ``task.ext``; None outside a process (then ``task.*`` is unknown)
    task_ext: Mapping[str, Any] | None = None
    process: str | None = None
    #: projectDir, moduleDir..., and ``def`` variables
    names: dict[str, Any] = field(default_factory=dict)


_TASK_UNKNOWN = "task.{} (known only when the task runs)"


def evaluate(node: Node | None, env: Env) -> Any:
    """The value of ``node``: a Python value, ``Unknown``, ``Choice`` or ``Closure``."""
    if node is None:
        return None
    kind, args = node.kind, node.args
    if kind == "lit":
        return args[0]
    if kind == "gstr":
        pieces = [p if isinstance(p, str) else evaluate(p, env) for p in args]
        return lift(lambda *vs: "".join(p if isinstance(p, str) else to_string(p) for p in vs), pieces)
    if kind == "name":
        return _name(args[0], env, node)
    if kind == "attr":
        return _attr(node, env)
    if kind == "index":
        obj, index = evaluate(args[0], env), evaluate(args[1], env)
        return lift(lambda o, k: _member(o, k, _text(node, env)), [obj, index])
    if kind == "list":
        return lift(lambda *vs: list(vs), [evaluate(a, env) for a in args])
    if kind == "map":
        flat = [evaluate(x, env) for pair in args for x in pair]
        return lift(lambda *vs: dict(zip(vs[::2], vs[1::2], strict=True)), flat)
    if kind == "unary":
        op, operand = args
        if op == "!":
            return lift(lambda v: not truthy(v), [evaluate(operand, env)])
        return _opaque(node, env)
    if kind == "bin":
        return _binary(node, env)
    if kind == "tern":
        cond = evaluate(args[0], env)
        return _branch(cond, lambda: evaluate(args[1], env), lambda: evaluate(args[2], env), args[0], env)
    if kind == "elvis":
        first = evaluate(args[0], env)
        return _branch(first, lambda: first, lambda: evaluate(args[1], env), args[0], env)
    if kind == "closure":
        return Closure(args[0], env.where, env.src)
    if kind == "call":
        return _call(node, env)
    return _opaque(node, env)


def call_closure(closure: Closure, env: Env) -> Any:
    """What a closure returns: its ``return``, or its last expression; ``def`` locals are followed."""
    p = Parser(closure.body, closure.where)
    local = Env(
        closure.src, closure.where, env.params, env.engine, env.task_ext, env.process, dict(env.names)
    )
    p.skip_newlines()
    j = p.i
    while p.t[j].kind == ID or (p.t[j].kind == OP and p.t[j].text == ","):
        j += 1
    if p.t[j].kind == OP and p.t[j].text == "->":
        p.i = j + 1  # parameters: a container closure is called without arguments
    value: Any = None
    while True:
        p.skip_newlines()
        if p.at_end():
            return value
        if p.is_id("def") and p.t[p.i + 1].kind == ID and p.t[p.i + 2].text == "=":
            name = p.t[p.i + 1].text
            p.i += 3
            local.names[name] = evaluate(p.expression(), local)
            value = None
        elif p.is_id("return"):
            p.advance()
            return evaluate(p.expression(), local)
        elif p.is_id("if", "for", "while", "switch", "try"):
            return Unknown((f"control flow in the closure at {closure.where}:{p.tok.line}",))
        else:
            value = evaluate(p.expression(), local)
        if not (p.at_end() or p.tok.kind == NL or p.is_op(";")):
            return Unknown((f"a statement the scanner cannot read at {closure.where}:{p.tok.line}",))


def _text(node: Node, env: Env) -> str:
    return " ".join(env.src[node.start : node.end].split())


def _opaque(node: Node, env: Env) -> Unknown:
    return Unknown((_text(node, env),))


def _name(name: str, env: Env, node: Node) -> Any:
    if name in env.names:
        return env.names[name]
    if name == "params":
        return dict(env.params)
    if name in ("workflow", "task", "System", "nextflow"):
        return _Namespace(name)
    return _opaque(node, env)


@dataclass(frozen=True)
class _Namespace:
    """``workflow``, ``task``...: objects whose few statically known properties are looked up by name."""

    name: str


def _attr(node: Node, env: Env) -> Any:
    obj_node, name = node.args
    if obj_node.kind == "name" and obj_node.args[0] == "params" and "params" not in env.names:
        return _param(name, env.params)
    if obj_node.kind == "attr" and _is_task_ext(obj_node.args[0], obj_node.args[1], env):
        if env.task_ext is None:
            return Unknown((f"task.ext.{name} (outside a process)",))
        value = env.task_ext.get(name)
        return call_closure(value, env) if isinstance(value, Closure) else value
    obj = evaluate(obj_node, env)
    if isinstance(obj, _Namespace):
        if obj.name == "workflow" and name == "containerEngine":
            return env.engine
        if obj.name == "task" and name == "process" and env.process:
            return env.process
        if obj.name == "task" and name == "ext":
            return Unknown(("task.ext",)) if env.task_ext is None else dict(env.task_ext)
        if obj.name == "task":
            return Unknown((_TASK_UNKNOWN.format(name),))
        return _opaque(node, env)
    return lift(lambda o: _member(o, name, _text(node, env)), [obj])


def _is_task_ext(node: Node, name: str, env: Env) -> bool:
    return name == "ext" and node.kind == "name" and node.args[0] == "task" and "task" not in env.names


def _param(name: str, params: Mapping[str, Any]) -> Any:
    if name in params:
        return params[name]
    return Unknown((f"params.{name}",))


def _member(obj: Any, key: Any, text: str) -> Any:
    if isinstance(obj, Mapping):
        return obj[key] if key in obj else Unknown((text,))
    if isinstance(obj, (list, str)) and isinstance(key, int) and -len(obj) <= key < len(obj):
        return obj[key]
    return Unknown((text,))


_STRING_METHODS: dict[str, Callable[..., Any]] = {
    "toLowerCase": str.lower,
    "toUpperCase": str.upper,
    "trim": str.strip,
    "toString": lambda s: s,
    "replace": lambda s, a, b: s.replace(a, b),
}


def _is_getenv(func: Node) -> bool:
    return (
        func.kind == "attr"
        and func.args[1] == "getenv"
        and func.args[0].kind == "name"
        and (func.args[0].args[0] == "System")
    )


def _call(node: Node, env: Env) -> Any:
    func, args = node.args
    if _is_getenv(func) and len(args) == 1 and args[0].kind == "lit":
        return Unknown((f"environment variable {args[0].args[0]}",))
    if func.kind == "attr" and func.args[1] in _STRING_METHODS:
        method = _STRING_METHODS[func.args[1]]
        values = [evaluate(func.args[0], env), *(evaluate(a, env) for a in args)]

        def apply(obj: Any, *rest: Any) -> Any:
            if isinstance(obj, str) and all(isinstance(r, str) for r in rest):
                try:
                    return method(obj, *rest)
                except TypeError:
                    pass
            return Unknown((_text(node, env),))

        return lift(apply, values)
    return _opaque(node, env)


def _binary(node: Node, env: Env) -> Any:
    op, left_node, right_node = node.args
    left = evaluate(left_node, env)
    if op in ("&&", "||") and not isinstance(left, (Unknown, Choice)):
        if truthy(left) == (op == "||"):
            return op == "||"
        return lift(truthy, [evaluate(right_node, env)])
    right = evaluate(right_node, env)
    if op == "&&" and _definitely(right, False):
        return False  # `unknown && false` is false whatever the unknown is
    if op == "||" and _definitely(right, True):
        return True

    def apply(a: Any, b: Any) -> Any:
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op == "&&":
            return truthy(a) and truthy(b)
        if op == "||":
            return truthy(a) or truthy(b)
        if op == "+" and (isinstance(a, str) or isinstance(b, str)):
            return to_string(a) + to_string(b)
        if op == "+" and isinstance(a, list):
            return [*a, *(b if isinstance(b, list) else [b])]
        if op == "+" and isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a + b
        return Unknown((_text(node, env),))

    return lift(apply, [left, right])


def _definitely(value: Any, truth: bool) -> bool:
    return not isinstance(value, (Unknown, Choice, Closure)) and truthy(value) == truth


def _branch(cond: Any, yes: Callable[[], Any], no: Callable[[], Any], cond_node: Node, env: Env) -> Any:
    if isinstance(cond, Closure):
        cond = call_closure(cond, env)
    if isinstance(cond, Choice):
        outcomes = {truthy(o) if not isinstance(o, Unknown) else None for o in cond.options}
        if outcomes == {True}:
            return yes()
        if outcomes == {False}:
            return no()
        cond = Unknown((cond.reason,))
    if isinstance(cond, Unknown):
        return Choice((yes(), no()), _text(cond_node, env))
    return yes() if truthy(cond) else no()


def truthy(value: Any) -> bool:
    """Groovy truth: null, false, 0, and empty strings, lists and maps are false."""
    if isinstance(value, (Unknown, Choice, Closure, _Namespace)):
        return True
    return bool(value)


def to_string(value: Any) -> str:
    """Groovy's ``toString`` for the values a GString interpolates."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(to_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{to_string(k)}:{to_string(v)}" for k, v in value.items()) + "]"
    return str(value)


def lift(fn: Callable[..., Any], values: list[Any]) -> Any:
    """``fn`` over known values; an ``Unknown`` among them makes the result unknown, a ``Choice``
    makes it a ``Choice`` of every combination (past ``MAX_CHOICES`` combinations, unknown)."""
    unknown = [r for v in values if isinstance(v, Unknown) for r in v.reasons]
    if unknown:
        return Unknown(tuple(dict.fromkeys(unknown)))
    if any(isinstance(v, Closure) for v in values):
        return Unknown(("a closure used as a value",))
    choices = [(i, v) for i, v in enumerate(values) if isinstance(v, Choice)]
    if not choices:
        return fn(*values)
    count = 1
    for _, c in choices:
        count *= len(c.options)
    if count > MAX_CHOICES:
        return Unknown((f"more than {MAX_CHOICES} alternatives",))
    results = []
    for combo in itertools.product(*(c.options for _, c in choices)):
        current = list(values)
        for (i, _), option in zip(choices, combo, strict=True):
            current[i] = option
        results.append(lift(fn, current))
    return Choice(tuple(results), " and ".join(dict.fromkeys(c.reason for _, c in choices)))


def alternatives(value: Any) -> list[tuple[Any, tuple[str, ...]]]:
    """Every value ``value`` may take, each with the run-time conditions it depends on."""
    if isinstance(value, Choice):
        out = []
        for option in value.options:
            for v, reasons in alternatives(option):
                out.append((v, (f"chosen at run time by: {value.reason}", *reasons)))
        return out
    return [(value, ())]
