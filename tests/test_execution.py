"""Execution settings are not rule params: the script gets them from the config at run time."""

from test_config import load

from imhibench.common.execution import answer_settings, get_device, get_generation_settings
from imhibench.generate.base import EXECUTION_SETTINGS


def test_answer_settings_leave_out_execution_settings():
    settings = load("config.yaml")["generation"]
    answers = answer_settings(settings)
    assert set(answers) == {"max_new_tokens", "chat_template", "dtype", "decoding"}
    assert not EXECUTION_SETTINGS & set(answers)


def test_script_settings_add_the_models_execution_settings():
    config = load("config.yaml")
    config["model_catalog"]["MentalT5"]["generation"] = {"batch_tokens": 77, "max_new_tokens": 9}
    params = answer_settings({**config["generation"], "max_new_tokens": 9})
    settings = get_generation_settings(config, "MentalT5", params)
    assert settings == {**config["generation"], "batch_tokens": 77, "max_new_tokens": 9}
    assert get_device(config) == "auto"


def test_api_request_and_cost_settings_are_not_answer_settings():
    from imhibench.common.execution import API_EXECUTION_KEYS, answer_model_spec, get_model_spec

    config = load("config.yaml")
    spec = config["model_catalog"]["ChatGPT-zero-shot"]
    answer = answer_model_spec(spec)
    assert "resources" not in answer and "run_on" not in answer
    assert answer["api"]["model"] == spec["api"]["model"]
    assert not API_EXECUTION_KEYS & set(answer["api"])
    # A new concurrency or price leaves the rule param unchanged; the script still sees it.
    faster = {**spec, "api": {**spec["api"], "concurrency": 64}}
    assert answer_model_spec(faster) == answer
    config["model_catalog"]["ChatGPT-zero-shot"] = faster
    assert get_model_spec(config, "ChatGPT-zero-shot")["api"]["concurrency"] == 64
    # The endpoint's model does change answers.
    other = {**spec, "api": {**spec["api"], "model": "gpt-4o"}}
    assert answer_model_spec(other) != answer


def test_the_test_sets_a_model_answers_are_not_an_answer_setting():
    """Adding a test set to a model's `datasets` must not rerun (and so regenerate) the answers
    it already has: the list is not in the generate rule's param."""
    from imhibench.common.execution import answer_model_spec

    spec = load("config.yaml")["model_catalog"]["MentaLLaMA-chat-7B"]
    one = answer_model_spec({**spec, "datasets": ["DR"]})
    assert one == answer_model_spec({**spec, "datasets": ["DR", "SAD"]}) == answer_model_spec(spec)
