"""`medzoo export --gguf`: llama.cpp's converter + quantiser, mmproj, Modelfile, and the parity check
against the merged transformers model, for the Qwen2.5-VL and Gemma 3 families."""

import json

import pytest


def test_modelfile_keeps_vision_and_the_training_template():
    from medzoo.export import modelfile
    from medzoo.models.registry import get_family

    qwen = modelfile(get_family("qwen2_5_vl"), "m-q8_0.gguf", "mmproj-m-f16.gguf", "You are a helpful assistant.")
    assert "FROM ./m-q8_0.gguf\nFROM ./mmproj-m-f16.gguf" in qwen, (
        "a separate mmproj must stay in the Modelfile or Ollama loses vision"
    )
    assert 'PARAMETER stop "<|im_end|>"' in qwen and "PARAMETER temperature 0" in qwen
    assert "REQUIRES 0.30.0" in qwen and "OLLAMA_GO_TEMPLATE=0" in qwen
    assert "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n" in qwen
    assert 'SYSTEM """You are a helpful assistant."""' in qwen
    gemma = modelfile(get_family("gemma3"), "g.gguf", "mmproj-g.gguf", None)
    assert 'PARAMETER stop "<end_of_turn>"' in gemma and "<start_of_turn>model\n" in gemma and "SYSTEM" not in gemma


@pytest.mark.parametrize("zoo_model", ["tiny-qwen2.5-vl", "tiny-gemma3"])
def test_ollama_check_renders_the_modelfile_template_as_ollama_does(zoo_model):
    """Ollama puts the image as a bare tag before the text: that matches training for Qwen (llama.cpp
    adds the vision start/end tokens itself) and misses Gemma 3's blank lines around the image, and
    Ollama's 1024-token image floor for Qwen differs from the tiny model's 16-token training."""
    from medzoo.export.ollama import default_system, ollama_differences
    from medzoo.models.loading import family_of, load_processor
    from medzoo.prompts import render
    from medzoo.zoo import build

    path = str(build(zoo_model))
    processor, family = load_processor(path), family_of(path)
    text = "What is the size of the polyp?"
    prompt = render(processor, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}])
    found = ollama_differences(family, prompt, default_system(processor), text, (4, 16))
    if family.name == "gemma3":
        assert len(found) == 1 and "OLLAMA_GO_TEMPLATE=0" in found[0] and "'\\n\\n" in found[0], found
    else:
        assert len(found) == 1 and "--image-min-tokens 1024" in found[0] and "4-16 image tokens" in found[0], found
        assert ollama_differences(family, prompt, default_system(processor), text, (256, 1280)) == []
        assert ollama_differences(family, prompt, "another system prompt", text, None), "a system prompt change shows"


def test_gemma3_gguf_template_pads_images_like_the_hf_processor():
    """llama.cpp front ends pass each image to the template as a text part holding the media
    marker; the template must put HF's "\n\n" around it (Gemma's template trims text parts)."""
    from medzoo.export import render_with_template
    from medzoo.export.gguf_convert import gemma3_llama_cpp_template
    from medzoo.models.loading import load_processor
    from medzoo.zoo import build

    template = load_processor(str(build("tiny-gemma3"))).chat_template
    gguf_template = gemma3_llama_cpp_template(template)
    served = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "<__media__>"}, {"type": "text", "text": "Is there a polyp?"}],
        }
    ]
    assert (
        render_with_template(gguf_template, served, bos_token="<bos>")
        == "<bos><start_of_turn>user\n\n\n<__media__>\n\nIs there a polyp?<end_of_turn>\n<start_of_turn>model\n"
    )
    # llama-server's marker is random per process and comes with the text as one string
    server = [{"role": "user", "content": "<__media_x7Q2__>Is there a polyp?"}]
    assert render_with_template(gguf_template, server).startswith("<start_of_turn>user\n\n\n<__media_x7Q2__>\n\nIs")
    # the training rendering (image items) is untouched
    trained = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a polyp?"}]}]
    assert render_with_template(gguf_template, trained) == render_with_template(template, trained)


def test_merged_tokenizer_config_names_the_special_tokens(tmp_path):
    """transformers 5 leaves added_tokens_decoder out of tokenizer_config.json, and llama.cpp's
    converter then types <start_of_turn> as ordinary text (the GGUF spelled it out, 10% parity)."""
    from medzoo.merge import write_added_tokens_decoder
    from medzoo.models.loading import load_processor
    from medzoo.zoo import build

    processor = load_processor(str(build("tiny-gemma3")))
    processor.save_pretrained(str(tmp_path))
    assert "added_tokens_decoder" not in json.loads((tmp_path / "tokenizer_config.json").read_text())
    write_added_tokens_decoder(tmp_path, processor.tokenizer)
    decoder = json.loads((tmp_path / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    turn = processor.tokenizer.convert_tokens_to_ids("<start_of_turn>")
    assert decoder[str(turn)] == {
        "content": "<start_of_turn>",
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def test_card_and_export_readme_give_the_same_runnable_commands():
    """The model card's llama.cpp lines name the export's files, keep -nr (AMX crash) and the image
    token budget (llama.cpp's Qwen-VL default resizes differently from training)."""
    from medzoo.card import _gguf_commands
    from medzoo.recipe import load_recipe

    parity = {
        "mmproj": "mmproj-phantom-tiny-f16.gguf",
        "image_tokens": [4, 16],
        "quantizations": [
            {"quant": "f16", "file": "phantom-tiny-f16.gguf"},
            {"quant": "q8_0", "file": "phantom-tiny-q8_0.gguf"},
        ],
    }
    block = _gguf_commands(load_recipe("phantom-tiny"), parity)
    assert "llama-mtmd-cli -m phantom-tiny-q8_0.gguf --mmproj mmproj-phantom-tiny-f16.gguf" in block
    assert block.count("-nr --image-min-tokens 4 --image-max-tokens 16") == 2
    assert "ollama create phantom-tiny -f Modelfile" in block
    gemma = _gguf_commands(load_recipe("phantom-tiny-gemma"), {**parity, "image_tokens": None})
    assert "--image-min-tokens" not in gemma and "-nr" in gemma


@pytest.mark.parametrize("recipe_name", ["phantom-tiny", "phantom-tiny-gemma"])
def test_answer_margin_is_the_models_lead_at_the_first_differing_token(recipe_name):
    """The parity gate excuses f16 answers that differ only where the merged model was nearly
    undecided; the margin must be read at the right position, with the image in context."""
    import torch

    from medzoo.data.sources import first_rows
    from medzoo.export import answer_margin
    from medzoo.inference import prepare
    from medzoo.models.loading import load_model, recipe_base
    from medzoo.recipe import load_recipe, prompt_settings

    recipe = load_recipe(recipe_name, ["data.n_train=8", "data.n_val=4"])  # the test split does not depend on them
    base = recipe_base(recipe)
    proc, tok = base.processor, base.processor.tokenizer
    _, rows = first_rows(recipe.data, "test", 1)
    prepared = prepare(rows, proc, base.family, prompt_settings(recipe), recipe.prompts.train_mode, base.image_settings)
    prompt, images = prepared.prompts[0], prepared.images[0]
    model = load_model(base.path)
    stop = tok.convert_tokens_to_ids(base.family.end_of_turn)

    # Computed independently: the logits after "yes" (prompt and image through the processor).
    with torch.inference_mode():
        logits = model(**proc(text=[prompt + "yes"], images=[images], return_tensors="pt")).logits[0, -1]
    yes, no = tok(" yes", add_special_tokens=False).input_ids[0], tok(" no", add_special_tokens=False).input_ids[0]
    expected = float(logits[yes] - logits[no])

    args = (model, proc, prompt, images)
    assert answer_margin(*args, "yes yes", "yes no", stop) == pytest.approx(expected, abs=1e-3)
    assert answer_margin(*args, "yes no", "yes yes", stop) == pytest.approx(-expected, abs=1e-3)
    assert answer_margin(*args, "yes", "yes", stop) == 0.0


def test_card_vllm_section_serves_the_adapter_as_lora_or_says_why_not(tmp_path):
    """The card's vLLM command serves the adapter as LoRA with its rank; an adapter vLLM cannot load
    as LoRA (modules_to_save) gets the reason and the merge route instead of a command that drops it."""
    import torch
    from safetensors.torch import save_file

    from medzoo.card import _vllm_section
    from medzoo.recipe import load_recipe

    recipe = load_recipe("phantom-tiny", [f"run_dir={tmp_path}"])
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file(
        {"base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, 64)},
        str(adapter / "adapter_model.safetensors"),
    )
    config = {"peft_type": "LORA", "r": 8, "modules_to_save": None}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    text = _vllm_section(recipe, "BASE")
    assert "vllm serve BASE" in text and "--lora-modules 'tuned=<downloaded adapter folder>'" in text, text
    assert "--max-lora-rank 8" in text and "--enable-tower-connector-lora" not in text
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["lm_head"]}))
    text = _vllm_section(recipe, "BASE")
    assert "```bash" not in text and "modules_to_save (lm_head)" in text and "medzoo merge phantom-tiny" in text
