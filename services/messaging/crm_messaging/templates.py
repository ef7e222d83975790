"""Template rendering in a Jinja2 sandbox, bounded in what it reaches and in what it costs.

Templates are written by staff, not by trusted developers, so they run in an
`ImmutableSandboxedEnvironment` with no globals at all (no `range`, `cycler`, `joiner`,
`namespace`, `lipsum`, `dict`): a template sees only the variables we pass. On top of
the sandbox's run-time checks, a template that names a private or dunder attribute
(`x.__class__`, `x['_secret']`, `x|attr('__init__')`) is rejected when it is saved, so
nothing that probes Python internals is ever stored. Output is plain text: HTML escaping
would mangle SMS text; right-to-left text passes through byte for byte.

A render is also bounded (`RenderLimits`): the rendered subject and body in bytes, the
loop iterations of one render, and its time. Renders are pure Python on the caller's
thread (the API's, the dispatcher's), so nothing is killed from outside: every step that
can cost goes through a hook that charges a per-render `Budget` and checks its deadline.

- `for` loops iterate through `_guard_loop` (the template is rewritten after parsing, as
  are `~` joins and every piece of output), and so does a recursive loop's `loop(...)`.
- Whatever one operation could make big in a single C call is predicted and refused
  *before* it runs: `*`, `**`, `+` and `%` (the sandbox's `intercepted_binops`), the
  `replace`, `join` and `format` filters and methods, a value turned into text (lists
  nested by reference print exponentially: their size is counted, not printed).
- Filters and methods that pad or repeat by a number (`center`, `indent`, `wordwrap`,
  `batch`, `slice`, `tojson`'s indent, `str.ljust`, `str.format`, `int.to_bytes`...) are
  not available; builtin values offer a short list of methods (`SAFE_METHODS`).
- The output is streamed (`Template.generate`) and stops at the part's cap; text built
  in macros, `{% set %}` and filter blocks counts too (at most twice the cap).

A cap broken is a `CapExceeded` naming its setting. `check_caps` looks for what can be
seen without variables when a template is saved (literal sizes, nested literal loops, a
trial render with no variables); the rest shows at preview or at send time.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from jinja2 import ChainableUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

PARTS = ("subject", "body")
CAP_SETTINGS = {
    "subject": "CRM_MESSAGING_MAX_SUBJECT_BYTES",
    "body": "CRM_MESSAGING_MAX_BODY_BYTES",
    "loops": "CRM_MESSAGING_MAX_LOOP_ITERATIONS",
    "time": "CRM_MESSAGING_MAX_RENDER_SECONDS",
}
PRODUCED_FACTOR = 2  # text made while rendering (macros, set blocks, output) may be this many times the cap
INT_DIGITS = 4300  # Python's own limit for turning an int into text

# filters whose output can outgrow their input by a number the template chooses
DROPPED_FILTERS = (
    "attr",
    "center",
    "indent",
    "wordwrap",
    "batch",
    "slice",
    "sum",
    "tojson",
    "pprint",
    "xmlattr",
    "urlize",
)
_STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "join",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "replace",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
    }
)
SAFE_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (str, _STR_METHODS),
    (dict, frozenset({"get", "items", "keys", "values"})),
    (list, frozenset({"count", "index"})),
    (tuple, frozenset({"count", "index"})),
    (int, frozenset()),
    (float, frozenset()),
)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


class TemplateRejected(ValueError):
    """A template that does not compile, reaches for something private, or breaks a cap."""


class CapExceeded(TemplateRejected):
    """A render that would break one of the `RenderLimits`; `str()` names the setting."""

    def __init__(self, cap: str, detail: str) -> None:
        self.cap = cap
        super().__init__(f"{detail} (cap: {CAP_SETTINGS[cap]})")


@dataclass(frozen=True)
class RenderLimits:
    """What one render may cost (`config.MessagingConfig.render_limits`, from the environment)."""

    subject_bytes: int = 998  # RFC 5322's line length limit
    body_bytes: int = 1 << 20
    loop_iterations: int = 10_000  # in one render, every loop counted together
    seconds: float = 1.0

    def bytes_for(self, part: str) -> int:
        return self.subject_bytes if part == "subject" else self.body_bytes


DEFAULT_LIMITS = RenderLimits()


@dataclass
class Budget:
    """One render's allowance; charged by the sandbox hooks as the template runs."""

    limits: RenderLimits
    part: str
    deadline: float = field(init=False)
    loops: int = 0
    produced: int = 0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.limits.seconds

    @property
    def cap(self) -> int:
        return self.limits.bytes_for(self.part)

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise CapExceeded("time", f"rendering took longer than {self.limits.seconds:g} s")

    def loop(self) -> None:
        self.loops += 1
        if self.loops > self.limits.loop_iterations:
            raise CapExceeded("loops", f"loops ran more than {self.limits.loop_iterations} iterations")
        self.tick()

    def fits(self, size: int) -> None:
        """Refuse a value about to be `size` characters (or list items) long: the part could not hold it."""
        if size > self.cap:
            raise CapExceeded(
                self.part, f"a value of {size} characters is more than the {self.part} may hold ({self.cap} bytes)"
            )

    def value(self, value: Any) -> None:
        self.fits(measure(value, self.cap))

    def emit(self, value: Any) -> None:
        self.tick()
        size = measure(value, self.cap)
        self.fits(size)
        self.produced += size
        if self.produced > PRODUCED_FACTOR * self.cap:
            raise CapExceeded(
                self.part,
                f"the template makes more than {PRODUCED_FACTOR} times the {self.cap} bytes the {self.part} may hold",
            )


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("render_budget", default=None)


def _budget() -> Budget:
    """The render in progress; outside one (Jinja folding constants while compiling), the default caps."""
    return _BUDGET.get() or Budget(DEFAULT_LIMITS, "body")


def measure(value: Any, limit: int) -> int:
    """About how long `str(value)` is, counted no further than just past `limit` (so shared,
    nested lists cost at most `limit` steps to measure, never their exponential text)."""
    if isinstance(value, str):
        return len(value)
    total, todo = 0, [value]
    while todo and total <= limit:
        item = todo.pop()
        if isinstance(item, str):
            total += len(item) + 4  # quotes and a separator inside a list's text
        elif isinstance(item, bool) or item is None or isinstance(item, Undefined):
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + len(item)
            if total <= limit:
                todo.extend(item)
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            if total <= limit:
                todo.extend(item.keys())
                todo.extend(item.values())
        else:  # a number, a macro, a loop: short text
            total += 32
    return total


# --- what one operation would make, predicted before it runs ----------------------------


def _predict_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        _predict_repeat(budget, left, right)
        _predict_repeat(budget, right, left)
    elif operator == "**" and _is_int(left) and _is_int(right) and right > 0:
        _fits_int(budget, max(left.bit_length(), 1) * right)
    elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        budget.fits(len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        _predict_format(budget, left, right)


def _predict_repeat(budget: Budget, sequence: Any, times: Any) -> None:
    if isinstance(sequence, str | list | tuple) and _is_int(times):
        budget.fits(len(sequence) * max(times, 0))
    elif _is_int(sequence) and _is_int(times):
        _fits_int(budget, sequence.bit_length() + times.bit_length())


def _fits_int(budget: Budget, bits: int) -> None:
    """A number Python would refuse to print (or the part could not hold) is not computed either."""
    digits = bits * 3 // 10
    if digits > min(INT_DIGITS, budget.cap):
        raise CapExceeded(
            budget.part, f"a number of about {digits} digits is too big to compute or print in the {budget.part}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _predict_format(budget: Budget, template: str, args: Any) -> None:
    """`template % args`: its text, every width and precision it names, and the arguments' text;
    a width taken from the arguments (`*`) counts every number among them."""
    size, starred = len(template) + measure(args, budget.cap), False
    for width, precision in _PERCENT_SPEC.findall(template):
        for number in (width, precision):
            if number == "*":
                starred = True
            elif number:
                size += int(number) if len(number) < 13 else 10**12  # int() refuses over 4300 digits
    if starred:
        values = args if isinstance(args, tuple) else (args,)
        size += sum(abs(v) for v in values if _is_int(v))
    budget.fits(size)


def _predict_replace(budget: Budget, text: Any, old: Any, new: Any, count: Any = None) -> None:
    text, old, new = str(text), str(old), str(new)
    found = len(text) + 1 if old == "" else text.count(old)
    if _is_int(count) and count >= 0:
        found = min(found, count)
    budget.fits(len(text) + found * max(len(new) - len(old), 0))


def _predict_join(budget: Budget, separator: Any, items: list[Any]) -> None:
    budget.fits(len(str(separator)) * max(len(items) - 1, 0) + sum(measure(item, budget.cap) for item in items))


# --- the environment -------------------------------------------------------------------


def _guard_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    """What every `for` loop iterates: each item charged to the render's loop allowance."""
    budget = _budget()
    for item in iterable:
        budget.loop()
        yield item


def _emit(value: Any) -> Any:
    """Every piece of output (text in the template too) passes here before it becomes text."""
    _budget().emit(value)
    return value


def _bounded_concat(*values: Any) -> str:
    """`a ~ b ~ c`, refused before joining when the result would be too big."""
    budget = _budget()
    budget.fits(sum(measure(value, budget.cap) for value in values))
    return "".join(str(value) for value in values)


INTERNAL = (_guard_loop, _emit, _bounded_concat)


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks the deadline, refuses arguments or a result too big for the part,
    and predicts `replace`, `join` and `format` before they run. Jinja's `pass_*` markers
    are copied by `functools.wraps`, so the filter gets what it asked for."""
    passes_context = hasattr(function, "jinja_pass_arg")

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        own = list(args[1:] if passes_context else args)
        for value in (*own, *kwargs.values()):
            budget.value(value)
        if name == "replace":
            _predict_replace(budget, *own, **kwargs)
        elif name == "join" and own:
            own[0] = list(own[0]) if not isinstance(own[0], str) else own[0]
            separator = own[1] if len(own) > 1 else kwargs.get("d", "")
            _predict_join(budget, separator, list(own[0]))
            args = (*args[:1], *own) if passes_context else tuple(own)
        elif name == "format" and own:
            _predict_format(budget, str(own[0]), tuple(own[1:]) or kwargs)
        result = function(*args, **kwargs)
        budget.value(result)
        return result

    return guarded


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with every costly step charged to the render's `Budget`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(autoescape=False, undefined=ChainableUndefined, keep_trailing_newline=True)
        self.globals.clear()  # no cycler, joiner, namespace, range, lipsum, dict
        for name in DROPPED_FILTERS:
            self.filters.pop(name, None)
        self.filters = {name: _guarded_filter(name, f) for name, f in self.filters.items()}
        self.guard_loop, self.emit, self.bounded_concat = _guard_loop, _emit, _bounded_concat

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        _predict_binop(budget, operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if any(obj is hook for hook in INTERNAL):
            return obj(*args)
        budget = _budget()
        budget.tick()
        if isinstance(obj, LoopContext) and args:  # a recursive loop's `loop(items)`: counted too
            args = (_guard_loop(args[0]), *args[1:])
        for value in (*args, *kwargs.values()):
            budget.value(value)
        owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
        if isinstance(owner, str) and name == "replace":
            _predict_replace(budget, owner, *args, **kwargs)
        elif isinstance(owner, str) and name == "join" and args:
            args = (list(args[0]), *args[1:])
            _predict_join(budget, owner, args[0])
        result = super().call(context, obj, *args, **kwargs)
        budget.value(result)
        return result

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        allowed = next((names for kind, names in SAFE_METHODS if isinstance(obj, kind)), None)
        return allowed is None or attr in allowed

    def wrap_str_format(self, value: Any) -> None:
        """`str.format` is not offered (its widths pad without bound): the `format` filter is."""
        return None


class _Bounding(NodeTransformer):
    """Rewrites a parsed template so loops, `~` joins and output go through the budget's hooks."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802 - Jinja names visitors by node class
        self.generic_visit(node)
        node.iter = _hook("guard_loop", cast(nodes.Expr, node.iter))  # an expression; jinja2 types it Node
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        node.nodes = [
            _hook(
                "emit", nodes.Const(child.data, lineno=child.lineno) if isinstance(child, nodes.TemplateData) else child
            )
            for child in node.nodes
        ]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return _hook("bounded_concat", *node.nodes)


def _hook(name: str, *args: nodes.Expr) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(name), list(args), [], None, None, lineno=args[0].lineno)
    call.set_lineno(args[0].lineno or 1)
    call.set_environment(ENV)
    return call


ENV = BoundedEnvironment()


# --- checks at save ----------------------------------------------------------------------


@contextlib.contextmanager
def _nesting() -> Iterator[None]:
    """A template nested deeper than Python's recursion (or than the indentation its compiled
    code may have) is refused, not a crash."""
    try:
        yield
    except (RecursionError, SyntaxError):
        raise TemplateRejected("the template nests too deeply") from None


def check(source: str) -> None:
    """Compile `source`; raise TemplateRejected for bad syntax or any private name."""
    with _nesting():
        _check(source)


def _check(source: str) -> None:
    tree = _parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name, nodes.Filter)):
        name = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value if isinstance(node.arg.value, str) else None
        elif isinstance(node, nodes.Name):
            name = node.name
        elif isinstance(node, nodes.Filter) and node.name not in ENV.filters:
            raise TemplateRejected(f"unknown filter {node.name!r}")
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateRejected(f"{name!r}: private names are not available in templates")
    try:
        ENV.from_string(_Bounding().visit(tree))
    except TemplateSyntaxError as exc:  # e.g. an unknown filter or test found at compile time
        raise TemplateRejected(f"line {exc.lineno}: {exc.message}") from None


def check_caps(source: str, part: str, limits: RenderLimits = DEFAULT_LIMITS) -> None:
    """What a template shows of its cost without variables: sizes computed from literals
    (`'x' * 50000000`), literal loops nested past the loop cap, and a trial render with no
    variables under the caps (any other failure there is left to preview and send time,
    where the variables are known). CapExceeded when a cap is broken."""
    budget, tree = Budget(limits, part), _parse(source)
    with _nesting():
        for node in tree.find_all(nodes.BinExpr):
            if isinstance(node.left, nodes.Const) and isinstance(node.right, nodes.Const):
                _predict_binop(budget, node.operator, node.left.value, node.right.value)
        _check_literal_loops(tree, 1, limits)
    try:
        render(source, {}, limits, part)
    except CapExceeded:
        raise
    except TemplateRejected:
        pass


def _check_literal_loops(node: nodes.Node, runs: int, limits: RenderLimits) -> None:
    """Loops over literal lists or text, nested: their iterations multiply."""
    for child in node.iter_child_nodes():
        inner = runs
        if isinstance(child, nodes.For) and isinstance(child.iter, nodes.Const | nodes.List | nodes.Tuple):
            size = (
                len(child.iter.items)
                if isinstance(child.iter, nodes.List | nodes.Tuple)
                else len(child.iter.value)
                if isinstance(child.iter.value, str | list | tuple)
                else 0
            )
            inner = runs * size
            if inner > limits.loop_iterations:
                raise CapExceeded(
                    "loops", f"nested loops over literals run {inner} iterations, more than {limits.loop_iterations}"
                )
        _check_literal_loops(child, inner, limits)


def _parse(source: str) -> nodes.Template:
    try:
        with _nesting():
            return ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateRejected(f"line {exc.lineno}: {exc.message}") from None


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Any:
    check(source)  # also at render time: a template stored before a rule was added is checked too
    with _nesting():
        return ENV.from_string(_Bounding().visit(_parse(source)))


# --- rendering -----------------------------------------------------------------------------


def render(source: str, variables: Mapping[str, Any], limits: RenderLimits = DEFAULT_LIMITS, part: str = "body") -> str:
    """Render with the sandbox under `limits` for `part` ("subject" or "body"); anything
    unsafe, broken or over a cap is a TemplateRejected (a CapExceeded for a cap)."""
    template = _compiled(source)  # before the clock starts: compiling is not the template's doing
    budget = Budget(limits, part)
    token = _BUDGET.set(budget)
    try:
        text = _stream(template, _plain(variables), budget)
    except TemplateRejected:
        raise
    except SecurityError as exc:
        raise TemplateRejected(f"unsafe template: {exc}") from None
    except TemplateError as exc:
        raise TemplateRejected(f"template failed: {exc}") from None
    except RecursionError:
        raise TemplateRejected("template failed: macros or loops nest too deeply") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateRejected(f"template failed: {exc.__class__.__name__}") from None
    finally:
        _BUDGET.reset(token)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > budget.cap:
        raise CapExceeded(part, f"the rendered {part} is {size} bytes, more than {budget.cap}")
    return text


def _stream(template: Any, variables: dict[str, Any], budget: Budget) -> str:
    """The output as it is made, stopped as soon as it passes the cap (characters never
    outnumber UTF-8 bytes, so a count of characters past the cap is past it in bytes)."""
    chunks, size = [], 0
    for chunk in template.generate(**variables):
        size += len(chunk)
        if size > budget.cap:
            raise CapExceeded(budget.part, f"the rendered {budget.part} is more than {budget.cap} bytes")
        chunks.append(chunk)
    return "".join(chunks)


def _plain(value: Any) -> Any:
    """Only JSON-like data goes in: no objects whose methods a template could call."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
