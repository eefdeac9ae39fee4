"""Configs: strict keys and types, overrides, shipped configs load."""

from pathlib import Path

import pytest

from captioner.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_values_and_overrides(tmp_path):
    path = write(tmp_path, "data:\n  format: generic\n  path: own.jsonl\ntrain:\n  lr: 3e-4\n  epochs: 4\n")
    config = load_config(path, ["train.batch_size=16", "model.encoder_weights=null", "train.label_smoothing=0.1"])
    assert config.data.format == "generic" and config.train.lr == 3e-4 and config.train.epochs == 4
    assert config.train.batch_size == 16 and config.model.encoder_weights is None
    assert config.train.label_smoothing == 0.1
    assert load_config(None).model.encoder == "efficientnet_lite0"
    assert load_config(None, ["train.val_metric=BLEU-4", "train.lr=1e-3"]).train.val_metric == "BLEU-4"


@pytest.mark.parametrize("text,overrides,message", [
    ("train:\n  lerning_rate: 0.1\n", [], "unknown config key train.lerning_rate"),
    ("train:\n  batchsize: 8\n", [], "did you mean train.batch_size"),
    ("trian:\n  lr: 0.1\n", [], "did you mean train"),
    ("train:\n  epochs: ten\n", [], "train.epochs: expected int, got str 'ten'"),
    ("train:\n  epochs: 2.5\n", [], "train.epochs: expected int"),
    ("train:\n  fine_tune_encoder: 1\n", [], "expected bool"),
    ("data:\n  format: parquet\n", [], "data.format: 'parquet' is not one of"),
    ("train:\n  encoder_batchnorm: eval\n", [], "train.encoder_batchnorm: 'eval' is not one of frozen, train"),
    ("train: 3\n", [], "train: expected a mapping"),
    ("train:\n  epochs: [1\n", [], "not valid YAML"),
    ("", ["train.epochs"], "must look like section.key=value"),
    ("", ["train.epochs=0"], "train.epochs must be at least 1"),
    ("", ["decode.beam_size=two"], "decode.beam_size: expected int"),
    ("train:\n  lr: .inf\n", [], "train.lr: expected a finite number, got inf"),
    ("", ["train.lr=.nan"], "train.lr: expected a finite number, got nan"),
    ("", ["train.weight_decay=-.inf"], "train.weight_decay: expected a finite number"),
    ("", ["train.grad_clip=inf"], "train.grad_clip: expected a finite number, got 'inf'"),
    ("train:\n  lr: 1.0e+39\n", [], "train.lr must be in [0, 10] (AdamW moves each weight by about lr per step), "
                                    "got 1e+39"),
    ("", ["train.lr=10.5"], "train.lr must be in [0, 10]"),
    ("", ["train.lr=-1e-4"], "train.lr must be in [0, 10]"),
    ("", ["train.encoder_lr=1e39"], "train.encoder_lr must be in [0, 10]"),
    ("", ["train.weight_decay=-0.01"], "train.weight_decay must be at least 0, got -0.01"),
    ("", ["train.step_gamma=1e30"], "train.step_gamma must be in (0, 1] (the step schedule multiplies the lr by "
                                    "it), got 1e+30"),
    ("", ["train.step_gamma=0"], "train.step_gamma must be in (0, 1]"),
    ("", ["train.step_epochs=0"], "train.step_epochs must be at least 1"),
    ("", ["train.warmup_steps=-5"], "train.warmup_steps at least 0, got 8 and -5"),
    ("", ["decode.length_penalty=.inf"], "decode.length_penalty: expected a finite number"),
    ("", ["train.val_metric=CIDEr"],
     "train.val_metric: 'CIDEr' is not one of BLEU-1, BLEU-2, BLEU-3, BLEU-4, METEOR, ROUGE-L, CIDEr-D"),
    ("", ["train.val_metric=bleu-4"], "train.val_metric: 'bleu-4' is not one of"),
])
def test_mistakes_are_errors_naming_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    assert message in str(info.value)
    if not overrides:
        assert str(info.value).startswith(str(tmp_path / "c.yaml") + ": ")


def test_learning_rates_up_to_the_bound_are_accepted():
    config = load_config(None, ["train.lr=10", "train.encoder_lr=0", "train.weight_decay=0"])
    assert (config.train.lr, config.train.encoder_lr, config.train.weight_decay) == (10.0, 0.0, 0.0)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.data.path and config.data.images


def alias_bomb(depth: int) -> str:
    """A YAML flow list whose last item is 9 lists of 9 ... (``depth`` levels) of strings:
    a few hundred bytes that stand for 9**depth strings."""
    levels = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, depth + 1)]
    return f"[{', '.join(levels)}]"


@pytest.mark.parametrize("depth", [7, 9])
def test_an_alias_bomb_as_a_typed_value_gives_a_short_error(tmp_path, depth):
    """The full repr would be 35 MB at depth 7 and a MemoryError at depth 9."""
    for path, overrides in [(write(tmp_path, f"train:\n  epochs: {alias_bomb(depth)}\n"), []),
                            (None, [f"train.epochs={alias_bomb(depth)}"])]:
        with pytest.raises(ConfigError) as info:
            load_config(path, overrides)
        message = str(info.value)
        assert "train.epochs: expected int, got list [['lol', '" in message and message.endswith("...")
        assert len(message.split("train.epochs: ", 1)[1]) < 200 and "\n" not in message


def test_short_values_are_still_quoted_in_full():
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int, got list \[\[\[1\]\]\]$"):
        load_config(None, ["train.epochs=[[[1]]]"])


@pytest.mark.parametrize("text", ["- train\n- model\n", "just a string\n", "42\n"])
@pytest.mark.parametrize("overrides", [[], ["train.epochs=2"]])
def test_a_config_that_is_not_a_mapping_of_sections(tmp_path, text, overrides):
    kind = {"-": "list", "j": "str", "4": "int"}[text[0]]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides)
    assert str(info.value) == f"config {tmp_path / 'c.yaml'}: expected a mapping of sections, got {kind}"


def test_duplicate_keys_are_errors_naming_the_key_and_lines(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "train:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n"))
    assert str(info.value) == f"{tmp_path / 'c.yaml'}: duplicate key 'lr' on line 4 (first on line 2)"
    with pytest.raises(ConfigError, match="duplicate key 'train' on line 3 \\(first on line 1\\)"):
        load_config(write(tmp_path, "train: {}\nmodel: {}\ntrain: {}\n"))


def test_an_unknown_backbone_names_the_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "model:\n  encoder: resnet5\n"))
    assert str(info.value).startswith(f"{tmp_path / 'c.yaml'}: model.encoder: unknown encoder backbone 'resnet5'")
    assert load_config(write(tmp_path, "model:\n  encoder: resnet50\n")).model.encoder == "resnet50"
