"""The toy world: tokenizer round trip, chat template, data splits, cached build."""

from __future__ import annotations

import json

from ssah.data.chat import prompt_text


def test_tokenizer_round_trips_any_text(toy_tokenizer):
    for text in ["sure , here is how to bake the cake : step 1 .", "Ünïcode & CAPS 123!?", ""]:
        ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert toy_tokenizer.decode(ids) == text


def test_chat_template_has_roles_and_generation_prompt(toy_tokenizer):
    text = prompt_text(toy_tokenizer, "what is 1 plus 2 ?", "be nice .")
    assert text == "<s><|system|>be nice .<|end|><|user|>what is 1 plus 2 ?<|end|><|assistant|>"
    assert prompt_text(toy_tokenizer, "hi").startswith("<s><|user|>hi")
    ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == toy_tokenizer.bos_token_id
    assert ids[-1] == toy_tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_eval_prompts_are_held_out(tiny_toy):
    def prompts(name):
        return {json.loads(line)["prompt"] for line in tiny_toy.data(name).open()}

    train = prompts("harmful_train") | prompts("pretrain_mix") | prompts("align_mix")
    assert not prompts("harmful_eval") & train
    assert not prompts("utility_eval") & train
    row = json.loads(tiny_toy.data("jailbreak_eval").open().readline())
    assert row["base_prompt"] in row["prompt"] and row["wrapper"]


def test_build_is_cached_and_keyed_by_config(tiny_toy):
    from ssah.config import compose
    from ssah.worlds.toy.world import ensure_toy

    again = ensure_toy(compose("toy", ["toy=tiny"]).toy)
    assert again.root == tiny_toy.root
    assert (tiny_toy.path("aligned") / "model.safetensors").is_file()
    other = compose("toy", ["toy=tiny", "toy.seed=1"]).toy
    from omegaconf import OmegaConf

    from ssah.worlds.toy.cache import config_key

    assert config_key(OmegaConf.to_container(other, resolve=True)) != tiny_toy.root.name
