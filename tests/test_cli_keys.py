"""`fmstack keys`: create shows the key once, list never does, revoke and rotate; bad input is one line and exit
code 2 naming the field, with nothing written; `fmstack up` refuses other interfaces until a key exists."""

import json

import pytest
from typer.testing import CliRunner

from fmstack.cli import app
from fmstack.core.config import get_settings
from fmstack.core.keys import InvalidApiKey, KeyStore
from fmstack.core.store import open_store

runner = CliRunner()
COMMANDS = [["keys"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["keys", "rotate"]]


def keys() -> KeyStore:
    return KeyStore(open_store(get_settings()))


def create(*args: str) -> str:
    result = runner.invoke(app, ["keys", "create", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["secret"]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_keys_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Example: fmstack keys" in result.output


def test_create_prints_the_key_once_and_list_never_does(home):
    flags = ["--app", "shop", "--scope", "inference", "--rpm", "60", "--tpm", "20000", "--budget", "5/day"]
    result = runner.invoke(app, ["keys", "create", "--name", "shop-bot", *flags])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert secret.startswith("fmk_") and len(secret) == 47 and "Shown this once" in result.stderr
    assert keys().authenticate(secret).app == "shop"
    listed = runner.invoke(app, ["keys", "list", "--json"])
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "shop-bot" and row["scopes"] == ["inference"] and row["budget"] == "5/day"
    assert (row["rpm"], row["tpm"], row["status"]) == (60, 20000, "active") and row["prefix"] == secret[:12]
    assert secret not in listed.stdout and "secret" not in row
    table = runner.invoke(app, ["keys", "list"], terminal_width=250)
    assert "shop-bot" in table.stdout and secret not in table.stdout


def test_revoke_and_rotate(home):
    secret = create("--name", "bot", "--scope", "inference,feedback")
    rotated = runner.invoke(app, ["keys", "rotate", "bot"])
    assert rotated.exit_code == 0
    new = rotated.stdout.strip()
    assert new.startswith("fmk_") and new != secret
    with pytest.raises(InvalidApiKey):
        keys().authenticate(secret)
    assert keys().authenticate(new).scopes == ("inference", "feedback")
    assert runner.invoke(app, ["keys", "revoke", "bot"]).exit_code == 0
    with pytest.raises(InvalidApiKey, match="revoked"):
        keys().authenticate(new)
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)[0]["status"] == "revoked"


@pytest.mark.parametrize(
    "args, says",
    [
        (["keys", "create", "--name", "x", "--scope", "write"], "Unknown scope 'write'"),
        (["keys", "create", "--name", "x", "--budget", "5/week"], "Invalid budget '5/week'"),
        (["keys", "create", "--name", "x", "--rpm", "0"], "Invalid rpm 0"),
        (["keys", "create", "--name", "shop bot"], "Invalid name 'shop bot'"),
        (["keys", "create", "--name", "taken"], "'taken' already exists"),
        (["keys", "revoke", "nope"], "No key named 'nope'"),
        (["keys", "rotate", "nope"], "No key named 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_code_2_and_writes_nothing(home, args, says):
    create("--name", "taken")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert [k.name for k in keys().list()] == ["taken"]


def test_up_refuses_other_interfaces_without_a_key(home):
    result = runner.invoke(app, ["up", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "without API keys" in result.stderr and "fmstack keys create" in result.stderr
    assert "--insecure" in result.stderr
    for host in ("::", "192.168.1.20", "my-host.local"):
        assert runner.invoke(app, ["up", "--host", host]).exit_code == 2
