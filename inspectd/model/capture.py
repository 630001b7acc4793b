"""Record only the attention ReAL needs, while generation runs on sdpa.

``output_attentions=True`` forces eager attention and keeps every layer's full
attention matrix (measured on a 24M model with 1024 image tokens: about 2x time and memory). Instead, a custom
attention function is registered with transformers: it runs the stock sdpa
kernel for the layer's output and, on decode steps only (one query row),
recomputes that row's softmax over all keys and keeps the weights at the
requested key positions (the image tokens and the prompt's anomaly words),
averaged over heads. The same name is registered with the mask interface,
otherwise transformers builds no mask for an unknown implementation and
left-padded rows silently attend to padding.

Which recorder is active is held in a ContextVar, so a model is shared safely
and code outside a ``recording`` block runs plain sdpa.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CAPTURE_ATTENTION = "inspectd_capture"

_ACTIVE: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar(
    "inspectd_attention_recorder", default=None
)


@dataclass(frozen=True)
class CaptureTargets:
    """Key positions to record for each row of a (left-padded) batch.

    ``positions`` is (batch, K) of indices into the padded sequence; ``valid``
    marks which of them are real (rows have different numbers of image tokens).
    """

    positions: torch.Tensor
    valid: torch.Tensor


class AttentionRecorder:
    """Collects, per decode step and text layer, head-averaged weights (batch, K).

    With ``query_positions`` (batch, Q) it records instead, in one full
    forward pass, the rows of those query positions: what a teacher-forced
    pass over a finished reply needs (the CGRO consistency reward).
    """

    def __init__(self, targets: CaptureTargets, num_layers: int, query_positions: torch.Tensor | None = None) -> None:
        self.targets = targets
        self.num_layers = num_layers
        self.query_positions = query_positions
        self._steps: list[list[torch.Tensor | None]] = []
        self._rows: list[torch.Tensor | None] = [None] * num_layers

    def _target_weights(
        self, queries: torch.Tensor, key: torch.Tensor, mask_rows: torch.Tensor | None, scaling: float | None
    ) -> torch.Tensor:
        """Head-averaged softmax of ``queries`` (B, H, Q, D) over all keys, kept at the targets: (B, Q, K).

        ``mask_rows`` (B, 1, Q, L) is a boolean mask (True = may attend) or an
        additive float mask, as transformers' mask functions build them.
        """
        batch, heads, count, dim = queries.shape
        kv_heads, length = key.shape[1], key.shape[2]
        # Grouped-query attention without repeating keys: (B, Hkv, G, Q, D) @ (B, Hkv, 1, D, L).
        grouped = queries.float().reshape(batch, kv_heads, heads // kv_heads, count, dim)
        logits = torch.matmul(grouped, key.float()[:, :, None].transpose(-1, -2)).reshape(batch, heads, count, length)
        logits = logits * (scaling if scaling is not None else dim**-0.5)
        if mask_rows is not None:
            if mask_rows.dtype == torch.bool:
                logits = logits.masked_fill(~mask_rows, float("-inf"))
            else:
                logits = logits + mask_rows.float()
        weights = torch.softmax(logits, dim=-1).mean(dim=1)
        positions = self.targets.positions.to(weights.device)[:, None, :].expand(batch, count, -1)
        return torch.gather(weights, 2, positions) * self.targets.valid.to(weights.device)[:, None, :]

    def observe_rows(self, layer_idx, query, key, attention_mask, scaling) -> None:
        """Weights of the chosen query rows of a full pass: (batch, Q, K) per layer."""
        batch, heads, _, dim = query.shape
        length = key.shape[2]
        rows = self.query_positions.to(query.device)
        picked = torch.gather(query, 2, rows[:, None, :, None].expand(batch, heads, rows.shape[1], dim))
        allowed = (torch.arange(length, device=query.device)[None, None, :] <= rows[:, :, None])[:, None]
        mask_rows = allowed
        if attention_mask is not None:
            given = torch.gather(attention_mask[:, :1, :, :length].expand(batch, 1, -1, -1), 2,
                                 rows[:, None, :, None].expand(batch, 1, rows.shape[1], length))
            mask_rows = allowed & given if given.dtype == torch.bool else given.masked_fill(~allowed, float("-inf"))
        self._rows[layer_idx] = self._target_weights(picked, key, mask_rows, scaling)

    def rows(self) -> torch.Tensor:
        """(layers, batch, Q, K) from the last full pass."""
        if any(r is None for r in self._rows):
            raise RuntimeError("attention capture saw no full pass for some layers")
        return torch.stack(self._rows)

    def observe(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None,
    ) -> None:
        mask_rows = None if attention_mask is None else attention_mask[:, :1, -1:, : key.shape[2]]
        picked = self._target_weights(query, key, mask_rows, scaling)[:, 0]
        if layer_idx == 0 or not self._steps:
            self._steps.append([None] * self.num_layers)
        self._steps[-1][layer_idx] = picked

    def stacked(self) -> torch.Tensor:
        """All decode steps as (steps, layers, batch, K) on the CPU, float32."""
        if not self._steps:
            batch, k = self.targets.positions.shape
            return torch.zeros(0, self.num_layers, batch, k)
        missing = [i for i, step in enumerate(self._steps) if any(layer is None for layer in step)]
        if missing:
            raise RuntimeError(f"attention capture missed layers at decode steps {missing[:5]}")
        return torch.stack([torch.stack(step) for step in self._steps]).float().cpu()


def capture_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    output = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    recorder = _ACTIVE.get()
    if recorder is not None:
        if recorder.query_positions is not None and query.shape[2] > 1:
            recorder.observe_rows(module.layer_idx, query, key, attention_mask, scaling)
        elif recorder.query_positions is None and query.shape[2] == 1:
            recorder.observe(module.layer_idx, query, key, attention_mask, scaling)
    return output


def register_capture_attention() -> None:
    """Make the capture implementation known to transformers (idempotent)."""
    AttentionInterface.register(CAPTURE_ATTENTION, capture_attention_forward)
    AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)


def enable_capture(model: torch.nn.Module) -> None:
    """Route the language model's attention through capture; vision keeps sdpa."""
    register_capture_attention()
    model.set_attn_implementation({"": CAPTURE_ATTENTION, "text_config": CAPTURE_ATTENTION, "vision_config": "sdpa"})


@contextmanager
def recording(recorder: AttentionRecorder) -> Iterator[AttentionRecorder]:
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)
