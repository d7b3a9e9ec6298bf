"""Execution settings are not rule params: the script gets them from the config at run time."""

from test_config import load

from imhibench.execution import answer_settings, get_device, get_generation_settings
from imhibench.generate.base import EXECUTION_SETTINGS


def test_answer_settings_leave_out_execution_settings():
    settings = load("config.yaml")["generation"]
    answers = answer_settings(settings)
    assert set(answers) == {"max_new_tokens", "chat_template", "dtype"}
    assert not EXECUTION_SETTINGS & set(answers)


def test_script_settings_add_the_models_execution_settings():
    config = load("config.yaml")
    config["model_catalog"]["MentalT5"]["generation"] = {"batch_tokens": 77, "max_new_tokens": 9}
    params = answer_settings({**config["generation"], "max_new_tokens": 9})
    settings = get_generation_settings(config, "MentalT5", params)
    assert settings == {**config["generation"], "batch_tokens": 77, "max_new_tokens": 9}
    assert get_device(config) == "auto"
