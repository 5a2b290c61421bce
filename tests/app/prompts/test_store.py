"""Stored prompts on a real SQLite store: numbered immutable versions, no-op saves, aliases that move and roll
back with their history, references, strict rendering that names a missing variable, diffs."""

import pytest

from fmstack.app import prompts
from fmstack.app.prompts import MissingVariable, PromptContent, PromptError, PromptNotFound, PromptStore, parse_ref
from fmstack.core.store.schema import PromptVersion

V1 = {"system": "You are a geography teacher.", "user": "Capital of {{ country }}?", "params": {"temperature": 0}}
V2 = {"system": "You are a geography teacher.", "user": "What is the capital of {{ country }}?", "params": {}}
V3 = V2 | {"examples": [{"user": "Capital of Peru?", "assistant": "Lima"}], "params": {"max_tokens": 8}}


@pytest.fixture()
def store(home) -> PromptStore:
    return PromptStore.open()


def test_versions_are_numbered_and_identical_content_does_not_bump(store):
    first = store.save("capitals", V1)
    assert first.created and first.prompt.label == "capitals@1" and first.prompt.variables == ["country"]
    again = store.save("capitals", dict(V1), note="same again")
    assert not again.created and again.prompt.version == 1  # nothing new stored
    assert len(store.versions("capitals")) == 1
    assert store.save("capitals", V2, note="clearer").prompt.version == 2
    assert store.save("capitals", V3).prompt.version == 3
    assert store.save("capitals", V1).prompt.version == 4  # going back to old content is a new version
    assert [v.version for v in store.versions("capitals")] == [1, 2, 3, 4]
    assert store.get("capitals@2").note == "clearer"
    assert store.get("capitals@1").content_hash == store.get("capitals@4").content_hash
    assert store.save("other", V1).prompt.label == "other@1"  # numbering is per name


def test_versions_are_immutable(store):
    store.save("capitals", V1)
    with store.sessions() as s, pytest.raises(ValueError, match="immutable"):
        row = s.query(PromptVersion).one()
        row.user = "changed"
        s.commit()
    assert store.get("capitals@1").content.user == V1["user"]


def test_edit_twice_then_roll_back_by_alias(store):
    store.save("capitals", V1)
    assert store.set_alias("capitals", "production", 1).from_version is None
    store.save("capitals", V2)
    store.save("capitals", V3)
    move = store.set_alias("capitals", "production", "latest")
    assert (move.from_version, move.to_version, move.moved) == (1, 3, True)
    assert store.get("capitals@production").version == 3
    store.set_alias("capitals", "staging", "production")  # an alias may be set from another
    rollback = store.set_alias("capitals", "production", 1)
    assert (rollback.from_version, rollback.to_version) == (3, 1)
    assert store.get("capitals@production").version == 1 and store.get("capitals@staging").version == 3
    assert not store.set_alias("capitals", "production", "v1").moved  # already there: nothing recorded
    history = [(m.alias, m.from_version, m.to_version) for m in store.moves("capitals")]
    assert history == [("production", None, 1), ("production", 1, 3), ("staging", None, 3), ("production", 3, 1)]
    assert store.aliases("capitals") == {"production": 1, "staging": 3}
    assert store.get("capitals@1").aliases == ["production"]
    (summary,) = store.list()
    assert (summary.name, summary.latest, summary.versions) == ("capitals", 3, 3)
    assert summary.aliases == {"production": 1, "staging": 3}


def test_references_resolve_and_unknown_ones_say_what_exists(store):
    store.save("capitals", V1)
    store.save("capitals", V2)
    store.set_alias("capitals", "prod-eu_1", 1)
    assert [store.get(r).version for r in ("capitals", "capitals@latest", "capitals@1", "capitals@v2")] == [2, 2, 1, 2]
    assert store.get("capitals@prod-eu_1").version == 1
    assert parse_ref("capitals@production") == prompts.PromptRef("capitals", alias="production")
    with pytest.raises(PromptNotFound, match="has no version 7; its versions are 1 to 2"):
        store.get("capitals@7")
    with pytest.raises(PromptNotFound, match="no alias 'staging' \\(its aliases: prod-eu_1\\)"):
        store.get("capitals@staging")
    with pytest.raises(PromptNotFound, match="No prompt named 'nope'. Known prompts: capitals"):
        store.get("nope")
    for bad in ("capitals@Prod!", "bad name", "x@0"):
        with pytest.raises(PromptError):
            store.get(bad)
    for alias in ("Production", "3", "v3", "latest", "a b"):
        with pytest.raises(PromptError, match="not a valid alias"):
            store.set_alias("capitals", alias, 1)
    with pytest.raises(PromptNotFound):
        store.set_alias("capitals", "production", 9)


def test_rendering_is_strict_and_names_the_missing_variable(store):
    store.save("capitals", V3 | {"system": "You teach {{ subject }}."})
    p = store.get("capitals")
    assert p.variables == ["country", "subject"]
    assert p.render({"country": "France", "subject": "geography"}) == [
        {"role": "system", "content": "You teach geography."},
        {"role": "user", "content": "Capital of Peru?"},
        {"role": "assistant", "content": "Lima"},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    with pytest.raises(MissingVariable) as info:
        p.render({"subject": "geography"})
    assert "'country'" in info.value.message and "capitals@1" in info.value.message
    assert info.value.param == "variables.country" and info.value.code == "missing_variable"
    with pytest.raises(MissingVariable, match="Missing variables 'country', 'subject'"):
        p.render({})
    rendered = prompts.render("capitals", {"country": "Chile", "subject": "x"})  # the module-level API
    assert rendered.messages[-1]["content"] == "What is the capital of Chile?" and rendered.prompt.version == 1
    assert rendered.params == {"max_tokens": 8}


def test_sandbox_and_optional_variables():
    optional = PromptContent.build({"user": "{% if name is defined %}Hi {{ name }}{% else %}Hi{% endif %}"})
    assert optional.render({}) == [{"role": "user", "content": "Hi"}]
    unsafe = PromptContent.build({"user": "{{ x.__class__.__mro__ }}"})
    with pytest.raises(PromptError):
        unsafe.render({"x": 1})


def test_bad_content_is_refused_naming_the_field():
    with pytest.raises(PromptError, match="user: template error on line 2"):
        PromptContent.build({"user": "ok\n{{ country"})
    with pytest.raises(PromptError, match="unknown field 'params.temprature'. Known: model, temperature"):
        PromptContent.build({"user": "x", "params": {"temprature": 0}})
    with pytest.raises(PromptError, match="params.temperature"):
        PromptContent.build({"user": "x", "params": {"temperature": 9}})
    with pytest.raises(PromptError, match="give a 'system' or a 'user' template"):
        PromptContent.build({"system": "  "})


def test_diff_shows_changed_parts_and_params(store):
    store.save("capitals", V1)
    store.save("capitals", V3)
    store.set_alias("capitals", "production", 1)
    text = store.diff("capitals@production", "capitals")
    assert text.startswith("--- capitals@1\n+++ capitals@2\n")
    assert "-Capital of {{ country }}?\n+What is the capital of {{ country }}?\n" in text
    assert "+## examples[0].user\n+Capital of Peru?\n" in text
    assert "-temperature: 0.0\n" in text and "+max_tokens: 8\n" in text
    assert " You are a geography teacher.\n" in text  # unchanged context
    assert store.diff("capitals@1", "capitals@production") == ""
