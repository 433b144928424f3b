"""The device/dtype policy every stage reads, with CUDA faked: the exact arguments vLLM and
transformers would be handed on a GPU host (bf16, fp16 without bf16, the local rank's GPU), and
float32 on the CPU where the tiny models' answers must match across engines."""

import json

import pytest
import torch

from medzoo.errors import InvalidValue
from medzoo.models import placement


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA host with bf16 (an A100/H100); `gpu(bf16=False)` makes it a T4."""

    def make(bf16: bool = True):
        monkeypatch.setattr(placement, "cuda_available", lambda: True)
        monkeypatch.setattr(placement, "bf16_supported", lambda: bf16)

    make()
    return make


def _recipe(name="phantom-tiny", *overrides):
    from medzoo.recipe import load_recipe

    return load_recipe(name, list(overrides))


def test_vllm_on_cuda_gets_bf16_for_its_lora_kernels_and_cuda_graphs(gpu):
    from medzoo.bench.plan import engine_settings
    from medzoo.engines.vllm_engine import VLLMSettings, engine_kwargs

    settings = VLLMSettings(enable_lora=True, max_lora_rank=16, max_loras=2, **engine_settings(_recipe(), 900))
    kwargs = engine_kwargs("google/medgemma-4b-it", settings, 2, {}, on_cuda=True)
    assert kwargs["dtype"] == "bfloat16" and kwargs["enforce_eager"] is False
    assert kwargs["enable_lora"] is True and "skip_mm_profiling" not in kwargs
    assert kwargs["max_model_len"] == 2048 and kwargs["limit_mm_per_prompt"] == {"image": 2, "video": 0}
    gpu(bf16=False)
    assert engine_kwargs("m", settings, 1, {}, on_cuda=True)["dtype"] == "float16"


def test_vllm_on_cpu_stays_float32_and_eager():
    from medzoo.engines.vllm_engine import VLLMSettings, engine_kwargs

    kwargs = engine_kwargs("m", VLLMSettings(enable_lora=True), 1, {}, on_cuda=False)
    assert kwargs["dtype"] == "float32" and kwargs["enforce_eager"] is True and kwargs["skip_mm_profiling"] is True


def test_recipe_bench_fields_reach_vllm(gpu):
    from medzoo.bench.plan import engine_settings
    from medzoo.engines.vllm_engine import VLLMSettings, engine_kwargs

    r = _recipe(
        "phantom-tiny",
        "bench.dtype=float16",
        "bench.max_model_len=8192",
        "bench.gpu_memory_utilization=0.5",
        "bench.enforce_eager=true",
    )
    kwargs = engine_kwargs("m", VLLMSettings(**engine_settings(r, 100)), 1, {}, on_cuda=True)
    assert (kwargs["dtype"], kwargs["max_model_len"], kwargs["gpu_memory_utilization"], kwargs["enforce_eager"]) == (
        "float16",
        8192,
        0.5,
        True,
    )
    gpu(bf16=False)
    with pytest.raises(InvalidValue, match="bench.dtype: bfloat16 is not supported by this GPU"):
        engine_kwargs("m", VLLMSettings(dtype="bfloat16"), 1, {}, on_cuda=True)


def test_context_grows_past_the_default_for_long_multi_image_prompts():
    from medzoo.bench.plan import engine_settings

    r = _recipe()
    assert engine_settings(r, 100)["max_model_len"] == 2048  # never below vLLM_engine's default
    assert engine_settings(r, 2 * 980 + 700)["max_model_len"] == 2816  # rounded up to 256


class _Captured(Exception):
    pass


def _capture_from_pretrained(monkeypatch):
    import transformers

    seen = {}

    def fake(path, **kwargs):
        seen.update(kwargs, path=path)
        raise _Captured

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", fake)
    return seen


def test_transformers_engines_load_on_the_local_rank_gpu_in_bf16(gpu, monkeypatch):
    from medzoo.models.loading import load_model

    seen = _capture_from_pretrained(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(_Captured):
        load_model("Qwen/Qwen2.5-VL-7B-Instruct")
    assert seen["dtype"] is torch.bfloat16 and seen["device_map"] == {"": 1}


def test_transformers_on_cpu_loads_float32_without_device_map(monkeypatch):
    from medzoo.models.loading import load_model

    seen = _capture_from_pretrained(monkeypatch)
    with pytest.raises(_Captured):
        load_model("m")
    assert seen["dtype"] is torch.float32 and "device_map" not in seen


def test_qlora_computes_in_train_precision_on_this_ranks_gpu(gpu, monkeypatch):
    from medzoo.adapters import base_training_kwargs
    from medzoo.models.gemma3 import GEMMA3

    r = _recipe("medgemma-kvasir-vqa")  # qlora, train.precision bf16
    monkeypatch.setenv("LOCAL_RANK", "3")
    kwargs = base_training_kwargs(GEMMA3, r.adapter, r.train.precision)
    q = kwargs["quantization_config"]
    assert q.bnb_4bit_compute_dtype is torch.bfloat16 and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert kwargs["device_map"] == {"": 3} and kwargs["dtype"] is torch.bfloat16
    assert "model.vision_tower" in q.llm_int8_skip_modules and "lm_head" in q.llm_int8_skip_modules
    lora = base_training_kwargs(GEMMA3, _recipe("medgemma-kvasir-vqa", "adapter.method=lora").adapter, "bf16")
    assert lora == {"dtype": torch.bfloat16}  # the Trainer (or DDP / DeepSpeed) places a LoRA base
    gpu(bf16=False)  # a T4: bf16 refused with the field named, fp16 computes in fp16
    with pytest.raises(InvalidValue, match="train.precision: bfloat16 is not supported by this GPU; use float16"):
        base_training_kwargs(GEMMA3, r.adapter, "bf16")
    assert (
        base_training_kwargs(GEMMA3, r.adapter, "fp16")["quantization_config"].bnb_4bit_compute_dtype is torch.float16
    )


def test_qlora_on_cpu_keeps_float32_and_no_device_map():
    from medzoo.adapters import base_training_kwargs
    from medzoo.models.qwen_vl import QWEN2_5_VL

    r = _recipe("phantom-tiny-qlora")
    kwargs = base_training_kwargs(QWEN2_5_VL, r.adapter, r.train.precision, on_cuda=False)
    assert kwargs["dtype"] is torch.float32 and "device_map" not in kwargs
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype is torch.float32


def test_merge_keeps_the_bases_own_dtype(tmp_path):
    from medzoo.merge import merge_dtype
    from medzoo.zoo import build

    bf16_base = tmp_path / "hub-like"
    bf16_base.mkdir()
    config = json.loads((build("tiny-qwen2.5-vl") / "config.json").read_text())
    (bf16_base / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    assert merge_dtype(str(bf16_base)) == "bfloat16"  # a bf16 Hub model's merge is the Hub model's size
    assert merge_dtype(str(build("tiny-qwen2.5-vl"))) == "float32"  # the zoo's models are float32
    assert merge_dtype(str(bf16_base), "float32") == "float32"  # asked for
    with pytest.raises(InvalidValue, match="--dtype: expected auto"):
        merge_dtype(str(bf16_base), "int8")


def test_reference_engine_ignores_a_models_sampling_defaults(tmp_path):
    """A Hub model's generation_config.json (here a repetition penalty and sampling) must not change
    the transformers engine's greedy answers: vLLM and llama.cpp ignore it."""
    import shutil

    from test_engines import _prepared

    from medzoo.engines.base import requests_from
    from medzoo.engines.hf_engine import HFEngine
    from medzoo.models.loading import stop_token_ids

    base, prepared = _prepared("phantom-tiny", 3)
    stops = stop_token_ids(base.processor, base.family)
    plain = HFEngine.load(base.path, base.processor, stops).generate(requests_from(prepared), 8)
    odd = tmp_path / "odd"
    shutil.copytree(base.path, odd)
    gen = json.loads((odd / "generation_config.json").read_text()) if (odd / "generation_config.json").exists() else {}
    gen.update(repetition_penalty=50.0, do_sample=True, temperature=5.0, top_k=3)
    (odd / "generation_config.json").write_text(json.dumps(gen))
    assert HFEngine.load(str(odd), base.processor, stops).generate(requests_from(prepared), 8) == plain


def test_a_hub_base_without_recipe_pixels_uses_its_processors_own(tmp_path):
    """A Hub Qwen's processor allows 12845056 pixels; the prompt's stated size must follow it, not the
    zoo's limits or a guessed default."""
    import shutil

    from medzoo.models.loading import recipe_base
    from medzoo.zoo import build

    folder = tmp_path / "hub-qwen"
    shutil.copytree(build("tiny-qwen2.5-vl"), folder)
    config = json.loads((folder / "processor_config.json").read_text())
    config["image_processor"]["size"] = {"shortest_edge": 3136, "longest_edge": 12845056}
    (folder / "processor_config.json").write_text(json.dumps(config))
    base = recipe_base(_recipe("phantom-tiny", f"base={folder}"))
    assert base.image_settings == {"min_pixels": 3136, "max_pixels": 12845056}
    assert base.family.perceived_size(3000, 2000, base.image_settings) == (2996, 1988)  # kept whole, 28-aligned
