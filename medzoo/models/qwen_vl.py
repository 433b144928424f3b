"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: dynamic-resolution vision tower + Qwen language model.

Images are resized by `smart_resize` to multiples of patch * merge (28 for Qwen2/2.5-VL, 32 for
Qwen3-VL) within [min_pixels, max_pixels]; each merged 2x2 patch group becomes one `<|image_pad|>`.
"""

from __future__ import annotations

import math
from pathlib import Path

from medzoo.models.family import Family, scale_output_layer
from medzoo.models.tokenizers import QWEN3_EXTRA_TOKENS, build_qwen_tokenizer

QWEN_IMAGE_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

# The chat template Qwen ships with Qwen2-VL / Qwen2.5-VL (chat_template.json), verbatim.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3-VL's template (Qwen/Qwen3-VL-4B-Instruct) reduced to what medzoo renders: no default
# system prompt, plain image/video/text turns; tool-call and thinking branches are left out.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}{%- else %}"
    "{%- for content in messages[0].content %}{%- if 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}"
    "{%- endif %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}{%- if message.role != 'system' %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}{%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content.type == 'video' or 'video' in content %}{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}{{- 'Video ' ~ video_count.value ~ ': ' }}{%- endif %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Tiny shapes: 112 px inputs -> 8x8 patches of 14 -> 16 image tokens after the 2x2 merge.
TINY_QWEN_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
TINY_QWEN3_PIXELS = {"min_pixels": 64 * 64, "max_pixels": 128 * 128}
TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,  # head_dim 32: vLLM's CPU attention has no kernel for head_dim 16
    num_key_value_heads=1,
    max_position_embeddings=4096,
    vocab_size=151936,
)
# The demo model (phantom-tiny) is wider and deeper: "which quadrant" and "how many" need the LM
# to combine image tokens by position, which a 2 x 64 LM could not learn (69% held out; 4 x 128
# with 10k examples: 91%, see Learning in benchmarks/RESULTS.md). Heads stay at head_dim 32.
TINY_QWEN2_5_TEXT = dict(TINY_TEXT, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4)
OUTPUT_STD = 1.0  # see family.scale_output_layer


def smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen's resize rule (the same arithmetic as transformers' smart_resize), without importing it."""
    h_bar, w_bar = round(h / factor) * factor, round(w / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        h_bar = max(factor, math.floor(h / beta / factor) * factor)
        w_bar = max(factor, math.floor(w / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        h_bar, w_bar = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return h_bar, w_bar


def _perceived(factor: int):
    def perceived(w: int, h: int, settings: dict) -> tuple[int, int]:
        ph, pw = smart_resize(
            h, w, factor, settings.get("min_pixels", 56 * 56), settings.get("max_pixels", 28 * 28 * 1280)
        )
        return pw, ph

    return perceived


def _save_processor(folder: Path, arch: str, tok, pixels: dict, patch: int, template: str) -> None:
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=patch, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=patch, merge_size=2, temporal_patch_size=2)
    if arch == "qwen2_vl":
        from transformers import Qwen2VLProcessor as Proc
    elif arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor as Proc
    else:
        from transformers import Qwen3VLProcessor as Proc
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        video_processor = Qwen3VLVideoProcessor(size=size, patch_size=patch, merge_size=2, temporal_patch_size=2)
    proc = Proc(image_processor=image_processor, tokenizer=tok, video_processor=video_processor, chat_template=template)
    proc.save_pretrained(folder)


def _finish(model, folder: Path, seed: int) -> None:
    import torch

    torch.manual_seed(seed + 1)
    scale_output_layer(model, OUTPUT_STD)
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.save_pretrained(folder)


def build_tiny_qwen2_vl(folder: Path, seed: int) -> None:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        # mrope_section must sum to head_dim / 2 (32 / 2 = 16), in Qwen's 2:3:3 ratio.
        text_config=dict(
            **TINY_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}
        ),
        # llama.cpp's mmproj converter needs depth >= 3 for Qwen2-VL.
        vision_config=dict(depth=3, embed_dim=64, hidden_size=64, mlp_ratio=2, num_heads=4, patch_size=14),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg)
    _finish(model, folder, seed)
    _save_processor(folder, "qwen2_vl", build_qwen_tokenizer(), TINY_QWEN_PIXELS, 14, QWEN2_VL_CHAT_TEMPLATE)


def build_tiny_qwen2_5_vl(folder: Path, seed: int) -> None:
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            **TINY_QWEN2_5_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}
        ),
        vision_config=dict(
            depth=3,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            out_hidden_size=TINY_QWEN2_5_TEXT["hidden_size"],  # the merger projects into the LM's width
            patch_size=14,
            window_size=56,
            fullatt_block_indexes=[2],
        ),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    _finish(model, folder, seed)
    _save_processor(folder, "qwen2_5_vl", build_qwen_tokenizer(), TINY_QWEN_PIXELS, 14, QWEN2_VL_CHAT_TEMPLATE)


def build_tiny_qwen3_vl(folder: Path, seed: int) -> None:
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    cfg = Qwen3VLConfig(
        text_config=dict(
            **TINY_TEXT,
            head_dim=32,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [4, 6, 6],
                "mrope_interleaved": True,
            },
        ),
        vision_config=dict(
            depth=3,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            out_hidden_size=64,
            patch_size=16,
            num_position_embeddings=64,
            deepstack_visual_indexes=[1],
        ),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(cfg)
    _finish(model, folder, seed)
    tok = build_qwen_tokenizer(extra_tokens=QWEN3_EXTRA_TOKENS)
    _save_processor(folder, "qwen3_vl", tok, TINY_QWEN3_PIXELS, 16, QWEN3_VL_CHAT_TEMPLATE)


def _qwen_family(name: str, factor: int, build, pixels: dict) -> Family:
    """The Qwen families differ only in resize factor (patch x merge), builder and tiny pixels."""
    return Family(
        name=name,
        model_types=(name,),
        image_tokens=QWEN_IMAGE_TOKENS,
        end_of_turn="<|im_end|>",
        vision_prefixes=("model.visual",),
        language_prefix="model.language_model",
        perceived_size=_perceived(factor),
        build_tiny=build,
        tiny_image_settings=pixels,
    )


QWEN2_VL = _qwen_family("qwen2_vl", 28, build_tiny_qwen2_vl, TINY_QWEN_PIXELS)
QWEN2_5_VL = _qwen_family("qwen2_5_vl", 28, build_tiny_qwen2_5_vl, TINY_QWEN_PIXELS)
QWEN3_VL = _qwen_family("qwen3_vl", 32, build_tiny_qwen3_vl, TINY_QWEN3_PIXELS)
