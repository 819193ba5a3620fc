"""Sampling settings: which rule runs, what is refused, and how settings compare."""

import pytest

from medusa_runtime.sampling import SamplingConfig, SamplingError, describe_settings, same_distribution, settings_options


@pytest.mark.parametrize("kwargs,option", [
    ({"temperature": -0.5}, "--temperature"), ({"temperature": float("nan")}, "--temperature"),
    ({"temperature": 1.0, "top_p": 0.0}, "--top-p"), ({"temperature": 1.0, "top_p": 1.5}, "--top-p"),
    ({"temperature": 1.0, "top_k": -1}, "--top-k"), ({"acceptance": "typical"}, "--acceptance typical"),
    ({"temperature": 0.7, "acceptance": "greedy"}, "--acceptance greedy"), ({"temperature": 0.7, "acceptance": "nucleus"}, "--acceptance"),
])
def test_bad_settings_are_one_line_errors_naming_the_option(kwargs, option):
    with pytest.raises(SamplingError) as err:
        SamplingConfig(**kwargs)
    assert option in str(err.value) and "\n" not in str(err.value)


def test_the_rule_follows_the_temperature_unless_asked():
    assert SamplingConfig().rule == "greedy" and SamplingConfig().lossless
    assert SamplingConfig(temperature=0.7).rule == "sample" and SamplingConfig(temperature=0.7).lossless
    typical = SamplingConfig(temperature=0.7, acceptance="typical")
    assert typical.rule == "typical" and not typical.lossless
    assert SamplingConfig(temperature=0.0, acceptance="sample").rule == "greedy"  # sampling at temperature 0 is greedy


def test_settings_and_their_comparison():
    greedy, t07 = SamplingConfig(), SamplingConfig(temperature=0.7, top_p=0.9, seed=3)
    assert greedy.settings() == {"temperature": 0.0}
    assert t07.settings() == {"temperature": 0.7, "top_k": 0, "top_p": 0.9, "seed": 3}
    assert same_distribution(greedy.settings(), None)  # stats without settings are greedy stats
    assert same_distribution(t07.settings(), {**t07.settings(), "seed": 4})  # the seed does not change the distribution
    assert not same_distribution(t07.settings(), {**t07.settings(), "top_p": 1.0})
    assert not same_distribution(greedy.settings(), t07.settings())
    assert describe_settings(t07.settings()) == "temperature 0.7, top-p 0.9" and describe_settings(None).startswith("greedy")
    assert settings_options(t07.settings()) == "--temperature 0.7 --top-p 0.9" and settings_options(None) == ""
    assert SamplingConfig(top_k=5).ignored_options() == ["--top-k"] and t07.ignored_options() == []


def test_settings_round_trip():
    for config in (SamplingConfig(), SamplingConfig(temperature=0.7, top_k=20, top_p=0.9, seed=3)):
        assert SamplingConfig.from_settings(config.settings()).settings() == config.settings()
    assert SamplingConfig.from_settings(None) == SamplingConfig()
