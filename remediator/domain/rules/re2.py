"""Alertmanager's regexes (Go ``regexp``, RE2 syntax) translated to Python's ``re``.

A matcher's regex must mean here what it means in Alertmanager, and be refused here
when Alertmanager refuses it. Python's ``re`` and Go's ``regexp`` disagree both ways:
Python accepts lookaround, backreferences, atomic groups, possessive repeats, ``\\Z``,
``\\u``, ``(?x)``, comments; Go accepts ``\\z``, ``\\x{...}``, ``\\Q...\\E``, POSIX
classes (``[[:alpha:]]``), ``(?U)``, flags in mid-pattern, ``{,n}`` as a literal. And
the same text can mean different things: ``\\d``, ``\\s``, ``\\w`` and ``\\b`` are ASCII
in Go and Unicode in Python, ``$`` is the end of text in Go but also matches before a
final newline in Python, ``\\12`` is an octal escape in Go and a backreference in Python.

So the pattern is parsed with Go's grammar (``regexp/syntax``, Perl flags, as
``regexp.Compile`` uses) and re-emitted as an equivalent Python pattern, every literal
escaped, every flag applied per atom. Unicode general categories (``\\pL``,
``\\p{Lu}``) come from Python's ``unicodedata``; Unicode scripts (``\\p{Greek}``) are the
one thing refused that Go accepts: the standard library has no script tables.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field

MAX_REPEAT = 1000  # Go's regexp/syntax refuses larger repeat counts

_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F))
_PERL_CLASSES: dict[str, tuple[tuple[int, int], ...]] = {
    "d": ((0x30, 0x39),),
    "s": ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)),  # no \v, unlike Python's \s
    "w": _WORD,
}
_POSIX_CLASSES: dict[str, tuple[tuple[int, int], ...]] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": _WORD,
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_CONTROL_ESCAPES = {"a": 0x07, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"
_WORD_CLASS = "[0-9A-Za-z_]"
_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?!{_WORD_CLASS})|(?<!{_WORD_CLASS})(?={_WORD_CLASS}))"
_NOT_BOUNDARY = f"(?:(?<={_WORD_CLASS})(?={_WORD_CLASS})|(?<!{_WORD_CLASS})(?!{_WORD_CLASS}))"


@functools.cache
def _categories() -> dict[str, tuple[tuple[int, int], ...]]:
    """Code point ranges of each general category (Lu) and class of them (L), as Go's
    unicode tables: unassigned code points (Cn) belong to none."""
    spans: dict[str, list[list[int]]] = {}
    for code in range(0x110000):
        category = unicodedata.category(chr(code))
        if category == "Cn":
            continue
        for name in (category, category[0]):
            found = spans.setdefault(name, [])
            if found and found[-1][1] == code - 1:
                found[-1][1] = code
            else:
                found.append([code, code])
    return {name: tuple((lo, hi) for lo, hi in found) for name, found in spans.items()}


class Re2Error(ValueError):
    """The pattern is not valid RE2 (as Go's regexp parses it), or uses \\p classes."""


def translate(pattern: str) -> str:
    """The Python pattern that matches what ``pattern`` matches in Go; or Re2Error."""
    return _Parser(pattern).parse()


def _repeat_number(text: str) -> bool:
    """Digits without a leading zero, as Go's parser takes them (else ``{`` is literal)."""
    digits = bool(text) and all(c in "0123456789" for c in text)
    return digits and not (len(text) > 1 and text[0] == "0")


def _char(code: int) -> str:
    """A code point as an escape both inside and outside a Python character class."""
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _ranges(ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> str:
    return "".join(_char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}" for lo, hi in ranges)


@dataclass
class _Class:
    negated: bool = False
    ranges: list[tuple[int, int]] = field(default_factory=list)
    # Complemented sets inside a class ([\D], [[:^alpha:]]); Python has no syntax for
    # them inside [...], so the class becomes an alternation.
    complements: list[tuple[tuple[int, int], ...]] = field(default_factory=list)

    def python(self) -> str:
        if not self.complements:
            return f"[{'^' if self.negated else ''}{_ranges(self.ranges)}]"
        options = [f"[{_ranges(self.ranges)}]"] if self.ranges else []
        options += [f"[^{_ranges(ranges)}]" for ranges in self.complements]
        union = "(?:" + "|".join(options) + ")"
        return f"(?!{union})(?s:.)" if self.negated else union


@dataclass
class _Group:
    flags: frozenset[str]  # the flags outside, restored at its ")"
    # The largest product of nested {n,m} counts on any path inside (Go refuses a
    # repetition whose product with those inside exceeds MAX_REPEAT).
    weight: int = 1


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        self.out: list[str] = []
        self.flags: frozenset[str] = frozenset()  # of i, m, s, U as Go's Perl mode
        self.groups: list[_Group] = []
        self.top = _Group(frozenset())  # the expression outside every group
        self.last = "start"  # start (nothing to repeat), atom, repeat
        self.last_weight = 1  # of the item a repetition would apply to

    def fail(self, message: str) -> Re2Error:
        return Re2Error(f"{message} (RE2 syntax, as Alertmanager compiles it)")

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.src[index] if index < len(self.src) else ""

    def parse(self) -> str:
        while self.pos < len(self.src):
            self.step()
        if self.groups:
            raise self.fail("missing closing )")
        return "".join(self.out)

    def step(self) -> None:
        char = self.peek()
        if char == "(":
            self.open_group()
        elif char == ")":
            self.close_group()
        elif char == "|":
            self.pos += 1
            self.out.append("|")
            self.last = "start"
        elif char in "*+?":
            self.pos += 1
            self.repeat(char)
        elif char == "{" and self.repeat_count() is not None:
            pass
        elif char == "[":
            self.pos += 1
            self.atom(self.char_class().python())
        elif char == "^":
            self.pos += 1
            self.atom("(?m:^)" if "m" in self.flags else "(?:\\A)", fold=False)
        elif char == "$":
            self.pos += 1
            self.atom("(?m:$)" if "m" in self.flags else "(?:\\Z)", fold=False)
        elif char == ".":
            self.pos += 1
            self.atom("(?s:.)" if "s" in self.flags else "[^\\n]", fold=False)
        elif char == "\\":
            self.escape()
        else:
            self.pos += 1
            self.atom(_char(ord(char)))

    def atom(self, text: str, *, fold: bool = True) -> None:
        self.out.append(f"(?i:{text})" if fold and "i" in self.flags else text)
        self.item_done(1)

    def item_done(self, weight: int) -> None:
        self.last = "atom"
        self.last_weight = weight
        frame = self.groups[-1] if self.groups else self.top
        frame.weight = max(frame.weight, weight)

    # -- groups and flags ---------------------------------------------------------

    def open_group(self) -> None:
        if self.peek(1) != "?":
            self.pos += 1
            self.push("(")
            return
        rest = self.src[self.pos + 2 :]
        if rest.startswith("P<"):
            end = rest.find(">")
            name = rest[2:end] if end > 2 else ""
            if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
                raise self.fail(f"invalid named capture {self.src[self.pos :]!r}")
            self.pos += 2 + end + 1
            # Names only label captures, which matching ignores; Go allows names
            # Python refuses (1, a name used twice).
            self.push("(")
            return
        self.pos += 2
        self.perl_flags()

    def perl_flags(self) -> None:
        flags = set(self.flags)
        negate = False
        saw_flag = False
        start = self.pos - 2
        while self.pos < len(self.src):
            char = self.peek()
            self.pos += 1
            if char in "imsU":
                (flags.discard if negate else flags.add)(char)
                saw_flag = True
            elif char == "-" and not negate:
                negate, saw_flag = True, False
            elif char in ":)" and (saw_flag or not negate):
                if char == ":":
                    self.push("(?:")
                self.flags = frozenset(flags)
                return
            else:
                break
        raise self.fail(
            f"unsupported group {self.src[start : self.pos]!r}: RE2 has no lookaround, "
            "atomic groups, comments or conditionals; flags are i, m, s, U"
        )

    def push(self, opening: str) -> None:
        self.groups.append(_Group(self.flags))
        self.out.append(opening)
        self.last = "start"

    def close_group(self) -> None:
        if not self.groups:
            raise self.fail("unexpected )")
        self.pos += 1
        group = self.groups.pop()
        self.flags = group.flags
        self.out.append(")")
        self.item_done(group.weight)

    # -- repetition ---------------------------------------------------------------

    def repeat_count(self) -> str | None:
        """``{n}``, ``{n,}``, ``{n,m}`` as a repetition; None: ``{`` is a literal."""
        end = self.src.find("}", self.pos)
        if end < 0:
            return None
        low, comma, high = self.src[self.pos + 1 : end].partition(",")
        if not _repeat_number(low) or (high and not _repeat_number(high)):
            return None
        text = self.src[self.pos : end + 1]
        if int(low) > MAX_REPEAT or (high and int(high) > MAX_REPEAT):
            raise self.fail(f"invalid repeat count {text!r} (at most {MAX_REPEAT})")
        if high and int(high) < int(low):
            raise self.fail(f"invalid repeat count {text!r}")
        self.pos = end + 1
        most = int(high) if high else int(low) if not comma else -1
        self.repeat(f"{{{int(low)}{comma}{int(high) if high else ''}}}", (int(low), most))
        return text

    def repeat(self, operator: str, counts: tuple[int, int] | None = None) -> None:
        if self.last == "start":
            raise self.fail(f"missing argument to repetition operator {operator!r}")
        if self.last == "repeat":
            raise self.fail(f"invalid nested repetition operator {operator!r}")
        if counts is not None:
            self.count_nested(operator, *counts)
        lazy = self.peek() == "?"
        if lazy:
            self.pos += 1
        if "U" in self.flags:  # (?U) swaps greedy and lazy
            lazy = not lazy
        self.out.append(operator + ("?" if lazy else ""))
        self.last = "repeat"

    def count_nested(self, operator: str, least: int, most: int) -> None:
        """Go's repeatIsValid: nested counts multiply to at most MAX_REPEAT."""
        if most == 0:
            weight = 1  # repeats nothing: what is inside never counts
        else:
            count = most if most > 0 else least
            weight = count * self.last_weight if count > 0 else self.last_weight
            if (least >= 2 or most >= 2) and weight > MAX_REPEAT:
                raise self.fail(
                    f"invalid repeat count {operator!r}: nested repetitions multiply to "
                    f"more than {MAX_REPEAT}"
                )
        frame = self.groups[-1] if self.groups else self.top
        frame.weight = max(frame.weight, weight)
        self.last_weight = weight

    # -- escapes ------------------------------------------------------------------

    def escape(self) -> None:
        letter = self.peek(1)
        if letter == "Q":
            self.pos += 2
            end = self.src.find("\\E", self.pos)
            literal = self.src[self.pos :] if end < 0 else self.src[self.pos : end]
            self.pos = len(self.src) if end < 0 else end + 2
            for char in literal:
                self.atom(_char(ord(char)))
            return
        simple = {"A": "(?:\\A)", "z": "(?:\\Z)", "b": _BOUNDARY, "B": _NOT_BOUNDARY}
        if letter in simple:
            self.pos += 2
            self.atom(simple[letter], fold=False)
            return
        perl = self.perl_class()
        if perl is not None:
            self.atom(perl.python())
            return
        self.atom(_char(self.escaped_char()))

    def perl_class(self) -> _Class | None:
        letter = self.peek(1)
        if letter in ("p", "P"):
            return self.unicode_class()
        if letter.lower() not in _PERL_CLASSES:
            return None
        self.pos += 2
        ranges = _PERL_CLASSES[letter.lower()]
        return _Class(ranges=list(ranges)) if letter.islower() else _Class(complements=[ranges])

    def unicode_class(self) -> _Class:
        """``\\pL``, ``\\p{Lu}``, ``\\p{^L}``, ``\\PL``: a general category (or Any)."""
        negated = self.peek(1) == "P"
        self.pos += 2
        if self.peek() == "{":
            end = self.src.find("}", self.pos)
            if end < 0:
                raise self.fail("invalid character class range: \\p{ without }")
            name = self.src[self.pos + 1 : end]
            self.pos = end + 1
        else:
            name = self.peek()
            self.pos += 1
        if name.startswith("^"):
            negated, name = not negated, name[1:]
        ranges = ((0, 0x10FFFF),) if name == "Any" else _categories().get(name)
        if ranges is None:
            raise self.fail(
                f"\\p{{{name}}}: remediator knows Unicode general categories (L, Lu, Nd...) "
                "and Any, not scripts"
            )
        return _Class(complements=[ranges]) if negated else _Class(ranges=list(ranges))

    def escaped_char(self) -> int:
        """The code point of an escape at self.pos (``\\n``, ``\\x41``, ``\\101``, ``\\.``)."""
        self.pos += 1
        letter = self.peek()
        if not letter:
            raise self.fail("trailing backslash at end of expression")
        self.pos += 1
        next_is_octal = bool(self.peek()) and self.peek() in _OCTAL
        if (letter in "1234567" and not next_is_octal) or letter in "89":
            raise self.fail(f"invalid escape \\{letter}: RE2 has no backreferences")
        if letter in _OCTAL:
            digits = letter
            while len(digits) < 3 and self.peek() and self.peek() in _OCTAL:
                digits += self.peek()
                self.pos += 1
            return int(digits, 8)
        if letter == "x":
            return self.hex_escape()
        if letter in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[letter]
        if letter.isascii() and not letter.isalnum():
            return ord(letter)
        raise self.fail(f"invalid escape sequence \\{letter}")

    def hex_escape(self) -> int:
        if self.peek() == "{":
            end = self.src.find("}", self.pos)
            digits = self.src[self.pos + 1 : end] if end > 0 else ""
            if not digits or any(c not in _HEX for c in digits) or int(digits, 16) > 0x10FFFF:
                raise self.fail("invalid escape \\x{...}")
            self.pos = end + 1
            return int(digits, 16)
        digits = self.src[self.pos : self.pos + 2]
        if len(digits) < 2 or any(c not in _HEX for c in digits):
            raise self.fail("invalid escape \\x: two hex digits or \\x{...}")
        self.pos += 2
        return int(digits, 16)

    # -- character classes --------------------------------------------------------

    def char_class(self) -> _Class:
        result = _Class()
        if self.peek() == "^":
            result.negated = True
            self.pos += 1
        first = True
        while first or self.peek() != "]":
            if not self.peek():
                raise self.fail("missing closing ]")
            first = False
            if self.posix_class(result):
                continue
            if self.peek() == "\\":
                perl = self.perl_class()
                if perl is not None:
                    result.ranges += perl.ranges
                    result.complements += perl.complements
                    continue
            low = self.class_char()
            high = low
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                high = self.class_char()
                if high < low:
                    raise self.fail("invalid character class range")
            result.ranges.append((low, high))
        self.pos += 1
        return result

    def posix_class(self, result: _Class) -> bool:
        if not self.src.startswith("[:", self.pos):
            return False
        end = self.src.find(":]", self.pos + 2)
        if end < 0:
            return False
        name = self.src[self.pos + 2 : end]
        negated = name.startswith("^")
        ranges = _POSIX_CLASSES.get(name.removeprefix("^"))
        if ranges is None:
            raise self.fail(f"invalid character class range [:{name}:]")
        self.pos = end + 2
        if negated:
            result.complements.append(ranges)
        else:
            result.ranges += ranges
        return True

    def class_char(self) -> int:
        if self.peek() == "\\":
            return self.escaped_char()
        char = self.peek()
        if not char:
            raise self.fail("missing closing ]")
        self.pos += 1
        return ord(char)
