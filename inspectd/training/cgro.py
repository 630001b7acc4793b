"""CGRO: GRPO with format, accuracy and consistency rewards, LoRA on the language model.

Image-level labels only; where rows carry a defect drawn onto a good photo, its exact mask adds a
localization reward (still no human pixel label). Uses trl's GRPOTrainer (it runs on the CPU with the
tiny model) and peft; the vision encoder stays frozen. Training
code: the daemon never imports it.
"""

from __future__ import annotations

from pathlib import Path


from inspectd.bundle.manifest import PromptSpec
from inspectd.errors import InspectdError
from inspectd.model.packed_vision import use_packed_vision
from inspectd.real.params import RealParams
from inspectd.training.cgro_config import CgroSettings
from inspectd.training.rewards import (
    ConsistencyReward,
    LocalizationReward,
    ReplyAttention,
    accuracy_reward,
    format_reward,
)


def check_device(settings: CgroSettings) -> None:
    """A GPU run on a torch without CUDA fails here, naming the fix, not a minute later inside trl."""
    import torch

    if not settings.use_cpu and not torch.cuda.is_available():
        raise InspectdError(
            f"cgro.use_cpu is false but this torch ({torch.__version__}) sees no CUDA GPU: install a CUDA build "
            "(make setup TORCH_SPEC=\"torch==2.13.0 --index-url <your CUDA wheel index>\"), check nvidia-smi, "
            "or set cgro.use_cpu: true")


def load_policy_base(folder: Path, settings: CgroSettings):
    """The model CGRO trains LoRA weights on, its frozen base weights in ``settings.precision()``.

    bfloat16 (a GPU's default) halves a float32 load (a 7B: 16.6 GB instead of 33 GB); nf4 quarters it again
    (QLoRA); peft keeps the LoRA weights, their gradients and AdamW state in float32 whatever the base is.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    check_device(settings)
    precision = settings.precision()
    options: dict = {"local_files_only": True, "use_safetensors": True}
    if precision == "nf4":
        from inspectd.bundle.nf4 import nf4_config

        compute = torch.float32 if settings.use_cpu else torch.bfloat16
        options.update(dtype=compute, device_map="cpu" if settings.use_cpu else {"": torch.cuda.current_device()},
                       quantization_config=nf4_config(compute, double_quant=True))
    else:
        options["dtype"] = torch.float32 if precision == "float32" else torch.bfloat16
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, **options)
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # peft adds the only trainable weights
    return model


def cgro_rows(images_and_labels, prompt: PromptSpec, drawn=()) -> list[dict]:
    """Rows of {prompt (chat with an image part), image, label, mask_id} as trl expects.

    ``drawn``: (image, mask) pairs, defects drawn onto good photos; their rows are anomalous and ``mask_id``
    indexes ``drawn`` (the localization reward reads the mask). Labelled rows have ``mask_id`` -1.
    """
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user_text()}]}]
    rows = [{"prompt": message, "image": image, "label": bool(label), "mask_id": -1}
            for image, label in images_and_labels]
    return rows + [{"prompt": message, "image": image, "label": True, "mask_id": index}
                   for index, (image, _) in enumerate(drawn)]


def build_trainer(model, processor, rows: list[dict], settings: CgroSettings, prompt: PromptSpec, real: RealParams,
                  output_dir: Path, seed: int = 0, masks: list | None = None, generation_kwargs: dict | None = None):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    use_packed_vision(model)  # sampling runs the vision encoder for every prompt
    for parameter in model.model.visual.parameters():
        parameter.requires_grad_(False)
    bf16 = settings.bf16 if settings.bf16 is not None else not settings.use_cpu
    config = GRPOConfig(
        output_dir=str(output_dir),
        max_steps=settings.max_steps,
        # trl counts completions per device and micro-batch, not prompts; one generation batch
        # (batch_size x generations replies) feeds the gradient_accumulation_steps micro-batches of a step
        per_device_train_batch_size=settings.train_micro_batch,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        # one generate call per generation_batch_size prompts: whole groups, so advantages are unchanged
        steps_per_generation=settings.generation_prompts * settings.generations // settings.train_micro_batch,
        num_generations=settings.generations,
        max_completion_length=settings.max_completion_length,
        learning_rate=settings.learning_rate,
        beta=settings.kl_beta,
        temperature=settings.temperature,
        logging_steps=1,
        save_steps=settings.save_steps,
        report_to=[],
        use_cpu=settings.use_cpu,
        # trl defaults to bf16 autocast; on CPUs without bf16 matmul units that made every
        # matmul ~20x slower (profiled: a 3.7M model's step went from 26 s to a few seconds).
        bf16=bf16,
        gradient_checkpointing=settings.gradient_checkpointing,
        seed=seed,
        remove_unused_columns=False,
        disable_tqdm=False,
        generation_kwargs=generation_kwargs,
    )
    attention = ReplyAttention(model, processor, prompt, real, settings.reward_batch_size)
    consistency = ConsistencyReward(attention, settings.consistency)
    rewards = [format_reward, accuracy_reward, consistency]
    if masks:
        rewards.append(LocalizationReward(attention, list(masks), consistency))  # after it: shares its pass
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        peft_config=LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                               target_modules=settings.lora_targets, lora_dropout=0.0),
    )
    attention.model = trainer.model  # rewards read the policy being trained
    return trainer, consistency


def complete_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` that was written to the end (its ``trainer_state.json`` is saved last), or
    None: a run killed while saving leaves a folder transformers would take and fail on."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file())
    return str(steps[-1][1]) if steps else None


def train_cgro(model, processor, rows: list[dict], settings: CgroSettings, prompt: PromptSpec, real: RealParams,
               checkpoints: Path, adapter: Path, seed: int = 0, resume: bool = False,
               masks: list | None = None) -> list[dict]:
    """CGRO from ``rows``; checkpoints every ``save_steps`` under ``checkpoints`` (``resume``: go on from the
    newest); the LoRA adapter is saved to ``adapter``. ``masks``: the drawn defects' masks that rows with a
    ``mask_id`` point at. Returns trl's log history (rewards per step)."""
    trainer, _ = build_trainer(model, processor, rows, settings, prompt, real, checkpoints, seed, masks)
    trainer.train(resume_from_checkpoint=complete_checkpoint(Path(checkpoints)) if resume else None)
    if trainer.accelerator.is_main_process:  # under accelerate launch every process holds the same adapter
        trainer.model.save_pretrained(adapter)
    trainer.accelerator.wait_for_everyone()
    return trainer.state.log_history
