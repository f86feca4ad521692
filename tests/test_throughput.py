"""Throughput options change speed, not meaning: padding is pure waste (same loss and gradients),
length-grouped batches are a seeded, resumable permutation with less padding, bfloat16 autocast
is refused where the CPU cannot run it and keeps frozen units bit-identical, activation
checkpointing through the LightningModule trains the same weights, and the FLOP count behind
MFU matches the model's own layers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssah.data.chat import IGNORE, collate
from ssah.data.sampler import GROUP_BATCHES, ResumableSampler, group_by_length
from ssah.errors import SsahError
from ssah.eval.tiny import tiny_pair
from ssah.module import CausalLMModule, OptimConfig
from ssah.training import check_precision, quiet_trainer


def _lengths(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 200, (n,), generator=g).tolist()


def _padding(order: list[int], lengths: list[int], bs: int) -> float:
    n = len(order) - len(order) % bs
    batches = [order[s : s + bs] for s in range(0, n, bs)]
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / sum(bs * max(lengths[i] for i in b) for b in batches)


# ---- length-grouped batches ---------------------------------------------------------------------
def test_grouped_order_is_a_seeded_permutation_with_far_less_padding():
    n, bs = 1000, 8  # three chunks of GROUP_BATCHES batches and a partial one
    lengths = _lengths(n)
    plain = ResumableSampler(n, seed=3)
    grouped = ResumableSampler(n, seed=3, lengths=lengths, batch_size=bs)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        grouped.set_epoch(epoch)
        a, b = list(plain), list(grouped)
        assert sorted(b) == sorted(a) == list(range(n))  # every example once an epoch
        assert b == list(grouped)  # a function of (seed, epoch)
        assert _padding(b, lengths, bs) < 0.1 < 0.4 < _padding(a, lengths, bs)
    grouped.set_epoch(0)
    first = list(grouped)
    grouped.set_epoch(1)
    assert list(grouped) != first  # a new epoch regroups
    assert GROUP_BATCHES * bs < n  # the chunks, not one global sort, were exercised


def test_grouped_partial_batch_goes_last_so_dataloader_batches_are_the_groups():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53, 9]  # 9 examples, batches of 2: one left over
    order = group_by_length(list(range(9)), lengths, 2, seed=0, epoch=0)
    batches = [order[i : i + 2] for i in range(0, 8, 2)]
    for b in batches:  # sorted neighbours: each batch's lengths within one step of the sort
        assert abs(lengths[b[0]] - lengths[b[1]]) <= 2
    assert order[-1] == 0  # the shortest, left over, goes where drop_last drops it


def test_grouped_sampler_resumes_mid_epoch():
    lengths = _lengths(100, seed=1)
    full = ResumableSampler(100, seed=1, lengths=lengths, batch_size=4)
    full.set_epoch(2)
    want = list(full)
    first = ResumableSampler(100, seed=1, lengths=lengths, batch_size=4)
    first.set_epoch(2)
    it = iter(first)
    seen = [next(it) for _ in range(37)]
    second = ResumableSampler(100, seed=1, lengths=lengths, batch_size=4)
    second.load_state_dict(first.state_dict())
    second.set_epoch(2)
    assert seen + list(second) == want


def test_datamodule_groups_only_when_asked():
    from ssah.data.datamodule import ChatDataModule, TaskConfig

    _, tok = tiny_pair(seed=0)
    rows = [
        {"input_ids": [1] * k, "labels": [1] * k}
        for k in _lengths(64, seed=2)  # stands in for encoded records
    ]

    def order(**kw) -> list[int]:
        dm = ChatDataModule(tok, TaskConfig(name="t", source="unused", **kw))
        dm.train_rows = rows
        loader = dm.train_dataloader()
        return list(loader.sampler)

    assert order() == list(ResumableSampler(64, 0))  # default: the order it always had
    grouped = order(group_by_length=True)
    assert grouped != order() and sorted(grouped) == list(range(64))


def test_padding_changes_neither_loss_nor_gradients():
    """A batch padded far past its longest example, a tightly padded one and every example alone
    (weighted by its response tokens) give the same loss and gradients: padding is only waste."""
    model, _ = tiny_pair(seed=2)
    model.train()
    g = torch.Generator().manual_seed(0)
    rows = []
    for n_prompt, n_resp in ((3, 4), (6, 9), (2, 2)):
        ids = torch.randint(3, 300, (n_prompt + n_resp,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * n_prompt + ids[n_prompt:]})

    def grads(batches: list[dict[str, torch.Tensor]], weights: list[float]):
        model.zero_grad()
        total = 0.0
        for b, w in zip(batches, weights, strict=True):
            loss = model(**b).loss * w
            loss.backward()
            total += float(loss)
        return total, {n: p.grad.clone() for n, p in model.named_parameters()}

    tight = collate(rows, pad_id=0)
    wide = collate(rows + [{"input_ids": [5] * 40, "labels": [IGNORE] * 40}], pad_id=0)
    wide = {k: v[:3] for k, v in wide.items()}  # the same 3 rows, padded to 40
    assert wide["input_ids"].shape[1] == 40 > tight["input_ids"].shape[1]
    counts = [sum(x != IGNORE for x in r["labels"][1:]) for r in rows]  # labels are shifted
    alone = [collate([r], pad_id=0) for r in rows]
    ref_loss, ref = grads([tight], [1.0])
    for batches, weights in (([wide], [1.0]), (alone, [c / sum(counts) for c in counts])):
        loss, got = grads(batches, weights)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6, msg=name)


# ---- bfloat16 -----------------------------------------------------------------------------------
def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    import ssah.training as training

    monkeypatch.setattr(training, "cpu_bf16_supported", lambda: False)
    with pytest.raises(SsahError, match=r"trainer\.precision=bf16-mixed.*32-true"):
        check_precision({"accelerator": "cpu", "precision": "bf16-mixed"})
    check_precision({"accelerator": "cpu", "precision": "32-true"})
    monkeypatch.setattr(training, "cpu_bf16_supported", lambda: True)
    check_precision({"accelerator": "cpu", "precision": "bf16-mixed"})


def test_cpu_bf16_preset_autocasts_the_matmuls():
    from ssah.config import compose

    cfg = compose("train", ["trainer=cpu_bf16"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "cpu"
    model, _ = tiny_pair(seed=0)
    seen: list[torch.dtype] = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda _m, _a, out: seen.append(out.dtype)
    )
    _fit(model, precision=cfg.trainer.precision, steps=1)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights


def _loader() -> DataLoader:
    ids = torch.randint(3, 300, (16, 12), generator=torch.Generator().manual_seed(7))
    return DataLoader([{"input_ids": r, "labels": r} for r in ids], batch_size=4)


def _fit(model, precision: str = "32-true", steps: int = 3, callbacks=()) -> None:
    model.train()
    quiet_trainer(steps, precision=precision, gradient_clip_val=1.0, callbacks=list(callbacks)).fit(
        CausalLMModule(model, OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0)),
        train_dataloaders=_loader(),
    )


def test_activation_checkpointing_trains_the_same_weights_through_the_module(tmp_path):
    """model.gradient_checkpointing=true (ModelConfig, applied by ssah.finetune before the
    LightningModule is built): the same weights after AdamW steps with exact freezing."""
    from ssah.freeze import plan
    from ssah.freeze.synthetic import synthetic_units
    from ssah.models import ModelConfig, prepare_for_training

    units = str(synthetic_units(tiny_pair(seed=4)[0], tmp_path / "u.safetensors", seed=1))
    out = {}
    for ckpt in (False, True):
        model, _ = tiny_pair(seed=4)
        prepare_for_training(model, ModelConfig(name_or_path="unused", gradient_checkpointing=ckpt))
        assert model.is_gradient_checkpointing is ckpt
        fp = plan(
            {"spec": "t", "mode": "freeze", "units": units, "categories": ["SCU", "CU"]},
            model,
            tmp_path / str(ckpt),
        )
        _fit(model, callbacks=fp.callbacks)
        fp.after_fit(model)  # raises if a frozen slice moved
        out[ckpt] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, want in out[False].items():
        torch.testing.assert_close(out[True][name], want, rtol=1e-4, atol=1e-6, msg=name)


# ---- the FLOP count behind MFU --------------------------------------------------------------------
def test_flop_count_matches_the_models_linear_layers():
    from ssah.bench.peak import Shapes, forward_flops, generation_flops, step_flops

    model, _ = tiny_pair(seed=0)
    s = Shapes.of(model.config)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert s.linear_flops_per_token() == 2 * weights  # the LM head included (tied or not)
    attn = 2 * 2 * s.layers * s.heads * s.head_dim
    assert forward_flops(s, [3]) == 3 * 2 * weights + attn * (1 + 2 + 3)
    assert step_flops(s, [3, 5]) == 3 * forward_flops(s, [3, 5])
    # a prompt of 3 then 2 new tokens: the prompt's pass with one LM head, then one token
    body = 2 * weights - 2 * s.hidden * s.vocab
    head = 2 * s.hidden * s.vocab
    assert generation_flops(s, [3], 2) == 3 * body + attn * 6 + head + body + head + attn * 4


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fused_adamw_keeps_frozen_units_and_trains_like_the_default(tmp_path, precision):
    """optim.fused=true, with gradient clipping, in float32 and under bf16 autocast: the fused
    kernel is really used, frozen slices stay bit-identical, and the weights end within float
    rounding of the default AdamW's."""
    from ssah.freeze import plan
    from ssah.freeze.synthetic import synthetic_units

    units = str(synthetic_units(tiny_pair(seed=5)[0], tmp_path / "u.safetensors", seed=1))
    out = {}
    for fused in (False, True):
        model, _ = tiny_pair(seed=5)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        fp = plan(
            {"spec": "t", "mode": "freeze", "units": units, "categories": ["SCU", "CU"]},
            model,
            tmp_path / f"{precision}{fused}",
        )
        module = CausalLMModule(
            model, OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=0, fused=fused)
        )
        trainer = quiet_trainer(
            3, precision=precision, gradient_clip_val=1.0, callbacks=fp.callbacks
        )
        model.train()
        trainer.fit(module, train_dataloaders=_loader())
        assert trainer.optimizers[0].defaults["fused"] is (True if fused else None)
        fp.after_fit(model)  # raises if a frozen slice moved
        frozen = fp.callbacks[0].entries
        assert frozen and all(
            torch.equal(e.param.index_select(e.dim, e.index), e.saved) for e in frozen
        )
        out[fused] = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert any(not torch.equal(out[fused][n], start[n]) for n in start)  # it trained
    tol = dict(rtol=1e-4, atol=1e-6) if precision == "32-true" else dict(rtol=2e-2, atol=1e-3)
    for name, want in out[False].items():
        torch.testing.assert_close(out[True][name], want, **tol, msg=name)


# ---- the LM head on labelled tokens only ----------------------------------------------------------
def test_head_on_labels_only_gives_the_models_loss_and_gradients():
    from ssah.module import labelled_loss

    model, _ = tiny_pair(seed=6)
    model.train()
    g = torch.Generator().manual_seed(1)
    rows = []
    for n_prompt, n_resp in ((5, 3), (2, 8), (7, 1)):
        ids = torch.randint(3, 300, (n_prompt + n_resp,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * n_prompt + ids[n_prompt:]})
    batch = collate(rows, pad_id=0)

    def run(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return float(loss), {n: p.grad.clone() for n, p in model.named_parameters()}

    want_loss, want = run(lambda: model(**batch).loss)
    got_loss, got = run(lambda: labelled_loss(model, **batch))
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7, msg=name)
    module = CausalLMModule(model, OptimConfig(), head_on_labels_only=True)
    assert float(module(**batch)) == pytest.approx(want_loss, rel=1e-6)


def test_head_on_labels_only_refuses_a_head_it_would_get_wrong():
    model, _ = tiny_pair(seed=0)
    model.config.final_logit_softcapping = 30.0  # Gemma-2 style: not a plain linear head
    with pytest.raises(SsahError, match="head_on_labels_only.*final_logit_softcapping"):
        CausalLMModule(model, OptimConfig(), head_on_labels_only=True)
