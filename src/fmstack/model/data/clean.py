"""Cleaning text documents: repair, strip, filter by quality and language, redact PII.

A `Cleaner` is built from a `CleanConfig` (the `clean:` section of a pipeline YAML) and called on one `Document`
at a time; it returns the cleaned document, or None when a rule drops it. Every rule can be turned off (a bool
set to false, a threshold set to null). The thresholds default to the Gopher rules (Rae et al. 2021) as
datatrove implements them. Same input, same output: nothing here is random.

Rules, in the order they run. The name is what `Cleaner.stats` counts under and what the report lists.

Edits (kept documents; counted once per document in `stats.changed` when they changed the text):

    normalize         ftfy.fix_text (mojibake such as "cafÃ©" -> "café", HTML entities in plain text) and NFC
    html              HTML -> text with selectolax: scripts, styles, navigation and footers dropped
    control           invisible control and format characters removed (NUL, zero-width space, BOM, bidi marks)
    boilerplate       short lines that are boilerplate removed: cookie notices, "all rights reserved", ...
    whitespace        runs of spaces collapsed, lines trimmed, at most one blank line in a row

Filters (dropped documents; only the first rule that drops a document is counted, in `stats.dropped`):

    empty             nothing left after the edits (always on)
    min_words         fewer than `min_words` words
    max_words         more than `max_words` words
    duplicate_lines   more than `max_duplicate_line_fraction` of the lines repeat an earlier line
    top_ngram         the most frequent word 2-gram covers more than `max_top_ngram_fraction` of the characters
    mean_word_length  mean word length outside [`min_mean_word_length`, `max_mean_word_length`]
    symbol_ratio      '#' or ellipses per word above `max_symbol_word_ratio`
    alpha_words       fewer than `min_alpha_word_fraction` of the words contain a letter
    bullet_lines      more than `max_bullet_line_fraction` of the lines start with a bullet
    ellipsis_lines    more than `max_ellipsis_line_fraction` of the lines end with an ellipsis
    language          the language is not one of `languages`, or its score is below `min_language_score`
    stopwords         fewer than `min_stopwords` English stop words (only for English or unknown language)

PII redaction (kept documents, last, so dropped documents cost nothing; see `fmstack.model.data.pii`):
`pii_email`, `pii_phone`, `pii_ip`, `pii_credit_card`, each counted once per document in `stats.changed`.

Language identification (py3langid) runs when `detect_language` is on or `languages` is set; it records
`meta["language"]` and `meta["language_score"]` on kept documents. Its model is loaded once per process, on first
use, so a `Cleaner` pickles small and cheap into multiprocessing workers and Ray tasks.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any

import ftfy
from selectolax.lexbor import LexborHTMLParser

from fmstack.core.errors import InvalidRequest
from fmstack.model.data.documents import Document, StepStats
from fmstack.model.data.pii import DEFAULT_REPLACEMENT, PII_KINDS, redact_pii

__all__ = [
    "BOILERPLATE_PATTERNS",
    "DROP_RULES",
    "EDIT_RULES",
    "PII_KINDS",
    "CleanConfig",
    "Cleaner",
    "detect_language",
    "html_to_text",
    "redact_pii",
]

EDIT_RULES = ("normalize", "html", "control", "boilerplate", "whitespace")
DROP_RULES = (
    "empty",
    "min_words",
    "max_words",
    "duplicate_lines",
    "top_ngram",
    "mean_word_length",
    "symbol_ratio",
    "alpha_words",
    "bullet_lines",
    "ellipsis_lines",
    "language",
    "stopwords",
)

# Matched (case-insensitively, anywhere) against lines of at most `boilerplate_max_line_words` words: a long
# paragraph that mentions a privacy policy is content, a one-line "Read our privacy policy" is not.
BOILERPLATE_PATTERNS = (
    r"\b(?:we|this (?:web)?site|our (?:web)?site|it) uses? cookies\b",
    r"\b(?:use of|accept(?: all)?|allow(?: all)?|reject(?: all)?|manage) cookies\b",
    r"\bcookie (?:policy|settings|preferences|consent|notice)\b",
    r"\ball rights reserved\b",
    r"(?:©|\(c\)|\bcopyright\b)\s*(?:\d{4}|by\b)",
    r"\b(?:subscribe|sign up|signup|register) (?:to|for) (?:our|the) (?:free )?(?:newsletter|mailing list)\b",
    r"\bclick here\b",
    r"\bshare (?:this|on) (?:article|post|story|page|facebook|twitter|x|linkedin|whatsapp|email)\b",
    r"^\W*(?:read more|continue reading|load more|show more|see more)\b",
    r"\b(?:terms (?:of|and) (?:use|service|conditions)|privacy (?:policy|notice|statement))\b",
    r"\b(?:enable|enabled|disabled|requires?) javascript\b|\bjavascript (?:is )?(?:disabled|required)\b",
    r"^\W*(?:skip to (?:main )?content|back to top|follow us(?: on)?|share this|advertisement)\W*$",
)

_STOPWORDS = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))  # Gopher's list
_PUNCT = string.punctuation + "“”‘’«»„‚…–—·•¡¿"
_BULLETS = ("•", "‣", "◦", "▪", "●", "·", "-", "*", "–")
_ELLIPSES = ("...", "…")
_LANGID_CHARS = 10_000  # the language of a document is clear from its start; keeps huge documents cheap

_FTFY = ftfy.TextFixerConfig(
    # Repair only what is broken, as datatrove's FTFYFormatter does: curly quotes, ligatures and full-width
    # characters are legitimate text, not damage.
    uncurl_quotes=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    normalization="NFC",
    explain=False,
)

_HTML_HINT = re.compile(
    r"<(?:!doctype\s+html|html|head|body|div|p|br|span|a|script|style|table|tr|td|li|ul|ol|h[1-6]|meta|img)\b"
    r"[^<>]*>|</(?:html|body|div|p|span|a|td|li|h[1-6])\s*>",
    re.IGNORECASE,
)
_HTML_DROP = ["script", "style", "noscript", "template", "iframe", "svg", "object", "embed", "head", "nav", "footer"]
_HTML_DROP += ["form", "button", "select"]
_HTML_BLOCKS = (
    "p, div, br, li, h1, h2, h3, h4, h5, h6, tr, table, ul, ol, dl, dd, dt, section, article, header, main, aside, "
    "blockquote, pre, hr, figure, figcaption, address, details, summary, caption"
)

# Invisible characters that split words for dedup and tokenizers without showing on screen: zero-width and bidi
# characters, BOM, soft hyphen and C0/C1 controls. Tab, newline, CR, VT, FF and NEL are
# whitespace and are left for the whitespace rule; ZWJ/ZWNJ are kept, as scripts and emoji need them.
_CONTROL = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ufff9-\ufffb]"
)
_NEWLINES = re.compile("\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_HSPACE = re.compile(r"[^\S\n]+")
_LINE_EDGES = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")

_ALPHA_WORD = re.compile(r"\S*[^\W\d_]\S*")  # a whitespace-separated word with a letter


# ---------------------------------------------------------------------------------------------------- config


@dataclass
class CleanConfig:
    """Which rules run and their thresholds. Booleans turn edits on or off; a null threshold turns its filter off.
    Defaults are Gopher's quality rules, English stop words only for English text, and PII redaction on."""

    normalize: bool = True
    strip_html: bool | str = "auto"  # "auto": only when the text looks like HTML
    strip_control: bool = True
    boilerplate: bool = True
    boilerplate_patterns: list[str] = field(default_factory=list)  # extra regexes, added to BOILERPLATE_PATTERNS
    boilerplate_max_line_words: int | None = 30
    collapse_whitespace: bool = True
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3
    max_mean_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    min_alpha_word_fraction: float | None = 0.8
    max_duplicate_line_fraction: float | None = 0.3
    max_top_ngram_fraction: float | None = 0.2
    max_bullet_line_fraction: float | None = 0.9
    max_ellipsis_line_fraction: float | None = 0.3
    min_stopwords: int | None = 2
    detect_language: bool = True
    languages: list[str] = field(default_factory=list)  # empty: keep every language
    min_language_score: float = 0.65
    pii: bool = True
    pii_kinds: list[str] = field(default_factory=lambda: list(PII_KINDS))
    pii_replacement: str | dict[str, str] = DEFAULT_REPLACEMENT  # "{KIND}" -> EMAIL, "{kind}" -> email

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> CleanConfig:
        """The config of a YAML `clean:` section. Unknown keys and wrong types are refused by name, because a
        misspelt key silently falling back to its default would clean a dataset the user did not ask for."""
        d = dict(d or {})
        defaults = cls()
        known = [f.name for f in fields(cls)]
        for key, value in d.items():
            if key not in known:
                raise InvalidRequest(f"clean: unknown key '{key}'; the keys are {', '.join(known)}.", param=key)
            _check_type(key, value, getattr(defaults, key))
        config = cls(**d)
        config._check_values()
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for the run's manifest."""
        return asdict(self)

    def _check_values(self) -> None:
        """Checks that need the value, not just its type."""
        if isinstance(self.strip_html, str) and self.strip_html != "auto":
            raise InvalidRequest(f"clean: strip_html is {self.strip_html!r}; use true, false or 'auto'.")
        if bad := sorted(set(self.pii_kinds) - set(PII_KINDS)):
            raise InvalidRequest(f"clean: unknown pii kind '{bad[0]}'; the kinds are {', '.join(PII_KINDS)}.")
        if isinstance(self.pii_replacement, dict) and (bad := sorted(set(self.pii_replacement) - set(PII_KINDS))):
            kinds = ", ".join(PII_KINDS)
            raise InvalidRequest(f"clean: pii_replacement has unknown kind '{bad[0]}'; the kinds are {kinds}.")
        for pattern in self.boilerplate_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidRequest(f"clean: boilerplate pattern {pattern!r} is not a valid regex: {exc}.") from None
        if self.languages and (bad := sorted(set(self.languages) - set(_identifier().labels))):
            raise InvalidRequest(
                f"clean: unknown language '{bad[0]}'; use ISO 639-1 codes such as en, de, fr "
                f"(known: {', '.join(sorted(_identifier().labels))})."
            )


def _check_type(key: str, value: Any, default: Any) -> None:
    """Refuse a value whose type does not fit the key, judged by the type of its default."""
    if key == "strip_html":
        ok = isinstance(value, bool | str)
    elif key == "pii_replacement":
        ok = isinstance(value, str) or (isinstance(value, dict) and all(isinstance(v, str) for v in value.values()))
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float) or default is None:
        ok = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        if key == "min_language_score":
            ok = ok and value is not None
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InvalidRequest(f"clean: '{key}' has the wrong type ({value!r}); the default is {default!r}.", param=key)


# ---------------------------------------------------------------------------------------------------- cleaner


class Cleaner:
    """Cleans documents one at a time and counts what each rule did in `stats`. Picklable: it holds only its
    config, compiled regexes and counters; the language model is loaded in whichever process first needs it."""

    def __init__(self, config: CleanConfig | None = None) -> None:
        self.config = config or CleanConfig()
        self.stats = StepStats()
        c = self.config
        patterns = list(BOILERPLATE_PATTERNS) + list(c.boilerplate_patterns)
        self._boilerplate = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
        self._detect = c.detect_language or bool(c.languages)
        self._languages = frozenset(c.languages)
        self._pii_kinds = tuple(k for k in PII_KINDS if k in c.pii_kinds) if c.pii else ()

    def __call__(self, doc: Document) -> Document | None:
        """The cleaned document, or None when a rule drops it."""
        self.stats.seen += 1
        changed: list[str] = []
        text = self._edit(doc.text, changed)
        meta = doc.meta
        words = text.split()
        rule = self._quality(text, words)
        if rule is None and self._detect:
            language, score = detect_language(text)
            meta = {**meta, "language": language, "language_score": round(score, 4)}
            rule = self._language(language, score)
        if rule is None:
            rule = self._stopwords(words, meta)
        if rule is not None:
            self.stats.dropped[rule] += 1
            return None
        if self._pii_kinds:
            text, found = redact_pii(text, self._pii_kinds, self.config.pii_replacement)
            changed.extend(f"pii_{kind}" for kind in found)
        self.stats.kept += 1
        self.stats.changed.update(changed)
        return Document(doc.id, text, doc.source, doc.line, meta)

    # -- edits

    def _edit(self, text: str, changed: list[str]) -> str:
        """Apply the enabled edits in order, noting each one that changed the text."""
        c = self.config
        if c.normalize:
            text = _noting(changed, "normalize", text, _normalize(text))
        if c.strip_html is True or (c.strip_html == "auto" and _HTML_HINT.search(text)):
            text = _noting(changed, "html", text, html_to_text(text))
        if c.strip_control:
            text = _noting(changed, "control", text, _CONTROL.sub("", text))
        if c.boilerplate:
            text = _noting(changed, "boilerplate", text, self._remove_boilerplate(text))
        if c.collapse_whitespace:
            text = _noting(changed, "whitespace", text, _collapse_whitespace(text))
        return text

    def _remove_boilerplate(self, text: str) -> str:
        """Drop whole lines that match a boilerplate pattern and are short enough to be boilerplate."""
        lines = text.split("\n")
        kept = [line for line in lines if not self._is_boilerplate(line)]
        return text if len(kept) == len(lines) else "\n".join(kept)

    def _is_boilerplate(self, line: str) -> bool:
        limit = self.config.boilerplate_max_line_words
        if not line or (limit is not None and len(line.split()) > limit):
            return False
        return self._boilerplate.search(line.strip()) is not None

    # -- filters

    def _quality(self, text: str, words: list[str]) -> str | None:
        """The first Gopher rule that drops the text, cheapest first; None when it passes them all."""
        c = self.config
        n = len(words)
        if n == 0:
            return "empty"
        if c.min_words is not None and n < c.min_words:
            return "min_words"
        if c.max_words is not None and n > c.max_words:
            return "max_words"
        lines = [line for line in (raw.strip() for raw in text.split("\n")) if line]
        if c.max_duplicate_line_fraction is not None and _duplicate_fraction(lines) > c.max_duplicate_line_fraction:
            return "duplicate_lines"
        if c.max_top_ngram_fraction is not None and _top_bigram_fraction(words, len(text)) > c.max_top_ngram_fraction:
            return "top_ngram"
        if c.min_mean_word_length is not None or c.max_mean_word_length is not None:
            mean = _mean_word_length(words)
            low, high = c.min_mean_word_length, c.max_mean_word_length
            if (low is not None and mean < low) or (high is not None and mean > high):
                return "mean_word_length"
        if c.max_symbol_word_ratio is not None and _symbol_ratio(text, n) > c.max_symbol_word_ratio:
            return "symbol_ratio"
        if c.min_alpha_word_fraction is not None and _alpha_fraction(text, n) < c.min_alpha_word_fraction:
            return "alpha_words"
        if c.max_bullet_line_fraction is not None and _fraction(lines, str.startswith, _BULLETS) > (
            c.max_bullet_line_fraction
        ):
            return "bullet_lines"
        if c.max_ellipsis_line_fraction is not None and _fraction(lines, str.endswith, _ELLIPSES) > (
            c.max_ellipsis_line_fraction
        ):
            return "ellipsis_lines"
        return None

    def _language(self, language: str, score: float) -> str | None:
        """Drop a document outside the wanted languages, or one whose language is not clear enough to tell."""
        if self._languages and (language not in self._languages or score < self.config.min_language_score):
            return "language"
        return None

    def _stopwords(self, words: list[str], meta: Mapping[str, Any]) -> str | None:
        """Gopher's stop-word rule catches word salad, but its stop words are English: apply it only to text
        that is English or whose language is unknown."""
        need = self.config.min_stopwords
        if need is None or need <= 0:
            return None
        language, score = meta.get("language"), meta.get("language_score")
        known = language is not None and (score is None or score >= self.config.min_language_score)
        if known and not _is_english(str(language)):
            return None
        found = 0
        for word in words:
            if word.strip(_PUNCT).lower() in _STOPWORDS:
                found += 1
                if found >= need:
                    return None
        return "stopwords"


# ---------------------------------------------------------------------------------------------------- edits


def _normalize(text: str) -> str:
    """Undo mojibake and other encoding damage, then NFC, so equal text is equal bytes for deduplication."""
    return ftfy.fix_text(text, _FTFY)


def html_to_text(html: str) -> str:
    """The visible text of an HTML page or fragment, one block element per line; scripts, styles, navigation,
    footers and forms are dropped, as they are never the document's content."""
    tree = LexborHTMLParser(html)
    tree.strip_tags(_HTML_DROP)
    for node in tree.css(_HTML_BLOCKS):
        node.insert_after("\n")
    for node in tree.css("td, th"):
        node.insert_after(" ")
    root = tree.body or tree.root
    return root.text().strip() if root is not None else ""


def _noting(changed: list[str], rule: str, old: str, new: str) -> str:
    """`new`, noting `rule` in `changed` when it differs from `old`."""
    if new != old:
        changed.append(rule)
    return new


def _collapse_whitespace(text: str) -> str:
    """One space between words, no spaces at line ends, at most one blank line between paragraphs."""
    text = _NEWLINES.sub("\n", text)
    text = _HSPACE.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


# ---------------------------------------------------------------------------------------------------- measures


def _duplicate_fraction(lines: list[str]) -> float:
    """Fraction of the lines that repeat an earlier line: navigation menus and scraped templates repeat."""
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


def _top_bigram_fraction(words: list[str], chars: int) -> float:
    """Fraction of the characters in the most frequent word 2-gram. A 2-gram that occurs once is not repetition,
    so it counts as 0 (Gopher's rule would otherwise drop every very short text)."""
    if len(words) < 2 or not chars:
        return 0.0
    (first, second), count = Counter(zip(words, words[1:], strict=False)).most_common(1)[0]
    return 0.0 if count < 2 else (len(first) + len(second) + 1) * count / chars


def _mean_word_length(words: list[str]) -> float:
    """Mean length of the words with surrounding punctuation stripped; punctuation-only tokens are not words."""
    lengths = [len(s) for s in (w.strip(_PUNCT) for w in words) if s]
    return sum(lengths) / len(lengths) if lengths else 0.0


def _symbol_ratio(text: str, n_words: int) -> float:
    """Hashes or ellipses per word, whichever is higher: hashtag spam and truncated teasers."""
    return max(text.count("#"), text.count("...") + text.count("…")) / n_words


def _alpha_fraction(text: str, n_words: int) -> float:
    """Fraction of the words containing at least one letter: tables of numbers and symbols are not prose. One
    regex pass over the text, as a search per word is the slowest part of the quality rules."""
    return len(_ALPHA_WORD.findall(text)) / n_words


def _fraction(lines: list[str], test: Any, affixes: tuple[str, ...]) -> float:
    """Fraction of the lines for which `test(line, affixes)` holds (startswith/endswith)."""
    return sum(1 for line in lines if test(line, affixes)) / len(lines) if lines else 0.0


def _is_english(language: str) -> bool:
    code = language.lower().replace("_", "-")
    return code in ("en", "eng", "english") or code.startswith("en-")


# ---------------------------------------------------------------------------------------------------- language


@lru_cache(maxsize=1)
def _identifier() -> Any:
    """py3langid's identifier with probabilities normalized to 0..1, loaded once per process and only on first
    use: loading takes a second or two, which importing this module should not cost."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """The ISO 639-1 code of the text's language and a score from 0 to 1, judged on its first 10,000 characters."""
    language, score = _identifier().classify(text[:_LANGID_CHARS].replace("\n", " "))
    return str(language), float(score)
