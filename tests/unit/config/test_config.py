from pathlib import Path

import pytest

from ftpipe.config import Config, config_hash, load_config
from ftpipe.config.load import validate_config
from ftpipe.errors import ConfigError
from tests.helpers import REPO

SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert {p.name for p in SHIPPED} >= {"demo.yaml", "sst2.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_says_how_to_launch_it(path: Path):
    config = load_config(path)
    assert isinstance(config, Config)
    header = path.read_text().splitlines()[:4]
    assert header[0].startswith("#")
    assert any("Launch:" in line for line in header)


def test_overrides_are_dotted_and_parsed_as_yaml(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train: t.csv\n")
    config = load_config(
        path, ["data.max_length=64", "data.labels=[neg, pos]", "data.eval=null", "seed=7"]
    )
    assert config.data.max_length == 64
    assert config.data.labels == ("neg", "pos")
    assert config.data.eval is None
    assert config.seed == 7


def test_config_is_frozen_all_the_way_down():
    config = validate_config(
        {
            "data": {"train": "t.csv", "labels": ["a", "b"]},
            "tune": {"search_space": {"train.lr": "loguniform(1e-5, 1e-3)"}},
        }
    )
    before = config_hash(config)
    with pytest.raises(Exception, match="frozen"):
        config.data.max_length = 3
    with pytest.raises(AttributeError):
        config.data.labels.append("c")
    with pytest.raises(TypeError):
        config.tune.search_space["train.lr"] = "choice([1e-4])"
    assert config_hash(config) == before
    assert config.model_dump(mode="json")["tune"]["search_space"] == {
        "train.lr": "loguniform(1e-5, 1e-3)"
    }


def test_declared_labels_may_be_integers():
    config = validate_config({"data": {"train": "t.csv", "labels": [0, 1, "2"]}})
    assert config.data.labels == ("0", "1", "2")


def test_hash_is_stable_and_tracks_every_value():
    raw = {"data": {"train": "t.csv"}, "train": {"lr": 1e-5}}
    first, again = validate_config(raw), validate_config(dict(raw))
    assert config_hash(first) == config_hash(again)
    assert len(config_hash(first)) == 64
    changed = validate_config({"data": {"train": "t.csv"}, "train": {"lr": 2e-5}})
    assert config_hash(changed) != config_hash(first)
    # Key order in the file does not matter: the hash is over canonical JSON.
    reordered = validate_config({"train": {"lr": 1e-5}, "data": {"train": "t.csv"}})
    assert config_hash(reordered) == config_hash(first)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"data": {"train": "t.csv", "max_lenght": 64}},
            ["unknown key `data.max_lenght`", "did you mean `max_length`", "accepted keys in data"],
            id="unknown-key",
        ),
        pytest.param(
            {"data": {"train": "t.csv"}, "trian": {}},
            ["unknown key `trian`", "did you mean `train`"],
            id="unknown-section",
        ),
        pytest.param(
            {"data": {"train": "t.csv", "max_length": "long"}},
            ["`data.max_length`", "valid integer", "'long'"],
            id="wrong-type",
        ),
        pytest.param(
            {"data": {"train": "t.csv", "max_length": 0}},
            ["`data.max_length`", "greater than or equal to 8", "got 0"],
            id="impossible-value",
        ),
        pytest.param(
            {"data": {"train": "t.csv", "eval_fraction": 1.5}},
            ["`data.eval_fraction`", "less than 1"],
            id="fraction-out-of-range",
        ),
        pytest.param(
            {"data": {"train": "t.csv", "on_error": "skip"}},
            ["`data.on_error`", "'fail' or 'drop'", "'skip'"],
            id="accepted-values-listed",
        ),
        pytest.param(
            {"data": {"train": "t.csv"}, "strategy": {"name": "lroa"}},
            ["`strategy.name`", "'lora'", "'full'"],
            id="strategy-choices",
        ),
        pytest.param(
            {"data": {"train": "t.csv", "has_header": False}},
            ["data.text_column is 'text'", "data.has_header is false", "0-based column index"],
            id="names-without-header",
        ),
        pytest.param({"model": {}}, ["`data` is required"], id="missing-section"),
        pytest.param(
            {"data": {"train": "t.csv", "labels": ["a", "b", "a"]}},
            ["data.labels repeats 'a'; list each once"],
            id="repeated-label",
        ),
        pytest.param(
            {"data": {"train": "t.csv", "text_column": True}},
            ["`data.text_column`", "(got True)"],
            id="boolean-is-not-a-column",
        ),
        pytest.param(
            {"data": {"train": "t.csv", "labels": ["only"]}},
            ["`data.labels`", "at least 2"],
            id="one-declared-label",
        ),
    ],
)
def test_invalid_config_names_dotted_path_and_accepted_values(raw, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source="c.yaml")
    message = str(info.value)
    assert message.startswith("Invalid config c.yaml")
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("data: [unclosed\n", [], "not valid YAML"),
        ("- a\n- b\n", [], "must hold a mapping"),
        ("data:\n  train: t.csv\n", ["data.max_length"], "not of the form key.path=value"),
        ("data:\n  train: t.csv\n", ["data.train.x=1"], "data.train, which is a value"),
        ("data:\n  train: a.csv\n  train: b.csv\n", [], "key 'train' appears twice"),
        ("1: 2\ndata: {train: t.csv}\n", [], r"`1`: keys should be strings"),
        ("data:\n  train: t.csv\n", ["data.train="], r"with overrides data\.train=: `data\.train`"),
    ],
)
def test_malformed_files_and_overrides_are_clear_errors(tmp_path, text, overrides, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, overrides)


def test_unreadable_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"Cannot read config file .*Pass a UTF-8 YAML file"):
        load_config(tmp_path)
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"Cannot read config file"):
        load_config(binary)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_schema_carries_field_help():
    schema = Config.model_json_schema()
    data = schema["$defs"]["DataConfig"]["properties"]
    assert "fsspec URI" in data["train"]["description"]
    assert data["on_error"]["enum"] == ["fail", "drop"]
