"""Unit index: which slices of which tensors make each MLP neuron and attention head.

A unit is an MLP intermediate neuron (gate/up row j, down column j) or a query head
(q rows and o columns of head h). With grouped-query attention, k/v rows of a key/value
head belong to the group of query heads that share it (contract 5 in design.md).
Units are listed layer by layer; within a layer MLP neurons come before heads ("flat order",
used for deterministic tie-breaking everywhere).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ssah.errors import SsahError

KINDS = ("mlp", "attn")
# Unit categories, contract 4: the uint8 code is the index (0 RU, 1 SCU, 2 UCU, 3 CU).
CATEGORY_NAMES = ("RU", "SCU", "UCU", "CU")
CATEGORY_CODES = {name: code for code, name in enumerate(CATEGORY_NAMES)}


@dataclass(frozen=True)
class ModuleNames:
    """Where the unit-owning linears live; defaults cover Llama, Mistral and Qwen2."""

    layers: str = "model.layers"
    q_proj: str = "self_attn.q_proj"
    k_proj: str = "self_attn.k_proj"
    v_proj: str = "self_attn.v_proj"
    o_proj: str = "self_attn.o_proj"
    gate_proj: str = "mlp.gate_proj"
    up_proj: str = "mlp.up_proj"
    down_proj: str = "mlp.down_proj"

    @classmethod
    def for_model(cls, model: nn.Module, overrides: Mapping[str, str] | None = None) -> ModuleNames:
        """Names for `model` (by its HF `model_type`), with `overrides` (e.g. scoring.modules)."""
        model_type = getattr(getattr(model, "config", None), "model_type", "llama")
        names = KNOWN_MODULE_NAMES.get(model_type, cls())
        if overrides:
            known = {f.name for f in fields(cls)}
            bad = sorted(set(overrides) - known)
            if bad:
                raise SsahError(
                    f"module-name override(s) {bad} are unknown; use keys from {sorted(known)}."
                )
            names = replace(names, **{k: str(v) for k, v in overrides.items()})
        return names


# Llama-style checkpoints all share the default names; add a family here when it differs.
KNOWN_MODULE_NAMES: dict[str, ModuleNames] = {
    t: ModuleNames() for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
}


@dataclass(frozen=True)
class Slice:
    """Entries `index` along `dim` of parameter `name` (a full dotted parameter name)."""

    name: str
    dim: int
    index: torch.Tensor  # long, sorted


class UnitIndex:
    """Shapes and parameter slices of every unit of a causal LM."""

    def __init__(
        self,
        model: nn.Module,
        names: ModuleNames | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.names = names or ModuleNames.for_model(model, overrides)
        cfg = model.config
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        self.intermediate_size: int = cfg.intermediate_size
        self.num_heads: int = cfg.num_attention_heads
        self.num_kv_heads: int = getattr(cfg, "num_key_value_heads", None) or self.num_heads
        self.head_dim: int = getattr(cfg, "head_dim", None) or self.hidden_size // self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise SsahError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}"
            )
        self.group_size = self.num_heads // self.num_kv_heads
        self._param_names = {n for n, _ in model.named_parameters()}
        self._check_modules(model)

    def _check_modules(self, model: nn.Module) -> None:
        """Fail with a clear line when the module names do not fit this architecture."""
        mods = dict(model.named_modules())
        for which in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            name = self.module_name(0, which)
            if not isinstance(mods.get(name), nn.Linear):
                raise SsahError(
                    f"model {type(model).__name__} has no linear {name!r}; set the module names "
                    f"for this architecture (scoring.modules.{which}=...)."
                )
        shape = mods[self.module_name(0, "down_proj")].weight.shape
        if tuple(shape) != (self.hidden_size, self.intermediate_size):
            raise SsahError(f"down_proj weight has shape {tuple(shape)}, config says otherwise")

    # ---- sizes -------------------------------------------------------------------------
    def num_units(self, kind: str) -> int:
        """Units per layer of this kind."""
        if kind not in KINDS:
            raise ValueError(f"unknown unit kind {kind!r}; expected one of {KINDS}")
        return self.intermediate_size if kind == "mlp" else self.num_heads

    def channels(self, kind: str) -> int:
        """Input channels of the unit kind's second matrix (down_proj / o_proj)."""
        return self.intermediate_size if kind == "mlp" else self.num_heads * self.head_dim

    def _has_bias(self, which: str) -> bool:
        return f"{self.module_name(0, which)}.bias" in self._param_names

    @property
    def params_per_neuron(self) -> float:
        """Parameters one MLP neuron owns: a gate row, an up row and a down column (+ biases)."""
        bias = sum(self._has_bias(w) for w in ("gate_proj", "up_proj"))
        return 3.0 * self.hidden_size + bias

    @property
    def params_per_head(self) -> float:
        """Parameters one query head owns: q rows, o columns and its share of k/v rows."""
        hd, h = self.head_dim, self.hidden_size
        qo = 2.0 * hd * h + hd * self._has_bias("q_proj")
        kv = sum(hd * h + hd * self._has_bias(w) for w in ("k_proj", "v_proj"))
        return qo + kv / self.group_size

    def unit_weight(self, kind: str) -> float:
        """Parameter weight of one unit, used to count category ratios in parameters."""
        return self.params_per_neuron if kind == "mlp" else self.params_per_head

    def total_units(self) -> int:
        return self.num_layers * sum(self.num_units(k) for k in KINDS)

    def total_params(self) -> float:
        """Parameters owned by all units together (the denominator of parameter ratios)."""
        return self.num_layers * sum(self.num_units(k) * self.unit_weight(k) for k in KINDS)

    # ---- flat order --------------------------------------------------------------------
    def flatten(self, per_layer: Mapping[tuple[int, str], torch.Tensor]) -> torch.Tensor:
        """{(layer, kind): vector} -> one vector in flat order (layer, then mlp before attn)."""
        return torch.cat(
            [per_layer[(i, k)].flatten() for i in range(self.num_layers) for k in KINDS]
        )

    def unflatten(self, flat: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
        """Inverse of `flatten`."""
        out: dict[tuple[int, str], torch.Tensor] = {}
        pos = 0
        for i in range(self.num_layers):
            for k in KINDS:
                n = self.num_units(k)
                out[(i, k)] = flat[pos : pos + n]
                pos += n
        if pos != flat.numel():
            raise ValueError(f"flat vector has {flat.numel()} entries, model has {pos} units")
        return out

    def flat_weights(self) -> torch.Tensor:
        """Parameter weight of every unit in flat order (float64)."""
        return self.flatten(
            {
                (i, k): torch.full((self.num_units(k),), self.unit_weight(k), dtype=torch.float64)
                for i in range(self.num_layers)
                for k in KINDS
            }
        )

    # ---- names -------------------------------------------------------------------------
    def module_name(self, layer: int, which: str) -> str:
        """Dotted module name of e.g. which='down_proj' in layer `layer`."""
        return f"{self.names.layers}.{layer}.{getattr(self.names, which)}"

    def module(self, model: nn.Module, layer: int, which: str) -> nn.Module:
        """The module itself."""
        return model.get_submodule(self.module_name(layer, which))

    def second_matrix(self, kind: str) -> str:
        """The matrix whose input channels are the unit's activations (Eq. 1's B)."""
        return "down_proj" if kind == "mlp" else "o_proj"

    def _existing(self, module: str, suffix: str) -> str | None:
        name = f"{module}.{suffix}"
        return name if name in self._param_names else None

    # ---- slices ------------------------------------------------------------------------
    def slices(self, layer: int, kind: str, units: torch.Tensor) -> list[Slice]:
        """Parameter slices owned by the units selected by bool mask `units` (contract 5)."""
        units = units.to(torch.bool).cpu()
        if units.numel() != self.num_units(kind):
            raise ValueError(
                f"layer {layer} {kind}: mask has {units.numel()} entries, "
                f"model has {self.num_units(kind)} units"
            )
        if kind == "mlp":
            return self._mlp_slices(layer, units)
        return self._attn_slices(layer, units)

    def _mlp_slices(self, layer: int, units: torch.Tensor) -> list[Slice]:
        idx = units.nonzero().flatten()
        out: list[Slice] = []
        for which in ("gate_proj", "up_proj"):
            mod = self.module_name(layer, which)
            out.append(Slice(f"{mod}.weight", 0, idx))
            if bias := self._existing(mod, "bias"):
                out.append(Slice(bias, 0, idx))
        out.append(Slice(f"{self.module_name(layer, 'down_proj')}.weight", 1, idx))
        return out

    def _attn_slices(self, layer: int, heads: torch.Tensor) -> list[Slice]:
        hd = self.head_dim
        q_idx = self._expand(heads.nonzero().flatten(), hd)
        kv_groups = heads.view(self.num_kv_heads, self.group_size).all(dim=1)
        kv_idx = self._expand(kv_groups.nonzero().flatten(), hd)
        out: list[Slice] = []
        q = self.module_name(layer, "q_proj")
        out.append(Slice(f"{q}.weight", 0, q_idx))
        if bias := self._existing(q, "bias"):
            out.append(Slice(bias, 0, q_idx))
        for which in ("k_proj", "v_proj"):
            mod = self.module_name(layer, which)
            out.append(Slice(f"{mod}.weight", 0, kv_idx))
            if bias := self._existing(mod, "bias"):
                out.append(Slice(bias, 0, kv_idx))
        out.append(Slice(f"{self.module_name(layer, 'o_proj')}.weight", 1, q_idx))
        return out

    def head_channels(self, heads: torch.Tensor) -> torch.Tensor:
        """Head ids -> sorted channel ids of those heads (q rows / o columns)."""
        return self._expand(heads, self.head_dim)

    @staticmethod
    def _expand(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
        offs = torch.arange(head_dim)
        return (heads.to(torch.long)[:, None] * head_dim + offs[None, :]).flatten()

    def unit_param_names(self) -> set[str]:
        """Every parameter that units own (the rest: embeddings, norms, lm_head)."""
        names: set[str] = set()
        for layer in range(self.num_layers):
            for kind in KINDS:
                full = torch.ones(self.num_units(kind), dtype=torch.bool)
                names.update(s.name for s in self.slices(layer, kind, full))
        return names

    def describe(self) -> dict[str, Any]:
        """Sizes for file headers and reports."""
        return {
            "num_layers": self.num_layers,
            "intermediate_size": self.intermediate_size,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "params_per_neuron": self.params_per_neuron,
            "params_per_head": self.params_per_head,
        }
