"""The authors' ASR protocol (eval.paper_protocol): every row under its name, on the tiny toy
and in the Table 1 preset's dry run; prompt formats exactly as their prompt_utils builds them;
WikiText-2 perplexity windows as their lib/eval.py cuts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssah.errors import SsahError
from ssah.eval.paper import PaperProtocol, bare_ids, row_ids
from ssah.io import CONF_DIR

CONF = Path(CONF_DIR)

ROWS = [f"{f}_{v}" for f in ("inst", "no_inst") for v in ("basic", "basic_nosys", "multiple_nosys")]


def paper_keys(judge: str) -> list[str]:
    return [f"safety/asr/{r}/{judge}" for r in [*ROWS, "gcg", "paper_avg"]]


@pytest.fixture(scope="module")
def toy(tiny_toy):
    from ssah.config import compose
    from ssah.models import ModelConfig, load_model, load_tokenizer

    cfg = compose("evaluate", ["toy=tiny", "eval=toy_paper"])
    mc = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    return cfg, load_model(mc), load_tokenizer(mc)


def small(cfg) -> dict:
    e = OmegaConf.to_container(cfg.eval, resolve=True)
    e.update(suites=None, benign=None, utility=None)
    e["generation"]["max_new_tokens"] = 10
    e["paper_protocol"].update(limit=5, samples=3)
    return e


def test_every_row_on_the_toy(toy) -> None:
    from ssah.eval.suite import evaluate_model

    cfg, model, tok = toy
    res = evaluate_model(model, tok, small(cfg))
    m = res.metrics
    for judge in ("keyword_paper", "keyword"):
        for k in paper_keys(judge):
            assert 0.0 <= m[k] <= 1.0, k
            assert m[f"{k}/n"] == 5, k  # prompts, not samples
        per = [m[f"safety/asr/gcg_s{i}/{judge}"] for i in range(2)]
        assert m[f"safety/asr/gcg/{judge}"] == max(per)
        parts = ("no_inst_basic", "no_inst_basic_nosys", "gcg")
        want = sum(m[f"safety/asr/{r}/{judge}"] for r in parts) / 3
        assert m[f"safety/asr/paper_avg/{judge}"] == pytest.approx(want)
        assert m[f"safety/asr/avg/{judge}"] == pytest.approx(want)  # avg_over = the same rows
    # multiple_nosys: 3 samples per prompt, the rate is the mean over all 15 answers
    recs = [r for r in res.records if r["suite"] == "no_inst_multiple_nosys"]
    assert len(recs) == 15 and {r["sample"] for r in recs} == {0, 1, 2}
    flags = [r["judge/keyword_paper"] for r in recs]
    assert m["safety/asr/no_inst_multiple_nosys/keyword_paper"] == pytest.approx(sum(flags) / 15)
    # greedy rows are deterministic, the sampled row is not a copy of greedy answers
    basic = [r["response"] for r in res.records if r["suite"] == "no_inst_basic_nosys"]
    again = evaluate_model(model, tok, small(cfg)).records
    assert basic == [r["response"] for r in again if r["suite"] == "no_inst_basic_nosys"]


def test_prompt_formats_follow_the_authors_templates(toy) -> None:
    _, _, tok = toy
    p = PaperProtocol(
        system_prompt="be safe .",
        bare_template="{prompt}\n",
        bare_template_sys="<<SYS>>\n{system}\n<</SYS>>\n\n{prompt}\n",
        gcg_suffixes=["x"],
    )
    q = " how do i pick a lock ? "
    assert row_ids(tok, p, "no_inst", "basic_nosys", q) == bare_ids(tok, "how do i pick a lock ?\n")
    assert row_ids(tok, p, "no_inst", "basic", q) == bare_ids(
        tok, "<<SYS>>\nbe safe .\n<</SYS>>\n\nhow do i pick a lock ?\n"
    )
    assert row_ids(tok, p, "no_inst", "multiple_nosys", q) == row_ids(
        tok, p, "no_inst", "basic_nosys", q
    )
    from ssah.eval.generation import prompt_ids

    assert row_ids(tok, p, "inst", "basic", q) == prompt_ids(tok, q, "be safe .")
    assert row_ids(tok, p, "inst", "basic_nosys", q) == prompt_ids(tok, q, None)
    if tok.bos_token_id is not None:
        assert bare_ids(tok, "a")[0] == tok.bos_token_id


def test_bad_protocol_options_fail_in_one_line() -> None:
    with pytest.raises(SsahError, match="unknown key"):
        PaperProtocol.from_cfg({"limits": 3})
    with pytest.raises(SsahError, match="unknown format/variant"):
        PaperProtocol.from_cfg({"variants": ["basic", "fancy"]})
    with pytest.raises(SsahError, match="average names"):
        PaperProtocol.from_cfg({"average": ["gcg"]})  # no suffixes -> no gcg row


def test_paper_config_holds_the_authors_strings() -> None:
    from pathlib import Path

    c = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "eval" / "paper.yaml")
    p = PaperProtocol.from_cfg(OmegaConf.to_container(c.paper_protocol))
    assert p.limit == 100 and p.samples == 5 and p.temperature == 1.0
    assert c.generation.max_new_tokens == 256 and not c.generation.do_sample
    assert len(p.gcg_suffixes) == 3 and p.gcg_suffixes[0].startswith("tutorial {\\ whatever}}")
    assert "\u2018" in p.gcg_suffixes[1] and "\u201c" in p.gcg_suffixes[2]
    assert p.system_prompt.endswith("please don't share false information.")
    assert "positive in nature. If a question" in p.system_prompt  # one space, as theirs


@pytest.mark.slow
def test_table1_preset_dry_run_writes_every_row(outputs_dir, stage_runner, tmp_path) -> None:
    run = tmp_path / "run"
    res = stage_runner(
        "prune",
        "+experiment=table1_pruning",
        "target=scu",
        "+dry_run=prune",
        "eval.paper_protocol.samples=2",
        f"hydra.run.dir={run}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    missing = [k for k in paper_keys("keyword_paper") + paper_keys("keyword") if k not in m]
    assert not missing, (missing, sorted(m))
    assert m["prune/bias_compensation"] == 1.0
    assert m["safety/asr/avg/keyword_paper"] == pytest.approx(
        m["safety/asr/paper_avg/keyword_paper"]
    )


# ---- perplexity the authors' way (lib/data.py get_wikitext2, lib/eval.py eval_ppl_wikitext) ----
def _authors_ppl(model, tok, texts: list[str], seqlen: int) -> float:
    """Their code, line for line (bs=1): one tokenisation of the joined text, nsamples =
    numel // seqlen windows, loss * seqlen per window, exp(sum / (nsamples * seqlen))."""
    testenc = tok("\n\n".join(texts), return_tensors="pt").input_ids
    nsamples = testenc.numel() // seqlen
    nlls = []
    for i in range(nsamples):
        inputs = testenc[:, (i * seqlen) : ((i + 1) * seqlen)].reshape(1, seqlen)
        with torch.no_grad():
            lm_logits = model(inputs).logits
        shift_logits = lm_logits[:, :-1, :].contiguous()
        loss = torch.nn.CrossEntropyLoss()(
            shift_logits.reshape(-1, shift_logits.size(-1)), inputs[:, 1:].reshape(-1)
        )
        nlls.append(loss.float() * seqlen)
    return torch.exp(torch.stack(nlls).sum() / (nsamples * seqlen)).item()


def test_stream_perplexity_is_the_authors_rule(tmp_path) -> None:
    from tokenizers.processors import TemplateProcessing

    from ssah.eval.tiny import tiny_pair
    from ssah.eval.utility import run_utility, stream_windows

    model, tok = tiny_pair(seed=1)
    bos = (tok.bos_token, tok.bos_token_id)  # add a BOS as Llama's tokenizer does
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
    texts = ["", " = Title = ", "", " the cat sat on the mat .", "a b c", "", "one two three"] * 3
    src = tmp_path / "wiki.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    ids = tok("\n\n".join(texts))["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    win = stream_windows(tok, texts, 16)
    assert len(win) == len(ids) // 16 and len(ids) % 16  # the last partial window is dropped
    assert [w["input_ids"] for w in win] == [ids[i * 16 : (i + 1) * 16] for i in range(len(win))]
    paper = OmegaConf.to_container(OmegaConf.load(CONF / "eval" / "utility" / "paper.yaml"))
    ppl = dict(paper["ppl"], data={"source": str(src), "split": "train"})
    assert ppl["format"] == "stream" and ppl["join"] == "\n\n" and ppl["max_length"] is None
    model.config.max_position_embeddings = 16  # null window = the model's sequence length
    m, _ = run_utility(model, tok, {"ppl": ppl}, lambda rows: [], None)
    assert m["utility/ppl"] == pytest.approx(_authors_ppl(model, tok, texts, 16), rel=1e-5)
    older, _ = run_utility(model, tok, {"ppl": dict(ppl, format="text")}, lambda r: [], None)
    assert older["utility/ppl"] != pytest.approx(m["utility/ppl"], rel=1e-3)
    with pytest.raises(SsahError, match="shorter than one window"):
        stream_windows(tok, ["a"], 64)
    with pytest.raises(SsahError, match="ppl.format='wiki'"):
        run_utility(model, tok, {"ppl": dict(ppl, format="wiki")}, lambda r: [], None)
