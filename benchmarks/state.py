"""The realistic benchmark state: a small transformer's weights plus a genuine Adam state.

The model is a GPT-like stack (token and position embeddings, per layer: two layer norms, a fused
QKV projection, an output projection and a 4x MLP, all with biases; a final layer norm and an
untied output head). Its width is solved so that parameters + Adam's ``exp_avg`` and
``exp_avg_sq`` reach the requested byte count. One real forward/backward and one real
``torch.optim.Adam`` step fill the optimizer state, so its ``state_dict`` is the genuine article
(including the ``step`` tensors and the ``param_groups``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 4096
CONTEXT = 512
LAYERS = 4


class Block(nn.Module):
    """One pre-norm transformer block (single-head attention; only the shapes matter here)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attn)
        out: torch.Tensor = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return out


class TinyGPT(nn.Module):
    """A small decoder-only transformer whose width is chosen to reach a state size."""

    def __init__(self, width: int, layers: int = LAYERS) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Embedding(CONTEXT, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # type: ignore[no-any-return]


def width_for(nbytes: int, layers: int = LAYERS) -> int:
    """The model width whose float32 params + Adam moments come closest to ``nbytes``."""
    # params(w) = 12 L w^2 + (2 VOCAB + CONTEXT + 13 L + 2) w; state = 3 * 4 bytes * params
    a = 12 * layers
    b = 2 * VOCAB + CONTEXT + 13 * layers + 2
    params = nbytes / 12
    width = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
    return max(8, round(width / 8) * 8)


@dataclass
class BenchState:
    """A live model + optimizer and their state tree ``{"model": ..., "optimizer": ...}``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    state: dict[str, Any]
    nbytes: int
    ntensors: int
    model_nbytes: int
    width: int

    def describe(self) -> dict[str, Any]:
        """JSON facts about the state for the results file."""
        return {
            "bytes": self.nbytes,
            "model_bytes": self.model_nbytes,
            "tensors": self.ntensors,
            "model_tensors": len(self.state["model"]),
            "dtype": "float32 (optimizer step counters: float32 scalars)",
            "model": f"TinyGPT width={self.width} layers={LAYERS} vocab={VOCAB} context={CONTEXT}",
        }


def tensors_of(state: Any) -> list[torch.Tensor]:
    """Every tensor leaf of a nested state, in tree order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in tensors_of(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in tensors_of(v)]
    return []


def build_model(nbytes: int, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A TinyGPT sized for ``nbytes`` and an Adam optimizer after one genuine step."""
    torch.manual_seed(seed)
    model = TinyGPT(width_for(nbytes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, VOCAB, (2, 16))
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def make_state(nbytes: int, seed: int = 0) -> BenchState:
    """Builds the benchmark state of about ``nbytes`` bytes of tensors."""
    model, optimizer = build_model(nbytes, seed)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    tensors = tensors_of(state)
    model_nbytes = sum(t.nbytes for t in tensors_of(state["model"]))
    return BenchState(
        model=model,
        optimizer=optimizer,
        state=state,
        nbytes=sum(t.nbytes for t in tensors),
        ntensors=len(tensors),
        model_nbytes=model_nbytes,
        width=width_for(nbytes),
    )


def flatten_for_safetensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The state as safetensors needs it: flat ``{key.path: tensor}`` plus JSON param groups."""
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    for pid, slots in state["optimizer"]["state"].items():
        for name, tensor in slots.items():
            flat[f"optimizer.state.{pid}.{name}"] = tensor
    return flat, json.dumps(state["optimizer"]["param_groups"])


def unflatten_from_safetensors(flat: dict[str, torch.Tensor], groups: str) -> dict[str, Any]:
    """The inverse of :func:`flatten_for_safetensors`."""
    model: dict[str, torch.Tensor] = {}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        if key.startswith("model."):
            model[key[len("model.") :]] = tensor
        else:
            _, _, pid, name = key.split(".", 3)
            opt_state.setdefault(int(pid), {})[name] = tensor
    optimizer = {"state": opt_state, "param_groups": json.loads(groups)}
    return {"model": model, "optimizer": optimizer}


def load_into(bench: BenchState, state: dict[str, Any]) -> None:
    """Loads a restored state into the live model and optimizer (the user's usual path)."""
    bench.model.load_state_dict(state["model"])
    bench.optimizer.load_state_dict(state["optimizer"])


def touch(tensors: list[torch.Tensor]) -> float:
    """Reads one float32 per 4 KiB page of every tensor, so lazily mapped data is really read."""
    total = 0.0
    for t in tensors:
        flat = t.reshape(-1)
        if flat.numel():
            total += float(flat[:: max(1, 4096 // t.element_size())].float().sum())
    return total
