"""Finding and redacting personal data in text: e-mail addresses, phone numbers, IP addresses and payment card
numbers, each matched by a pattern and then validated (Luhn for cards, `ipaddress` for IPv6, digit counts and
dates for phones), so that order numbers, times and IDs are left alone. The `pii` rule of `clean` uses it."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from fmstack.core.errors import InvalidRequest

PII_KINDS = ("email", "phone", "ip", "credit_card")
# E-mails first, as they contain digits; cards and IPs before phones, as all are groups of digits.
_PII_ORDER = ("email", "credit_card", "ip", "phone")
DEFAULT_REPLACEMENT = "<{KIND}>"

_DIGIT = re.compile(r"\d")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
_CARD = re.compile(r"(?<![\w+-])(?:\d[ -]?){12,18}\d(?!\w|[ -]\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(
    r"""
    (?<![\w+\-./])                                                          # not inside a word, number or date
    (?:
        (?P<intl>\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{1,5}){1,5})    # +44 20 7946 0958
      | (?P<nanp>(?:1[ .\-])?(?:\([2-9]\d\d\)[ .\-]?|[2-9]\d\d[ .\-])\d{3}[ .\-]\d{4})   # (555) 123-4567
      | (?P<national>\(?0\d{1,4}\)?(?:[ /.\-]\d{2,8}){1,4})                  # 030 1234567, 06 12 34 56 78
    )
    (?!\w|[ .\-/]?\d)                                                       # not followed by more digits
    """,
    re.VERBOSE,
)
_PHONE_DIGITS = {"intl": (8, 15), "nanp": (10, 11), "national": (9, 12)}
_DATE = re.compile(r"\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d|(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}")


def redact_pii(
    text: str, kinds: Iterable[str] = PII_KINDS, replacement: str | Mapping[str, str] | None = None
) -> tuple[str, Counter[str]]:
    """Replace e-mail addresses, phone numbers, IP addresses and card numbers, and count each kind replaced.

    `replacement` is a template for every kind ("{KIND}" becomes EMAIL, "{kind}" becomes email; the default is
    "<{KIND}>") or a mapping from kind to its replacement. Kinds run in a fixed order whatever the order of
    `kinds` (e-mails first, as they contain digits; cards before phones, as both are digit groups), so the output
    depends only on the set of kinds.
    """
    wanted = set(kinds)
    if bad := sorted(wanted - set(PII_KINDS)):
        raise InvalidRequest(f"Unknown pii kind '{bad[0]}'; the kinds are {', '.join(PII_KINDS)}.")
    found: Counter[str] = Counter()
    has_digits = _DIGIT.search(text) is not None
    for kind in _PII_ORDER:
        if kind not in wanted or (kind != "email" and not has_digits) or (kind == "email" and "@" not in text):
            continue
        text, n = _REDACTORS[kind](text, _replacement_for(kind, replacement))
        if n:
            found[kind] = n
    return text, found


def _replacement_for(kind: str, replacement: str | Mapping[str, str] | None) -> str:
    if isinstance(replacement, Mapping):
        template = replacement.get(kind, DEFAULT_REPLACEMENT)
    else:
        template = DEFAULT_REPLACEMENT if replacement is None else replacement
    return template.replace("{KIND}", kind.upper()).replace("{kind}", kind)


def _redact_email(text: str, rep: str) -> tuple[str, int]:
    return _EMAIL.subn(lambda m: rep, text)


def _redact_card(text: str, rep: str) -> tuple[str, int]:
    """Only digit runs that are plausibly cards (13-19 digits, a card network's first digit) and pass the Luhn
    check: order numbers and other long IDs pass Luhn only by chance, one time in ten."""

    def is_card(number: str) -> bool:
        digits = number.replace(" ", "").replace("-", "")
        return 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits)

    return _sub_valid(_CARD, is_card, text, rep)


def _luhn(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _redact_ip(text: str, rep: str) -> tuple[str, int]:
    """IPv4 with valid octets; IPv6 as validated by `ipaddress` (so times like 12:30:45 are left alone), except
    bare forms like '::' or '::1' with fewer than two groups, which are loopback or code, not someone's address."""
    text, n4 = _IPV4.subn(lambda m: rep, text)

    def is_ipv6(candidate: str) -> bool:
        if sum(1 for group in candidate.split(":") if group) < 2:
            return False
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            return False
        return True

    text, n6 = _sub_valid(_IPV6, is_ipv6, text, rep) if ":" in text else (text, 0)
    return text, n4 + n6


def _redact_phone(text: str, rep: str) -> tuple[str, int]:
    """Phone numbers written with a '+country' prefix, or with separators in a North American or European
    national format. A run of digits without separators or '+' is left alone (it is more often an ID than a
    phone), as are dates and digit counts that no phone number has."""

    count = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal count
        low, high = _PHONE_DIGITS[m.lastgroup or "intl"]
        number = m.group()
        if not low <= sum(ch.isdigit() for ch in number) <= high or _DATE.search(number):
            return number
        count += 1
        return rep

    return _PHONE.sub(sub, text), count


def _sub_valid(pattern: re.Pattern[str], valid: Callable[[str], bool], text: str, rep: str) -> tuple[str, int]:
    """Replace the matches of `pattern` that `valid` accepts, and count them."""
    count = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal count
        if not valid(m.group()):
            return m.group()
        count += 1
        return rep

    return pattern.sub(sub, text), count


_REDACTORS = {"email": _redact_email, "credit_card": _redact_card, "ip": _redact_ip, "phone": _redact_phone}
