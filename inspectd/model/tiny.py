"""Build a real Qwen2.5-VL at tiny size, fully offline.

No hub is reachable on the machines inspectd is built and tested on, so tests,
samples and the shipped demo model start from this: the genuine
``Qwen2_5_VLForConditionalGeneration`` architecture with small dimensions, a
byte-level BPE tokenizer trained here on inspection vocabulary, and the
image-only processor. Everything is deterministic for a given spec and seed.
"""

from __future__ import annotations


import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

from inspectd.bundle.processor import ImageOnlyQwenProcessor
from inspectd.model.tiny_spec import TinySpec

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2.5-VL's chat layout, images-and-text only.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words an inspection model reads and writes; the BPE learns whole-word
# tokens for them, so "yes" and "no" are single tokens as in Qwen's vocabulary.
_VOCABULARY_TEXT = """
You are a helpful assistant. system user assistant
Are there any defects or anomalies in the image? Answer yes or no.
Output the thinking process in <think> </think> and the final answer in <answer> </answer> tags.
<think> </think> <answer>yes</answer> <answer>no</answer> yes no
the surface is clean and uniform with no visible defect
there is a dark spot near the upper left of the surface
a long thin scratch runs across the center of the part
a crack near the lower right edge, a hole near the top, a stain near the bottom
a bright blob, a faint mark, a small pit, a large patch of discoloration
upper lower left right center middle top bottom edge corner border side
dark bright small large thin thick long short faint strong visible clear
scratch spot crack hole stain blob mark pit dent chip fray break blowhole uneven
texture surface part tile metal fabric wood leather grid carpet pattern background
normal anomalous anomaly anomalies defect defects damage damaged irregular region area
the a an of in on at near across along with and or is are there no any this that it
"""


def train_tokenizer(spec: TinySpec) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with Qwen's special tokens and chat template."""
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [_VOCABULARY_TEXT] * 50 + list(spec.extra_corpus)
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    for word in ("yes", "no"):
        if len(tokenizer.encode(word, add_special_tokens=False)) != 1:
            raise RuntimeError(f"tiny tokenizer must encode {word!r} as one token")
    return tokenizer


def build_processor(spec: TinySpec) -> ImageOnlyQwenProcessor:
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    return ImageOnlyQwenProcessor(
        image_processor=image_processor, tokenizer=train_tokenizer(spec), chat_template=CHAT_TEMPLATE
    )


def build_config(spec: TinySpec, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig:
    head_dim = spec.text_hidden // spec.text_heads
    # mrope sections (temporal, height, width) must sum to head_dim / 2.
    half = head_dim // 2
    mrope = [half - 2 * (half // 4 + half // 8), half // 4 + half // 8, half // 4 + half // 8]
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_intermediate,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_intermediate,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text_hidden,
            "fullatt_block_indexes": list(spec.fullatt_blocks),
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        tie_word_embeddings=False,
    )


def build_tiny_model(spec: TinySpec = TinySpec()) -> tuple[Qwen2_5_VLForConditionalGeneration, ImageOnlyQwenProcessor]:
    """Return an untrained tiny Qwen2.5-VL and its processor, seeded."""
    processor = build_processor(spec)
    config = build_config(spec, processor.tokenizer)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    try:
        model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.do_sample = False
    model.eval()
    return model, processor


def tiny_model_card(spec: TinySpec, name: str) -> str:
    params = spec.__dict__
    rows = "\n".join(f"| {k} | {v} |" for k, v in params.items() if k != "extra_corpus")
    return f"""# {name}

An **untrained** Qwen2.5-VL built at tiny size by `inspectd.model.tiny` (random
weights, seed {spec.seed}). Its verdicts, reasoning and maps mean nothing: it
exists so that tests, benchmarks and the plumbing of inspectd run on a real
Qwen2.5-VL architecture without downloading weights.

| setting | value |
|---|---|
{rows}
"""


def save_tiny_bundle(destination, spec: TinySpec = TinySpec(), name: str = "tiny-random"):
    """Build the tiny model and save it as a verified bundle; returns the manifest."""
    from inspectd.bundle.manifest import BundleManifest
    from inspectd.bundle.save import save_bundle
    from inspectd.real.params import RealParams

    model, processor = build_tiny_model(spec)
    manifest = BundleManifest(
        name=name,
        base_model="inspectd tiny Qwen2.5-VL (random init)",
        quantization="none",
        dtype="float32",
        max_new_tokens=64,
        real=RealParams(layer_start=0),
    )
    return save_bundle(model, processor, destination, manifest, tiny_model_card(spec, name))
