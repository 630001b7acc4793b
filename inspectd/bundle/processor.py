"""Qwen2.5-VL processor without the video half.

transformers only builds Qwen's video processor when torchvision is installed,
and torchvision's registry builds do not import beside the pinned CPU torch.
inspectd never feeds video, so this processor takes an image processor and a
tokenizer only. Load it with ``ImageOnlyQwenProcessor.from_pretrained``:
``AutoProcessor`` silently returns just the tokenizer for a subclass.
"""

from __future__ import annotations

from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class ImageOnlyQwenProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor that needs (and saves) no video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        kwargs.pop("video_processor", None)
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        # Skip Qwen2_5_VLProcessor.__init__, which insists on a video processor.
        super(Qwen2_5_VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template)
