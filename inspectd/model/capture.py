"""Record only the attention ReAL needs, at the cost of the attention the model computes anyway.

``output_attentions=True`` forces eager attention and keeps every layer's full
attention matrix (measured on a 24M model with 1024 image tokens: about 2x time
and memory). Instead, a custom attention function is registered with
transformers. Outside a ``recording`` block, and for the prompt's prefill, it
is the stock sdpa kernel. On a decode step (one query row) of a recorded
layer it computes that row's attention itself, in one pass: q·Kᵀ, softmax,
weights·V - the work sdpa would do - and keeps the softmax weights at the
requested key positions (image tokens and the prompt's anomaly words),
averaged over heads, in a buffer preallocated for ``max_steps`` decode steps.
No second q·Kᵀ, no host synchronisation and no Python allocation per step
beyond the kernels' own outputs; layers outside ``layers`` are not recorded
(they run sdpa). The same name is registered with the mask interface,
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
    """Collects, per decode step and recorded text layer, head-averaged weights (batch, K).

    ``layers`` (default: all) are the layers whose weights are kept, in order;
    ``max_steps`` sizes the buffer (generate's max_new_tokens). With
    ``query_positions`` (batch, Q) it records instead, in one full forward
    pass, the rows of those query positions: what a teacher-forced pass over a
    finished reply needs (the CGRO consistency reward).
    """

    def __init__(self, targets: CaptureTargets, num_layers: int, query_positions: torch.Tensor | None = None,
                 layers: range | None = None, max_steps: int = 256) -> None:
        self.targets = targets
        self.num_layers = num_layers
        self.query_positions = query_positions
        self.layers = layers if layers is not None else range(num_layers)
        self._slot = {layer: i for i, layer in enumerate(self.layers)}
        self._first = self.layers[0] if len(self.layers) else None
        self.max_steps = max_steps
        self._buffer: torch.Tensor | None = None  # (max_steps, len(layers), batch, K) float32, on the model's device
        self._positions: torch.Tensor | None = None  # (batch, K) on the device
        self._valid: torch.Tensor | None = None
        self._steps = 0
        self._rows: list[torch.Tensor | None] = [None] * num_layers

    def buffer_bytes(self) -> int:
        """What the decode-step buffer holds: steps x layers x batch x K x 4 bytes."""
        batch, k = self.targets.positions.shape
        return self.max_steps * len(self.layers) * batch * k * 4

    def records(self, layer_idx: int) -> bool:
        return layer_idx in self._slot

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

    def _ready(self, device: torch.device) -> None:
        if self._buffer is None:
            batch, k = self.targets.positions.shape
            self._buffer = torch.zeros(self.max_steps, len(self.layers), batch, k, device=device)
            self._positions = self.targets.positions.to(device)
            self._valid = self.targets.valid.to(device=device, dtype=torch.float32)

    def attend(self, module, query, key, value, attention_mask, scaling) -> torch.Tensor:
        """One decode step of a recorded layer: the attention output (batch, 1, heads, dim), and its weights kept."""
        batch, heads, _, dim = query.shape
        kv_heads, length = key.shape[1], key.shape[2]
        self._ready(query.device)
        if module.layer_idx == self._first:
            self._steps += 1
            if self._steps > self.max_steps:  # more steps than announced: grow (never on the runtime's path)
                self._buffer = torch.cat([self._buffer, torch.zeros_like(self._buffer)])
                self.max_steps *= 2
        # Grouped-query attention without repeating keys: (B, Hkv, G, D) @ (B, Hkv, D, L) -> (B, Hkv, G, L).
        grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
        logits = torch.matmul(grouped, key.transpose(-1, -2))
        logits = logits * (scaling if scaling is not None else dim**-0.5)
        if attention_mask is not None:
            mask = attention_mask[:, :, -1:, :length]  # (B, 1, 1, L): shared by every head
            logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
        weights = torch.softmax(logits, dim=-1, dtype=torch.float32)
        output = torch.matmul(weights.to(value.dtype), value)  # (B, Hkv, G, D)
        kept = weights.reshape(batch, heads, length).mean(dim=1)
        self._buffer[self._steps - 1, self._slot[module.layer_idx]] = torch.gather(kept, 1, self._positions) * self._valid
        return output.reshape(batch, 1, heads, dim)

    def stacked(self) -> torch.Tensor:
        """All decode steps as (steps, recorded layers, batch, K) on the CPU, float32 (one device->host copy)."""
        if self._buffer is None:
            batch, k = self.targets.positions.shape
            return torch.zeros(0, len(self.layers), batch, k)
        return self._buffer[:self._steps].cpu()


def capture_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    recorder = _ACTIVE.get()
    if (recorder is not None and recorder.query_positions is None and query.shape[2] == 1
            and recorder.records(module.layer_idx) and not module.training
            and all(kwargs.get(name) is None for name in ("sinks", "softcap", "position_bias"))):
        return recorder.attend(module, query, key, value, attention_mask, scaling), None
    output = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if recorder is not None and recorder.query_positions is not None and query.shape[2] > 1:
        recorder.observe_rows(module.layer_idx, query, key, attention_mask, scaling)
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
