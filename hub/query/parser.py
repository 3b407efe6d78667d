"""Twin query text -> typed AST (``hub.query.ast``), with errors that say where, what and what was expected.

Why lark (LALR) rather than a hand-written recursive-descent parser
    The language is small but has seven precedence levels, two start symbols (a query and a
    job's bare condition) and a dozen places where a token may or may not follow. As a lark
    grammar it is forty declarative lines that read like the documentation; precedence is
    the rule nesting, not code, and a grammar change cannot forget a call site. LALR(1)
    parses in linear time on an explicit stack (8192 ``(`` cannot overflow Python's), with
    the grammar compiled once per process (~50 ms). The price of a library -- its error
    objects -- is paid once, in ``_translate``: lark reports the offending token or
    character, and the set of terminals the parser accepts at that point (replayed from the
    state just before the bad token, ``_accepted_before``, because LALR may already have
    reduced on it) is turned into human words ("a field, a constant or '('"). A hand-written
    parser would give the same messages only by keeping those expected sets by hand at every
    call site. The lexer is lark's *basic* one, so keywords are reserved everywhere (``SELECT
    FROM devices`` says FROM was found where a projection was expected, rather than reading
    a field named FROM); the ``segment`` rule takes them back as names after a dot. The
    grammar lives in this module, so the package needs no data files.

What the grammar accepts beyond ``hub.query.ast``'s summary
    - Keywords (SELECT TOP FROM WHERE GROUP BY AS AND OR NOT IN NIN true false null),
      function names, ``devices`` / ``devices.jobs``, identity field names and the roots
      ``tags``, ``properties``, ``desired``, ``reported`` are case-insensitive; path
      segments below a root and aliases are case-sensitive.
    - A path segment is a name (letters, digits, ``_``; not starting with a digit), any
      text in ``[[ ]]`` (not containing ``]]`` nor ending in ``]``), or ``$version`` as the
      whole path below ``properties.desired`` / ``properties.reported``. After a dot a keyword
      is an ordinary name (``tags.group`` = ``tags.[[group]]``).
    - ``devices.`` may prefix any device field (``devices.tags.x``, ``devices.deviceId``):
      nothing else starts with ``devices``, so it is unambiguous. On devices.jobs, fields are
      bare or prefixed ``devices.jobs.``; ``createdTimeUtc`` (the spelling in Microsoft's own
      devices.jobs example) is accepted for ``createdDateTimeUtc``. ``devices.modules`` is a
      clear error: fleethub has no module twins.
    - Numbers: ``12``, ``1.5``, ``.5``, ``1e3``, ``0x1F``; integers must fit 64 bits. A minus
      sign directly before a number is part of the constant (``-1`` is ``Literal(-1)``, as in
      IN lists); ``-(1)`` stays an operator. Strings: ``'..'`` or ``".."`` with the escapes
      ``\\' \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX`` (surrogate pairs combine; a lone
      surrogate or NUL is an error, since no back end can store it).
    - ``IN`` / ``NIN`` take a non-empty list of constants. Comparisons do not chain
      (``a = b = c`` is an error).
    - AND / OR chains are built balanced (``hub.query.printer.chain_split``) so that long OR
      lists stay shallow; other binary operators associate to the left.

Positions (``.position``, 0-based offsets): a field or constant's first character (the minus
of a negative constant), a unary or binary operator's token, IN / NIN, a function's name.
Queries longer than ``MAX_QUERY_LENGTH`` characters are refused before parsing; every error
is a ``QuerySyntaxError`` (``hub.query.check`` formats them).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from hub.errors import QuerySyntaxError
from hub.query import printer
from hub.query.ast import (
    AggregateCall,
    AggregateFunction,
    BinaryOp,
    BinaryOperator,
    Call,
    Expr,
    Field,
    FieldRoot,
    FunctionName,
    InList,
    Literal,
    Projection,
    Query,
    Source,
    Star,
    UnaryOp,
    UnaryOperator,
)
from hub.query.check import MAX_DEPTH, check_condition, check_query, nesting_error, query_error, show
from hub.query.printer import chain_split

__all__ = ["MAX_QUERY_LENGTH", "parse_condition", "parse_query"]

MAX_QUERY_LENGTH: Final = 8192

_GRAMMAR: Final = r"""
query: SELECT top? select_list FROM source where? group_by?
condition: expr

top: TOP NUMBER
select_list: select_item (COMMA select_item)*
?select_item: STAR -> star
            | expr (AS alias)? -> projection
alias: NAME | ESCAPED
source: NAME (DOT NAME)*
where: WHERE expr
group_by: GROUP BY expr (COMMA expr)*

?expr: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> not_
         | comparison
?comparison: sum
           | sum (EQ | NE | LTGT | LT | GT | LE | GE) sum -> compare
           | sum (IN | NIN) array -> in_list
?sum: product ((PLUS | MINUS) product)*
?product: unary ((STAR | SLASH | PERCENT) unary)*
?unary: MINUS unary -> neg
      | atom
?atom: STRING -> string
     | NUMBER -> number
     | TRUE -> true
     | FALSE -> false
     | NULL -> null
     | field
     | NAME LPAR (expr (COMMA expr)*)? RPAR -> call
     | LPAR expr RPAR -> parens
field: (NAME | ESCAPED) (DOT segment)*
segment: NAME | ESCAPED | DOLLAR_NAME | SELECT | TOP | FROM | WHERE | GROUP | BY | AS | AND | OR | NOT | IN | NIN
       | TRUE | FALSE | NULL
array: LSQB (constant (COMMA constant)*)? RSQB
constant: STRING | NUMBER | MINUS NUMBER | TRUE | FALSE | NULL

SELECT: "select"i
TOP: "top"i
FROM: "from"i
WHERE: "where"i
GROUP: "group"i
BY: "by"i
AS: "as"i
AND: "and"i
OR: "or"i
NOT: "not"i
IN: "in"i
NIN: "nin"i
TRUE: "true"i
FALSE: "false"i
NULL: "null"i
NAME: /[^\W\d]\w*/i
ESCAPED: /\[\[(?:[^\]]|\](?!\]))*\]\]/
DOLLAR_NAME: /\$\w+/
STRING: /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/s
NUMBER: /(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\w*/
EQ: "="
NE: "!="
LTGT: "<>"
LT: "<"
GT: ">"
LE: "<="
GE: ">="
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
PERCENT: "%"
LPAR: "("
RPAR: ")"
LSQB: "["
RSQB: "]"
COMMA: ","
DOT: "."
%ignore /\s+/
"""


@functools.cache
def _lark() -> Lark:
    return Lark(
        _GRAMMAR,
        parser="lalr",
        lexer="basic",
        start=["query", "condition"],
        propagate_positions=True,
        maybe_placeholders=False,
    )


# -- public API --------------------------------------------------------------------------


def parse_query(text: str) -> Query:
    """Parse and type-check a full ``SELECT ... FROM ...`` query."""
    _check_length(text)
    tree = _parse(text, "query")
    _check_tree_depth(tree, text)
    source_tree = next(child for child in tree.children if isinstance(child, Tree) and child.data == "source")
    query = _Builder(text, _source(source_tree, text)).query(tree)
    return check_query(query, text)


def parse_condition(text: str, source: Source = Source.DEVICES) -> Expr | None:
    """Parse and type-check a job's ``queryCondition``: the WHERE part alone, or ``*`` (all: None).

    The 2016 preview of IoT Hub jobs (and its tutorial) took a whole ``SELECT * FROM devices
    [WHERE ...]`` there; that spelling is accepted and means its WHERE part. Other full
    queries (projections, TOP, GROUP BY, another source) are refused: a job needs a set of
    devices, nothing else."""
    _check_length(text)
    stripped = text.strip()
    if stripped == "*":
        return None
    start = len(text) - len(text.lstrip())
    if not stripped:
        raise query_error(
            text, start, "found an empty condition, expected a condition, or * for every device", kind="Syntax error"
        )
    first_word = re.match(r"\w+", stripped)
    keyword = first_word.group().upper() if first_word is not None else None
    if keyword == "SELECT" and source is Source.DEVICES:
        return _preview_condition(text, start)
    if keyword in ("SELECT", "WHERE"):
        raise query_error(
            text,
            start,
            f"found {keyword}, expected only the condition of a WHERE clause without the WHERE keyword "
            "(a queryCondition is like deviceId IN ['d1', 'd2'], or * for every device)",
            kind="Syntax error",
        )
    tree = _parse(text, "condition")
    _check_tree_depth(tree, text)
    builder = _Builder(text, source)
    builder.context = "in a condition"
    return check_condition(builder.expr(tree.children[0]), source, text)


def _preview_condition(text: str, start: int) -> Expr | None:
    query = parse_query(text)
    if (
        query.source is not Source.DEVICES
        or not isinstance(query.select, Star)
        or query.top is not None
        or query.group_by
    ):
        raise query_error(
            text,
            start,
            "found a query that selects more than SELECT * FROM devices, expected only the condition of a WHERE "
            "clause (a queryCondition is like deviceId IN ['d1', 'd2'], or * for every device; the 2016 preview's "
            "SELECT * FROM devices [WHERE ...] is accepted too)",
            kind="Syntax error",
        )
    return query.where


def _check_length(text: str) -> None:
    if len(text) > MAX_QUERY_LENGTH:
        raise query_error(
            text,
            MAX_QUERY_LENGTH,
            f"found a query of {len(text)} characters, expected at most {MAX_QUERY_LENGTH}",
            kind="Syntax error",
        )


# -- lark errors -> QuerySyntaxError (the one place) -------------------------------------


def _parse(text: str, start: str) -> Tree[Token]:
    try:
        return _lark().parse(text, start=start)
    except UnexpectedInput as exc:
        raise _translate(exc, text, start) from exc


def _accepted_before(text: str, start: str, offset: int | None) -> set[str]:
    """The terminals the parser accepts just before the token at ``offset`` (None: at the end).

    Lark raises only after LALR has reduced on the bad lookahead, and a reduced state may
    accept less than the state before it (in a condition ``a = 1 GROUP``, the reductions made
    for GROUP lose AND and OR). Replaying the good tokens gives the exact set; errors are rare,
    so parsing twice costs nothing that matters.
    """
    parser = _lark().parse_interactive(text, start=start)
    for token in parser.iter_parse():  # yields each token before feeding it
        if token.start_pos == offset:
            break
    accepts = cast(Callable[[], set[str]], parser.accepts)  # lark leaves it unannotated
    return accepts()


def _translate(exc: UnexpectedInput, text: str, start: str) -> QuerySyntaxError:
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        rest = text[offset:]
        if rest[:1] in ("'", '"'):
            return _syntax(
                text, offset, f"found the unterminated string {show(rest, 24)}, expected a closing {rest[0]}"
            )
        if rest.startswith("[["):
            return _syntax(text, offset, f"found the unterminated name {show(rest, 24)}, expected a closing ]]")
        parser = getattr(exc, "interactive_parser", None)
        accepts: set[str] = parser.accepts() if parser is not None else set(exc.allowed or ())
        return _syntax(text, offset, f"found {show(rest[:1])}, expected {_expected_words(accepts)}")
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            offset, found = len(text), "end of query"
        elif token.type == "LSQB" and text.startswith("[[", _pos(token)):
            rest = text[_pos(token) :]
            return _syntax(text, _pos(token), f"found the unterminated name {show(rest, 24)}, expected a closing ]]")
        else:
            offset, found = _pos(token), show(str(token))
        accepted = _accepted_before(text, start, None if token.type == "$END" else offset)
        if token.type == "NUMBER" and token.startswith(".") and "DOT" in accepted:
            # tags.a.5: the lexer read '.5' as a number where a path goes on.
            digits = str(token)[1:]
            return _syntax(
                text,
                offset + 1,
                f"found {show(digits)}, expected a name ([[{digits}]] for one that starts with a digit)",
            )
        return _syntax(text, offset, f"found {found}, expected {_expected_words(accepted or exc.expected)}")
    offset = getattr(exc, "pos_in_stream", None) or 0
    return _syntax(text, offset, "found something unexpected, expected a query")  # LALR raises only the two above


def _syntax(text: str, offset: int, detail: str) -> QuerySyntaxError:
    return query_error(text, offset, detail, kind="Syntax error")


_OPERAND: Final = frozenset({"NAME", "ESCAPED", "STRING", "NUMBER", "TRUE", "FALSE", "NULL", "LPAR", "MINUS"})
_CONSTANT: Final = frozenset({"STRING", "NUMBER", "TRUE", "FALSE", "NULL", "MINUS"})
_SEGMENT: Final = frozenset({"NAME", "ESCAPED", "DOLLAR_NAME"})
_COMPARISON_OPERATORS: Final = frozenset({"EQ", "NE", "LTGT", "LT", "GT", "LE", "GE", "IN", "NIN"})
_ARITHMETIC_OPERATORS: Final = frozenset({"PLUS", "MINUS", "STAR", "SLASH", "PERCENT"})
_KEYWORDS: Final = frozenset(printer.KEYWORDS)  # the terminals are named after the keywords
# fmt: off
_OPERATORS: Final = (
    "AND", "OR", "EQ", "NE", "LTGT", "LT", "GT", "LE", "GE", "IN", "NIN", "PLUS", "MINUS", "STAR", "SLASH", "PERCENT",
)
_WORDS: Final = {
    "SELECT": "SELECT", "TOP": "TOP", "FROM": "FROM", "WHERE": "WHERE", "GROUP": "GROUP BY", "BY": "BY",
    "AS": "AS", "AND": "AND", "OR": "OR", "NOT": "NOT", "IN": "IN", "NIN": "NIN",
    "TRUE": "true", "FALSE": "false", "NULL": "null", "NAME": "a name", "ESCAPED": "a [[name]]",
    "DOLLAR_NAME": "$version", "STRING": "a string", "NUMBER": "a number",
    "EQ": "'='", "NE": "'!='", "LTGT": "'<>'", "LT": "'<'", "GT": "'>'", "LE": "'<='", "GE": "'>='",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "PERCENT": "'%'",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "COMMA": "','", "DOT": "'.'",
    "$END": "end of query",
}
_ORDER: Final = (
    "SELECT", "TOP", "STAR", "NOT", "NAME", "ESCAPED", "DOLLAR_NAME", "STRING", "NUMBER", "TRUE", "FALSE", "NULL",
    "LPAR", "LSQB", *_OPERATORS, "AS", "COMMA", "FROM", "WHERE", "GROUP", "BY", "RPAR", "RSQB", "$END",
)
# fmt: on


def _expected_words(terminals: Iterable[str]) -> str:
    """Lark terminal names as a short human list: ``a field, a constant or '('``."""
    names = set(terminals) - {"DOT"}  # a dot continues a path; never what the reader missed
    words: list[str] = []
    lead: list[str] = []
    if {"NAME", "STRING"} <= names:
        lead = ["a field", "a constant", "'('"]
        names -= _OPERAND
    elif {"STRING", "NUMBER"} <= names:
        lead = ["a constant"]
        names -= _CONSTANT
    elif {"NAME", "DOLLAR_NAME"} <= names:
        lead = ["a name"]
        names -= _SEGMENT | _KEYWORDS
    elif names == {"NAME"}:
        lead = ["devices or devices.jobs"]
        names.clear()
    elif {"NAME", "ESCAPED"} <= names:
        lead = ["an alias"]
        names -= {"NAME", "ESCAPED"}
    else:
        names.discard("LPAR")  # the '(' of a call after a name
    operators: list[str] = []
    if set(_OPERATORS) <= names:
        operators = ["an operator"]
        names -= set(_OPERATORS)
    else:
        if names >= _COMPARISON_OPERATORS:
            operators.append("a comparison")
            names -= _COMPARISON_OPERATORS
        if names >= _ARITHMETIC_OPERATORS:
            operators.append("an arithmetic operator")
            names -= _ARITHMETIC_OPERATORS
        operators.extend(_WORDS[name] for name in ("AND", "OR") if name in names)
        names -= {"AND", "OR"}
    for name in _ORDER:
        if name not in names:
            continue
        if name == "NOT":
            words.append(_WORDS[name])
            words.extend(lead)
            lead = []
        elif name in ("AS", "COMMA", "FROM", "WHERE", "GROUP", "BY", "RPAR", "RSQB", "$END"):
            words.extend(lead + operators)
            lead = operators = []
            words.append(_WORDS[name])
        else:
            words.append(_WORDS.get(name, name))
        names.discard(name)
    words.extend(lead + operators)
    words.extend(sorted(_WORDS.get(name, name) for name in names))
    if not words:
        return "nothing more"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# -- tree -> AST -------------------------------------------------------------------------


def _pos(token: Token) -> int:
    return token.start_pos or 0


def _first_pos(node: Tree[Token] | Token) -> int:
    if isinstance(node, Token):
        return _pos(node)
    return node.meta.start_pos if not node.meta.empty else 0


def _check_tree_depth(tree: Tree[Token], text: str) -> None:
    """Refuse trees too deep to build recursively; ``hub.query.check`` then bounds the AST exactly."""
    limit = MAX_DEPTH + 8  # a parse tree is at most a few levels deeper than its AST
    stack: list[tuple[Tree[Token], int]] = [(tree, 1)]
    while stack:
        node, level = stack.pop()
        if level > limit:
            raise nesting_error(text, _first_pos(node))
        stack.extend((child, level + 1) for child in node.children if isinstance(child, Tree))


def _source(tree: Tree[Token], text: str) -> Source:
    names = [str(child) for child in tree.children if isinstance(child, Token) and child.type == "NAME"]
    written = ".".join(names)
    if written.lower() == "devices":
        return Source.DEVICES
    if written.lower() == "devices.jobs":
        return Source.JOBS
    offset = _first_pos(tree)
    if written.lower() == "devices.modules":
        raise query_error(
            text, offset, "found devices.modules, expected devices or devices.jobs (fleethub has no module twins)"
        )
    raise query_error(text, offset, f"found {show(written)}, expected devices or devices.jobs")


_BINARY: Final = {
    "EQ": BinaryOperator.EQ,
    "NE": BinaryOperator.NE,
    "LTGT": BinaryOperator.NE,
    "LT": BinaryOperator.LT,
    "GT": BinaryOperator.GT,
    "LE": BinaryOperator.LE,
    "GE": BinaryOperator.GE,
    "PLUS": BinaryOperator.ADD,
    "MINUS": BinaryOperator.SUB,
    "STAR": BinaryOperator.MUL,
    "SLASH": BinaryOperator.DIV,
    "PERCENT": BinaryOperator.MOD,
    "AND": BinaryOperator.AND,
    "OR": BinaryOperator.OR,
}

_DEVICE_IDENTITY: Final = {
    root.value.lower(): root
    for root in (
        FieldRoot.DEVICE_ID,
        FieldRoot.STATUS,
        FieldRoot.CONNECTION_STATE,
        FieldRoot.LAST_ACTIVITY_TIME,
        FieldRoot.ETAG,
        FieldRoot.VERSION,
    )
}
_JOB_FIELDS: Final = {
    root.value.lower(): root
    for root in (
        FieldRoot.DEVICE_ID,
        FieldRoot.JOB_ID,
        FieldRoot.JOB_TYPE,
        FieldRoot.STATUS,
        FieldRoot.START_TIME,
        FieldRoot.END_TIME,
        FieldRoot.CREATED_TIME,
        FieldRoot.LAST_UPDATED_TIME,
    )
} | {"createdtimeutc": FieldRoot.CREATED_TIME}
_DEVICE_FIELDS_TEXT: Final = (
    "deviceId, status, connectionState, lastActivityTime, etag, version, tags..., "
    "properties.desired... or properties.reported..."
)
_JOB_FIELDS_TEXT: Final = (
    "deviceId, jobId, jobType, status, startTimeUtc, endTimeUtc, createdDateTimeUtc or lastUpdatedDateTimeUtc"
)
_SECTIONS: Final = {"desired": FieldRoot.DESIRED, "reported": FieldRoot.REPORTED}

_DECIMAL: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX: Final = re.compile(r"0[xX][0-9a-fA-F]+")
_HEX4: Final = re.compile(r"[0-9a-fA-F]{4}")
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_SIMPLE_ESCAPES: Final = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


@dataclass(frozen=True, slots=True)
class _Segment:
    text: str
    kind: str  # NAME, ESCAPED or DOLLAR_NAME
    position: int


class _Builder:
    """Turns lark's parse tree into the AST; ``source`` decides which fields exist."""

    def __init__(self, text: str, source: Source) -> None:
        self.text = text
        self.source = source
        self.context = "outside SELECT"

    def error(self, offset: int, detail: str) -> QuerySyntaxError:
        return query_error(self.text, offset, detail)

    # -- query ---------------------------------------------------------------------------

    def query(self, tree: Tree[Token]) -> Query:
        top: int | None = None
        select: Star | tuple[Projection, ...] = Star()
        where: Expr | None = None
        group_by: tuple[Expr, ...] = ()
        for child in tree.children:
            if not isinstance(child, Tree):
                continue
            if child.data == "top":
                top = self.top(_token(child.children[1]))
            elif child.data == "select_list":
                select = self.select(child)
            elif child.data == "where":
                self.context = "in WHERE"
                where = self.expr(child.children[1])
            elif child.data == "group_by":
                self.context = "in GROUP BY"
                group_by = tuple(self.expr(node) for node in child.children[2:] if isinstance(node, Tree))
        return Query(source=self.source, select=select, where=where, group_by=group_by, top=top)

    def top(self, token: Token) -> int:
        value = self.number(token)
        if isinstance(value, float) or value < 1:
            raise self.error(_pos(token), f"found TOP {show(str(token))}, expected a positive integer")
        return value

    def select(self, tree: Tree[Token]) -> Star | tuple[Projection, ...]:
        items = [child for child in tree.children if isinstance(child, Tree)]
        stars = [item for item in items if item.data == "star"]
        if stars:
            if len(items) > 1:
                raise self.error(
                    _first_pos(stars[0]),
                    "found * next to other projections, expected either SELECT * or a list of projections",
                )
            return Star()
        return tuple(self.projection(item) for item in items)

    def projection(self, tree: Tree[Token]) -> Projection:
        self.context = "inside an expression"
        node = tree.children[0]
        expr: Expr | AggregateCall
        if isinstance(node, Tree) and node.data == "call" and _aggregate(_token(node.children[0])) is not None:
            expr = self.aggregate(node)
        else:
            expr = self.expr(node)
        alias: str | None = None
        if len(tree.children) == 3:
            alias_tree = tree.children[2]
            assert isinstance(alias_tree, Tree)
            alias = self.name(_token(alias_tree.children[0]))
        return Projection(expr=expr, alias=alias)

    def aggregate(self, tree: Tree[Token]) -> AggregateCall:
        name = _token(tree.children[0])
        function = _aggregate(name)
        assert function is not None
        self.context = "inside another aggregate"
        args = self.args(tree)
        if len(args) > 1 or (function is not AggregateFunction.COUNT and not args):
            wanted = "none: COUNT()" if function is AggregateFunction.COUNT else "1"
            raise self.error(_pos(name), f"found {len(args)} arguments to {function.value}, expected {wanted}")
        return AggregateCall(function=function, arg=args[0] if args else None, position=_pos(name))

    def args(self, call: Tree[Token]) -> list[Expr]:
        return [self.expr(node) for node in call.children[2:-1] if isinstance(node, Tree)]

    # -- expressions ---------------------------------------------------------------------

    def expr(self, node: Tree[Token] | Token) -> Expr:
        if isinstance(node, Token):  # the grammar wraps every leaf; defensive
            raise self.error(_pos(node), f"found {show(str(node))}, expected an expression")
        kind = node.data
        children = node.children
        if kind in ("or_expr", "and_expr"):
            operands = [self.expr(child) for child in children[0::2]]
            operators = [_token(child) for child in children[1::2]]
            return self.balanced(operands, operators)
        if kind in ("sum", "product"):
            result = self.expr(children[0])
            for op, operand in zip(children[1::2], children[2::2], strict=True):
                token = _token(op)
                result = BinaryOp(_BINARY[token.type], result, self.expr(operand), position=_pos(token))
            return result
        if kind == "compare":
            token = _token(children[1])
            return BinaryOp(_BINARY[token.type], self.expr(children[0]), self.expr(children[2]), position=_pos(token))
        if kind == "in_list":
            token = _token(children[1])
            array = children[2]
            assert isinstance(array, Tree)
            items = tuple(self.constant(item) for item in array.children if isinstance(item, Tree))
            return InList(self.expr(children[0]), items, negated=token.type == "NIN", position=_pos(token))
        if kind == "not_":
            token = _token(children[0])
            return UnaryOp(UnaryOperator.NOT, self.expr(children[1]), position=_pos(token))
        if kind == "neg":
            token = _token(children[0])
            operand = children[1]
            if isinstance(operand, Tree) and operand.data == "number":
                return Literal(self.number(_token(operand.children[0]), sign=token), position=_pos(token))
            return UnaryOp(UnaryOperator.NEG, self.expr(operand), position=_pos(token))
        if kind == "parens":
            return self.expr(children[1])
        if kind in ("string", "number", "true", "false", "null"):
            return self.constant(node)
        if kind == "field":
            return self.field(node)
        if kind == "call":
            return self.call(node)
        raise self.error(_first_pos(node), f"found {kind}, expected an expression")  # unreachable with this grammar

    def balanced(self, operands: Sequence[Expr], operators: Sequence[Token]) -> Expr:
        if len(operands) == 1:
            return operands[0]
        split = chain_split(len(operands))
        token = operators[split - 1]
        return BinaryOp(
            _BINARY[token.type],
            self.balanced(operands[:split], operators[: split - 1]),
            self.balanced(operands[split:], operators[split:]),
            position=_pos(token),
        )

    def constant(self, tree: Tree[Token]) -> Literal:
        tokens = [_token(child) for child in tree.children]
        first = tokens[0]
        position = _pos(first)
        if first.type == "MINUS":
            return Literal(self.number(tokens[1], sign=first), position=position)
        if first.type == "NUMBER":
            return Literal(self.number(first), position=position)
        if first.type == "STRING":
            return Literal(self.string(first), position=position)
        return Literal({"TRUE": True, "FALSE": False}.get(first.type), position=position)

    def number(self, token: Token, *, sign: Token | None = None) -> int | float:
        """A NUMBER token's value; ``sign`` is the minus written before it, if any."""
        written = str(token)
        value: int | float
        if _HEX.fullmatch(written):
            value = int(written, 16)
        elif _DECIMAL.fullmatch(written):
            # A 64-bit integer has at most 19 digits; longer ones are refused before int(), which
            # would itself refuse more than 4300 digits with a ValueError.
            digits = written.lstrip("0") or "0"
            value = float(written) if not written.isdigit() else 2**64 if len(digits) > 40 else int(digits)
        elif written[:2].lower() == "0x":
            raise self.syntax(
                _pos(token),
                f"found the malformed hex number {show(written)}, expected 0x followed by hex digits (0x1F)",
            )
        else:
            raise self.syntax(
                _pos(token),
                f"found the malformed number {show(written)}, "
                "expected digits (12, 1.5, .5, 1e3) or a hex number (0x1F)",
            )
        start = _pos(token)
        if sign is not None:
            value, written, start = -value, f"-{written}", _pos(sign)
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise self.syntax(
                start, f"found the integer {show(written)}, expected an integer between {_INT_MIN} and {_INT_MAX}"
            )
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            raise self.syntax(
                start,
                f"found the number {show(written)}, expected a number within the 64-bit floating-point range",
            )
        return value

    def syntax(self, offset: int, detail: str) -> QuerySyntaxError:
        return query_error(self.text, offset, detail, kind="Syntax error")

    def string(self, token: Token) -> str:
        written = str(token)
        body = written[1:-1]
        base = _pos(token) + 1
        out: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch != "\\":
                self.storable(ch, base + i)
                out.append(ch)
                i += 1
                continue
            escape = body[i + 1]  # the lexer guarantees a character after a backslash
            if escape in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[escape])
                i += 2
                continue
            if escape != "u":
                raise self.syntax(
                    base + i,
                    f"found the escape {show(body[i : i + 2])}, expected one of "
                    "\\' \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX",
                )
            code, i = self.unicode_escape(body, i, base), i + 6
            if (
                0xD800 <= code < 0xDC00
                and body[i : i + 2] == "\\u"
                and _HEX4.fullmatch(body[i + 2 : i + 6])
                and 0xDC00 <= int(body[i + 2 : i + 6], 16) < 0xE000
            ):
                code = 0x10000 + ((code - 0xD800) << 10) + (int(body[i + 2 : i + 6], 16) - 0xDC00)
                i += 6
            self.storable(chr(code), base + i - 6)
            out.append(chr(code))
        return "".join(out)

    def unicode_escape(self, body: str, i: int, base: int) -> int:
        digits = body[i + 2 : i + 6]
        if not _HEX4.fullmatch(digits):
            raise self.syntax(base + i, f"found the escape {show(body[i : i + 6])}, expected \\u and four hex digits")
        return int(digits, 16)

    def storable(self, ch: str, offset: int) -> None:
        """Refuse what no back end can store: NUL (PostgreSQL text) and lone surrogates (UTF-8)."""
        if ch == "\x00":
            raise self.syntax(offset, "found the NUL character, expected text without it")
        if 0xD800 <= ord(ch) < 0xE000:
            raise self.syntax(
                offset,
                f"found the lone surrogate \\u{ord(ch):04x}, expected a complete character "
                "(a \\uD800-\\uDBFF escape followed by a \\uDC00-\\uDFFF one)",
            )

    def name(self, token: Token) -> str:
        """A NAME as written, or the text inside ``[[ ]]``."""
        if token.type != "ESCAPED":
            return str(token)
        inner = str(token)[2:-2]
        if not inner:
            raise self.syntax(_pos(token), "found [[]], expected a name inside [[ ]]")
        for index, ch in enumerate(inner):
            self.storable(ch, _pos(token) + 2 + index)
        return inner

    # -- fields --------------------------------------------------------------------------

    def field(self, tree: Tree[Token]) -> Field:
        # Keywords after a dot are plain names (tags.group); the grammar hands them over as segments.
        tokens = [child if isinstance(child, Token) else _token(child.children[0]) for child in tree.children]
        segments = [
            _Segment(self.name(token), token.type if token.type in ("ESCAPED", "DOLLAR_NAME") else "NAME", _pos(token))
            for token in tokens
            if token.type != "DOT"
        ]
        start = segments[0].position
        end = tree.meta.end_pos if not tree.meta.empty else len(self.text)
        written = self.text[start:end]
        prefix = segments[0].kind == "NAME" and segments[0].text.lower() == "devices" and len(segments) > 1
        if self.source is Source.JOBS:
            if prefix and segments[1].kind == "NAME" and segments[1].text.lower() == "jobs" and len(segments) > 2:
                segments = segments[2:]
            elif prefix:
                raise self.error(
                    start,
                    f"found {show(written)}, expected a devices.jobs field, bare or as "
                    f"devices.jobs.<field>: {_JOB_FIELDS_TEXT}",
                )
            return self.job_field(segments, start, written)
        if prefix:
            second = segments[1].text.lower()
            if second == "jobs":
                raise self.error(
                    start,
                    f"found the devices.jobs field {show(written)} in a query FROM devices, "
                    "expected a device field (query FROM devices.jobs for job fields)",
                )
            if second == "modules":
                raise self.error(start, "found devices.modules, expected a device field (fleethub has no module twins)")
            segments = segments[1:]
        return self.device_field(segments, start, written)

    def device_field(self, segments: list[_Segment], start: int, written: str) -> Field:
        first = segments[0]
        lower = first.text.lower() if first.kind != "DOLLAR_NAME" else first.text
        if lower in _DEVICE_IDENTITY:
            root = _DEVICE_IDENTITY[lower]
            if len(segments) > 1:
                raise self.error(
                    segments[1].position,
                    f"found {show(written)}, expected {root.value} alone ({root.value} has no fields below it)",
                )
            return Field(root, position=start)
        if lower == "tags":
            return Field(FieldRoot.TAGS, self.path(FieldRoot.TAGS, segments[1:]), position=start)
        if lower == "properties":
            section = _SECTIONS.get(segments[1].text.lower()) if len(segments) > 1 else None
            if section is None:
                offset = segments[1].position if len(segments) > 1 else start
                raise self.error(offset, f"found {show(written)}, expected properties.desired or properties.reported")
            return Field(section, self.path(section, segments[2:]), position=start)
        if lower in _JOB_FIELDS:
            raise self.error(
                start,
                f"found the devices.jobs field {show(written)} in a query FROM devices, "
                "expected a device field (query FROM devices.jobs for job fields)",
            )
        if lower == "undefined":
            raise self.error(
                start,
                "found undefined, expected a value (to test for a missing field, "
                "use IS_DEFINED(x) or NOT IS_DEFINED(x))",
            )
        close = difflib.get_close_matches(lower, list(_DEVICE_IDENTITY), n=1, cutoff=0.75)
        hint = _DEVICE_IDENTITY[close[0]].value if close else f"tags.{written}"
        raise self.error(
            start, f"found the unknown field {show(written)}, expected {_DEVICE_FIELDS_TEXT}; did you mean {hint}?"
        )

    def job_field(self, segments: list[_Segment], start: int, written: str) -> Field:
        first = segments[0]
        lower = first.text.lower()
        if lower in _JOB_FIELDS and first.kind != "DOLLAR_NAME":
            if len(segments) > 1:
                raise self.error(
                    segments[1].position,
                    f"found {show(written)}, expected a devices.jobs field "
                    "alone (job fields have no fields below them)",
                )
            return Field(_JOB_FIELDS[lower], position=start)
        if lower in ("tags", "properties") or lower in _DEVICE_IDENTITY:
            raise self.error(
                start,
                f"found the twin field {show(written)} in a query FROM devices.jobs, expected "
                f"{_JOB_FIELDS_TEXT} (IoT Hub allows no twin fields on devices.jobs)",
            )
        close = difflib.get_close_matches(lower, list(_JOB_FIELDS), n=1, cutoff=0.75)
        hint = f"; did you mean {_JOB_FIELDS[close[0]].value}?" if close else ""
        raise self.error(start, f"found the unknown field {show(written)}, expected {_JOB_FIELDS_TEXT}{hint}")

    def path(self, root: FieldRoot, segments: list[_Segment]) -> tuple[str, ...]:
        for index, segment in enumerate(segments):
            if segment.kind != "DOLLAR_NAME":
                continue
            if (
                segment.text == "$version"
                and root in (FieldRoot.DESIRED, FieldRoot.REPORTED)
                and index == 0
                and len(segments) == 1
            ):
                continue
            raise self.error(
                segment.position,
                f"found {show(segment.text)}, expected a name ($version is the only "
                "$ name, directly below properties.desired or properties.reported)",
            )
        return tuple(segment.text for segment in segments)

    # -- functions -----------------------------------------------------------------------

    def call(self, tree: Tree[Token]) -> Call:
        name = _token(tree.children[0])
        aggregate = _aggregate(name)
        if aggregate is not None:
            raise self.error(
                _pos(name),
                f"found the aggregate {aggregate.value}() {self.context}, expected "
                "aggregates only as whole projections (SELECT COUNT() AS n FROM devices)",
            )
        try:
            function = FunctionName(str(name).upper())
        except ValueError:
            known = [f.value for f in FunctionName]
            close = difflib.get_close_matches(str(name).upper(), known, n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise self.error(
                _pos(name),
                f"found the unknown function {show(str(name))}, expected one of "
                f"{', '.join(f.value for f in FunctionName)}{hint}",
            ) from None
        return Call(function, tuple(self.args(tree)), position=_pos(name))


def _token(node: Tree[Token] | Token) -> Token:
    assert isinstance(node, Token), node
    return node


def _aggregate(name: Token) -> AggregateFunction | None:
    try:
        return AggregateFunction(str(name).upper())
    except ValueError:
        return None
