import pytest

from fmstack.core.config import get_settings
from fmstack.core.errors import InvalidRequest, ModelNotFound
from fmstack.core.registry import Registry, register_user_model


def test_builtins_and_user_entries(home):
    registry = Registry(get_settings())
    smol = registry.get("smollm2-135m-instruct")
    assert smol.engine == "llamacpp" and smol.available()
    qwen = registry.get("qwen2.5-0.5b-instruct")
    assert len(qwen.source) == 6 and qwen.size_bytes() == 491_400_064
    priced = registry.get("smollm2-priced")  # from the user file written by the fixture
    assert priced.cost(1_000_000, 1_000_000) == pytest.approx(7.5)
    assert registry.get("all-minilm-l6-v2").kind == "embedding"


def test_unknown_model_lists_known_ones(home):
    with pytest.raises(ModelNotFound, match="smollm2-135m-instruct"):
        Registry(get_settings()).get("gpt-17")


def test_bad_user_file_names_file_and_field(home):
    (home / "models.toml").write_text('[models.x]\nengine = "tensorrt"\nsource = "path:/x"\n')
    with pytest.raises(InvalidRequest, match=r"models.toml: model 'x' field 'engine'"):
        Registry(get_settings())


def test_register_user_model_round_trips(home):
    register_user_model(get_settings(), "remote-gpt", engine="openai", base_url="http://x/v1", price_input=0.15)
    spec = Registry(get_settings()).get("remote-gpt")
    assert spec.engine == "openai" and spec.base_url == "http://x/v1" and spec.price_input == 0.15
    assert Registry(get_settings()).get("smollm2-priced")  # existing entries kept
