"""Cleaning: each rule does what its name says, drops or edits only what it should, and is counted by name."""

from __future__ import annotations

import pickle

import pytest

from fmstack.core.errors import FmstackError
from fmstack.model.data.clean import DROP_RULES, CleanConfig, Cleaner, redact_pii
from fmstack.model.data.documents import Document, StepStats

ENGLISH = (
    "The Amazon River in South America is the largest river by discharge volume of water in the world, and the "
    "disputed longest river system in the world in comparison to the Nile. The headwaters of the Apurímac River on "
    "Nevado Mismi had been considered for nearly a century as the Amazon basin's most distant source, until a 2014 "
    "study found it to be the headwaters of the Mantaro River on the Cordillera Rumi Cruz in Peru. The Mantaro and "
    "Apurímac rivers join, and with other tributaries form the Ucayali River, which in turn meets the Marañón River "
    "upstream of Iquitos, forming what countries other than Brazil consider to be the main stem of the Amazon."
)
GERMAN = (
    "Der Rhein ist ein Strom in Mitteleuropa. Er entspringt in den Schweizer Alpen und mündet in den Niederlanden in "
    "die Nordsee. Mit einer Länge von rund 1230 Kilometern ist er einer der längsten und wichtigsten Flüsse Europas. "
    "Seit der Römerzeit ist der Rhein eine der wichtigsten Wasserstraßen des Kontinents, und an seinen Ufern liegen "
    "zahlreiche Städte wie Basel, Straßburg, Mannheim, Köln und Düsseldorf, die ihren Reichtum dem Handel verdanken."
)
FRENCH = (
    "La Seine est un fleuve français, long de 777 kilomètres, qui coule dans le Bassin parisien et arrose notamment "
    "Troyes, Paris, Rouen et Le Havre. Sa source se situe à 446 mètres d'altitude à Source-Seine, en Côte-d'Or, sur "
    "le plateau de Langres. Son cours a une orientation générale du sud-est au nord-ouest, et elle se jette dans la "
    "Manche entre Le Havre et Honfleur, après avoir traversé plusieurs régions très peuplées du nord de la France."
)


def clean(text: str, **config) -> tuple[Document | None, Cleaner]:
    cleaner = Cleaner(CleanConfig.from_dict(config))
    return cleaner(Document("d1", text, source="in.jsonl", line=7)), cleaner


def dropped_by(text: str, **config) -> str:
    doc, cleaner = clean(text, **config)
    assert doc is None, f"expected a drop, kept: {doc.text[:80]!r}"
    assert sum(cleaner.stats.dropped.values()) == 1, "only the first rule that drops a document is counted"
    return next(iter(cleaner.stats.dropped))


# ---------------------------------------------------------------------------------------------------- edits


def test_a_normal_encyclopedia_paragraph_is_kept_unchanged_by_the_defaults():
    doc, cleaner = clean(ENGLISH)
    assert doc is not None and doc.text == ENGLISH
    assert (doc.id, doc.source, doc.line) == ("d1", "in.jsonl", 7)
    assert doc.meta["language"] == "en" and doc.meta["language_score"] > 0.9
    assert cleaner.stats == StepStats(seen=1, kept=1)


def test_mojibake_is_repaired_and_counted_as_normalize():
    doc, cleaner = clean(ENGLISH + " The cafÃ© by the river serves crÃ¨me brÃ»lÃ©e.")
    assert doc is not None
    assert doc.text.endswith("The café by the river serves crème brûlée.")
    assert cleaner.stats.changed == {"normalize": 1}


def test_curly_quotes_are_legitimate_text_and_kept():
    doc, _ = clean(ENGLISH + " It was called \u201cthe river sea\u201d by early explorers.")
    assert doc is not None and "\u201cthe river sea\u201d" in doc.text


def test_html_page_becomes_text_without_tags_scripts_or_styles():
    page = (
        "<!DOCTYPE html><html><head><title>Amazon</title><style>p { color: red }</style></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About</a></nav><h1>The Amazon</h1>"
        f"<p>{ENGLISH.replace('Amazon basin', '<b>Amazon</b> basin')}</p><div>Source&nbsp;: &quot;Wikipedia&quot;</div>"
        "<script>var tracking = 'window.secret';</script></body></html>"
    )
    doc, cleaner = clean(page)
    assert doc is not None
    assert "<" not in doc.text and ">" not in doc.text
    for hidden in ("color: red", "tracking", "secret", "Home", "About"):
        assert hidden not in doc.text
    assert doc.text.split("\n")[:3] == ["The Amazon", ENGLISH, 'Source : "Wikipedia"']
    assert cleaner.stats.changed["html"] == 1


def test_plain_text_mentioning_angle_brackets_is_not_treated_as_html():
    text = ENGLISH + " In code, a comparison such as x < y and y > z stays as written."
    doc, cleaner = clean(text)
    assert doc is not None and "x < y and y > z" in doc.text
    assert "html" not in cleaner.stats.changed


def test_html_can_be_forced_or_turned_off():
    text = ENGLISH + " <em>Tributaries</em> include the Negro."  # too few tags to look like a page
    auto, _ = clean(text)
    assert auto is not None and "<em>" in auto.text
    forced, _ = clean(text, strip_html=True)
    assert forced is not None and forced.text == ENGLISH + " Tributaries include the Negro."
    off, _ = clean("<p>" + ENGLISH + "</p>", strip_html=False)
    assert off is not None and off.text.startswith("<p>")


def test_boilerplate_lines_are_removed_and_content_kept():
    text = "\n".join(
        [
            "Skip to main content",
            ENGLISH,
            "This website uses cookies to improve your experience.",
            "Subscribe to our newsletter for weekly updates!",
            "Share this article on Facebook",
            "Read more »",
            "© 2024 River News Ltd. All rights reserved.",
        ]
    )
    doc, cleaner = clean(text)
    assert doc is not None and doc.text == ENGLISH
    assert cleaner.stats.changed == {"boilerplate": 1}


def test_a_long_paragraph_that_mentions_a_privacy_policy_is_content_not_boilerplate():
    paragraph = (
        "In 2018 the company rewrote its privacy policy after regulators in Europe found that it had shared the data "
        "of millions of users with advertisers without asking them, and the new rules required it to explain in plain "
        "language what it collected and why."
    )
    doc, _ = clean(ENGLISH + "\n\n" + paragraph)
    assert doc is not None and paragraph in doc.text


def test_extra_boilerplate_patterns_from_the_config_are_applied():
    doc, _ = clean(ENGLISH + "\nPosted by admin in Uncategorized", boilerplate_patterns=[r"^posted by \w+ in"])
    assert doc is not None and doc.text == ENGLISH


def test_control_characters_are_removed_and_whitespace_collapsed():
    text = "\ufeff" + ENGLISH.replace("river", "ri\u200bver").replace(". ", ".  \t \r\n\n\n\n") + "\x00"
    doc, cleaner = clean(text, normalize=False)
    assert doc is not None
    assert doc.text == ENGLISH.replace(". ", ".\n\n")
    assert cleaner.stats.changed == {"control": 1, "whitespace": 1}


# ---------------------------------------------------------------------------------------------------- filters

LONG_WORDS = " ".join(f"extraordinarily{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60))
SHORT_WORDS = " ".join(f"{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(60))
SENTENCES = [s.strip() + "." for s in ENGLISH.split(".") if s.strip()]
NO_STOPWORDS = " ".join(w for w in ENGLISH.split() if w.lower() not in {"the", "be", "to", "of", "and", "that"})
PHRASES = [" ".join(ENGLISH.split()[i : i + 10]) for i in range(0, len(ENGLISH.split()), 10)]


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        ("empty", "   \n\t  "),
        ("min_words", "The Amazon is a long river in South America."),
        ("duplicate_lines", "\n".join(SENTENCES + ["Click to see the photo gallery of the river."] * 5)),
        ("top_ngram", ENGLISH + " buy now" * 40),
        ("mean_word_length", LONG_WORDS + " the and of"),
        ("mean_word_length", SHORT_WORDS + " the and of"),
        ("symbol_ratio", ENGLISH + "".join(f" #river{i}" for i in range(15))),
        ("symbol_ratio", ENGLISH.replace(" the ", " the… ")),
        ("alpha_words", ENGLISH + "".join(f" {1000 + 37 * i}" for i in range(40))),
        ("bullet_lines", "\n".join(f"- {p}" for p in PHRASES)),
        ("ellipsis_lines", "\n".join(f"{p} ..." for p in PHRASES[::2]) + "\n" + " ".join(PHRASES[1::2])),
        ("stopwords", NO_STOPWORDS),
    ],
)
def test_each_quality_rule_drops_a_crafted_document_under_its_own_name(rule, text):
    assert dropped_by(text) == rule


def test_max_words_drops_documents_over_the_limit():
    assert dropped_by(ENGLISH, max_words=50) == "max_words"


def test_every_filter_can_be_turned_off():
    off = {
        "min_words": None,
        "max_words": None,
        "min_mean_word_length": None,
        "max_mean_word_length": None,
        "max_symbol_word_ratio": None,
        "min_alpha_word_fraction": None,
        "max_duplicate_line_fraction": None,
        "max_top_ngram_fraction": None,
        "max_bullet_line_fraction": None,
        "max_ellipsis_line_fraction": None,
        "min_stopwords": None,
        "detect_language": False,
    }
    for text in ["#1 ... #2 ...", "- a a a a\n- a a a a", "x" * 40]:
        doc, cleaner = clean(text, **off)
        assert doc is not None and doc.text == text, cleaner.stats


def test_all_rule_names_are_documented_in_the_module_docstring():
    import fmstack.model.data.clean as module

    for rule in (*DROP_RULES, "normalize", "html", "control", "boilerplate", "whitespace", "pii_email", "pii_phone"):
        assert f"    {rule} " in module.__doc__ or f"`{rule}`" in module.__doc__


# ---------------------------------------------------------------------------------------------------- language


def test_language_filter_keeps_english_and_drops_german_and_french():
    cleaner = Cleaner(CleanConfig.from_dict({"languages": ["en"]}))
    kept = cleaner(Document("en", ENGLISH))
    assert kept is not None and kept.meta["language"] == "en"
    assert cleaner(Document("de", GERMAN)) is None
    assert cleaner(Document("fr", FRENCH)) is None
    assert cleaner.stats.dropped == {"language": 2}
    assert (cleaner.stats.seen, cleaner.stats.kept) == (3, 1)


def test_english_stopword_rule_does_not_drop_other_languages():
    cleaner = Cleaner()
    for text, language in [(GERMAN, "de"), (FRENCH, "fr")]:
        doc = cleaner(Document(language, text))
        assert doc is not None, cleaner.stats
        assert doc.meta["language"] == language and doc.meta["language_score"] >= 0.65


def test_a_language_given_by_the_reader_is_used_when_detection_is_off():
    doc, _ = clean(GERMAN, detect_language=False)
    assert doc is None  # unknown language: Gopher's English stop words apply
    cleaner = Cleaner(CleanConfig.from_dict({"detect_language": False}))
    assert cleaner(Document("de", GERMAN, meta={"language": "de"})) is not None


# ---------------------------------------------------------------------------------------------------- PII


def test_emails_phones_and_ips_are_replaced():
    text = (
        "Write to jane.doe+news@example.co.uk or INFO@Mail.Example.org. Call +44 20 7946 0958, (415) 555-0132, "
        "1-800-555-0199, +49 30 1234567, 030 1234567 or 06 12 34 56 78. Servers 192.168.1.10 and "
        "2001:db8::8a2e:370:7334 went down."
    )
    out, found = redact_pii(text)
    assert out == (
        "Write to <EMAIL> or <EMAIL>. Call <PHONE>, <PHONE>, <PHONE>, <PHONE>, <PHONE> or <PHONE>. Servers <IP> and "
        "<IP> went down."
    )
    assert found == {"email": 2, "phone": 6, "ip": 2}


def test_only_luhn_valid_card_numbers_are_replaced():
    out, found = redact_pii("Paid with 4111 1111 1111 1111 and 5500-0000-0000-0004; order 4111 1111 1111 1112.")
    assert out == "Paid with <CREDIT_CARD> and <CREDIT_CARD>; order 4111 1111 1111 1112."
    assert found == {"credit_card": 2}
    assert redact_pii("Tracking number 4111111111111112 shipped.")[0] == "Tracking number 4111111111111112 shipped."


@pytest.mark.parametrize(
    "text",
    [
        "Founded in 1999, it grew by 2023 to 8,000,000 users between 1990-2000.",
        "Dates: 2023-01-15, 15.01.2023, 01/15/2023 and 01.01.2020 12:00.",
        "Order 12345678901234567890, ISBN 978-0-306-40615-7, EAN 9780306406157, zip 90210.",
        "Version 3.11.2, not an address 999.1.1.1 or 1.2.3.4.5, at 12:30:45, in std::vector, ratio 3:2.",
        "Scores were 100 200 3000, pages 10-20, pi is 3.14159, and +5 - 3 = 2.",
    ],
)
def test_years_dates_ids_and_versions_are_not_mistaken_for_pii(text):
    assert redact_pii(text) == (text, {})


def test_pii_replacement_can_be_a_template_or_per_kind_and_kinds_can_be_chosen():
    text = "Mail bob@example.com from 10.0.0.1."
    assert redact_pii(text, replacement="[{kind} removed]")[0] == "Mail [email removed] from [ip removed]."
    assert redact_pii(text, replacement={"email": "x@example.invalid"})[0] == "Mail x@example.invalid from <IP>."
    assert redact_pii(text, kinds=["ip"])[0] == "Mail bob@example.com from <IP>."


def test_cleaner_redacts_pii_and_counts_each_kind_once_per_document():
    doc, cleaner = clean(ENGLISH + " Contact a@example.com, b@example.com or 8.8.8.8.")
    assert doc is not None and doc.text.endswith("Contact <EMAIL>, <EMAIL> or <IP>.")
    assert cleaner.stats.changed == {"pii_email": 1, "pii_ip": 1}
    doc, _ = clean(ENGLISH + " Contact a@example.com.", pii=False)
    assert doc is not None and "a@example.com" in doc.text


# ---------------------------------------------------------------------------------------------------- config


def test_unknown_config_key_is_rejected_naming_it_and_the_valid_keys():
    with pytest.raises(FmstackError) as err:
        CleanConfig.from_dict({"min_word": 10})
    assert "'min_word'" in err.value.message and "min_words" in err.value.message


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"min_words": "fifty"}, "min_words"),
        ({"normalize": "yes"}, "normalize"),
        ({"strip_html": "sometimes"}, "strip_html"),
        ({"languages": ["english"]}, "english"),
        ({"pii_kinds": ["email", "ssn"]}, "ssn"),
        ({"boilerplate_patterns": ["(unclosed"]}, "(unclosed"),
    ],
)
def test_bad_config_values_are_rejected_by_name(config, named):
    with pytest.raises(FmstackError, match=rf"{named!s}".replace("(", r"\(")):
        CleanConfig.from_dict(config)


def test_empty_config_is_the_defaults():
    assert CleanConfig.from_dict(None) == CleanConfig.from_dict({}) == CleanConfig()
    assert CleanConfig().to_dict()["min_words"] == 50


# ---------------------------------------------------------------------------------------------------- running


def test_stats_of_two_cleaners_add_up():
    first, second = Cleaner(), Cleaner()
    first(Document("a", ENGLISH + " Mail a@example.com."))
    first(Document("b", "Too short."))
    second(Document("c", "Also too short."))
    second(Document("d", "<p>" + ENGLISH + "</p>"))
    total = first.stats + second.stats
    assert total == StepStats(seen=4, kept=2, dropped={"min_words": 2}, changed={"pii_email": 1, "html": 1})
    assert StepStats.from_dict(total.to_dict()) == total


def test_cleaner_pickles_without_the_language_model_and_behaves_the_same():
    cleaner = Cleaner(CleanConfig.from_dict({"languages": ["en"], "boilerplate_patterns": ["^posted by"]}))
    cleaner(Document("a", ENGLISH))
    blob = pickle.dumps(cleaner)
    assert len(blob) < 50_000
    copy = pickle.loads(blob)
    assert copy.stats == cleaner.stats and copy.config == cleaner.config
    doc = Document("b", ENGLISH + "\nPosted by admin")
    assert copy(doc) == cleaner(doc)
    assert copy(Document("c", GERMAN)) is None


def test_same_input_gives_same_output_and_the_input_is_not_modified():
    source = Document("a", "<p>" + ENGLISH + " Call +1 415 555 0132.</p>", meta={"url": "https://example.com"})
    first, second = Cleaner()(source), Cleaner()(source)
    assert first == second
    assert source.text.startswith("<p>") and source.meta == {"url": "https://example.com"}
    assert first is not None and first.meta["url"] == "https://example.com"
