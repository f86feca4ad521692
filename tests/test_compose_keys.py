"""Content keys are the record's address: a refactor of how configs are composed (resolvers,
the stage door, the planner) must find every committed result and cached world again. The
expected values below were computed by the code before issue 28's "compose once" change."""

from __future__ import annotations

from ssah.config import compose
from ssah.plan.store import content_key
from ssah.worlds.smollm2.paths import config_of, keys_of
from ssah.worlds.toy.cache import locate

RESULTS = "/work/main/outputs/results"  # keys are relative to it, so any dir gives the same
SMOLLM2_ROW = [  # experiments/real_smollm2/results/smollm2/prune_scu-*/meta.json's overrides
    "model=smollm2_135m_aligned",
    "eval=smollm2_fast",
    "eval.harmful.limit=100",
    "eval.suites.past_tense.limit=32",
    "scoring=smollm2",
    "+world=smollm2",
    "world.align.seed=0",
    "target=scu",
    f"units={RESULTS}/smollm2/score_aligned-bda3fc9b0378/units.safetensors",
]


def test_a_smollm2_rows_key_and_its_worlds_keys_are_unchanged() -> None:
    cfg = compose("prune", SMOLLM2_ROW)
    # Config changes (not refactors) move these on purpose: 4248b0a1eca2 before the validation
    # benign set named each prompt's source, cb784fbb387c before the world's recipe became the
    # one chosen over seeds (experiments/real_smollm2/recipes; aligned b6648779e988 before)
    assert content_key("prune", cfg, RESULTS) == "f26485a21296"
    assert keys_of(config_of(cfg)) == {
        "base": "aa60203c13dc",
        "data": "1337cefcb5ad",
        "aligned": "7e6bc8ee9961",
    }


def test_a_toy_rows_key_and_the_toy_worlds_key_are_unchanged() -> None:
    cfg = compose("evaluate", ["toy=tiny"])
    assert content_key("evaluate", cfg, RESULTS) == "e887a33438cd"
    assert locate(cfg.toy).root.name == "d0d66f859c0f"
    assert locate(compose("toy", []).toy).root.name == "7f6f1f571bb2"


def test_the_toy_worlds_untrained_model_is_the_one_it_always_built() -> None:
    """The toy world's weights come from ssah.models.random_init now; its cache key says
    nothing about the builder's code, so the weights themselves must not move."""
    import hashlib

    from omegaconf import OmegaConf

    from ssah.worlds.toy.world import initial_model

    class Tok:  # what model_config reads of a tokenizer
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

        def __len__(self) -> int:
            return 300

    cfg = OmegaConf.to_container(compose("toy", ["toy=tiny"]).toy, resolve=True)
    digest = hashlib.sha256()
    for name, tensor in sorted(initial_model(cfg, Tok()).state_dict().items()):  # type: ignore[arg-type]
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    assert digest.hexdigest()[:16] == "452cae5598803d6e"  # before the change, by hand
