"""Multi-process finishing of a run without DeepSpeed or a GPU: the held-out evaluation shared by
every rank (2 gloo processes on the CPU), the adapter saved from gathered ZeRO-3 shards (a faked
`is_deepspeed_zero3_enabled` and `deepspeed.zero.GatheredParameters`), and QLoRA loaded onto the
local rank's GPU (a faked CUDA)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import types
from types import SimpleNamespace

import pytest
import torch

ROWS = [
    {"id": i, "category": "ab"[i % 2], "answer": f"a{i}", "question": f"q{i}"}
    for i in range(7)  # 7 rows over 2 ranks: shards of 4 and 3 (+1 padding)
]


def _fake_eval_deps(monkeypatch, calls: list):
    """quick_eval's prompt building and generation replaced: row i is answered right when i % 3."""
    from medzoo import inference
    from medzoo.engines import hf_engine
    from medzoo.models import loading

    monkeypatch.setattr(inference, "prepare", lambda rows, *a: SimpleNamespace(prompts=rows, images=[[]] * len(rows)))
    monkeypatch.setattr(loading, "stop_token_ids", lambda *a: [0])

    def generate(model, processor, prompts, images, max_new_tokens, stops, batch_size=8):
        calls.append(len(prompts))
        return [r["answer"] if r["id"] % 3 else "wrong" for r in prompts]

    monkeypatch.setattr(hf_engine, "generate", generate)


_CTX = SimpleNamespace(
    processor=None, family=None, prompt_settings=None, image_settings={},
    recipe=SimpleNamespace(prompts=SimpleNamespace(train_mode="plain")),
)  # fmt: skip


class _Model:
    def eval(self):
        return self

    def train(self):
        return self


def _rank_main(rank: int, world: int, port: int, out: str):
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    with pytest.MonkeyPatch.context() as mp:
        calls: list = []
        _fake_eval_deps(mp, calls)
        from medzoo.train.evaluate import quick_eval

        result = quick_eval(_Model(), _CTX, ROWS, 8)
    dist.barrier()
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"result": result, "calls": calls}, f)


def test_every_rank_evaluates_a_share_and_gets_the_whole_result(tmp_path, monkeypatch):
    """Under ZeRO-3 a rank evaluating alone waits forever on the others' all-gathers: every rank
    generates, the same number of generate() calls each, and all get the single-process result."""
    import torch.multiprocessing as mp

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    calls: list = []
    _fake_eval_deps(monkeypatch, calls)
    from medzoo.train.evaluate import quick_eval

    single = quick_eval(_Model(), _CTX, ROWS, 8)
    assert calls == [7]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank")
    mp.spawn(_rank_main, args=(2, port, out), nprocs=2, join=True)
    ranks = [json.loads(open(f"{out}.{r}").read()) for r in range(2)]
    assert [r["calls"] for r in ranks] == [[4], [4]]  # same number of rows (and batches) on each rank
    assert ranks[0]["result"] == ranks[1]["result"] == single


def _partitioned_peft_model():
    """A tiny peft LoRA model whose trainable weights look as ZeRO-3 leaves them between forwards:
    `data` an empty tensor, the whole weight elsewhere (here: in `full`)."""
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["0", "1"], init_lora_weights=False))
    full = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        if p.requires_grad:
            full[name] = p.data.clone()
            p.ds_id = i
            p.data = torch.empty(0)
    return model, full


def _fake_deepspeed(model, full, entered: list):
    @contextlib.contextmanager
    def gathered(params, modifier_rank=None):
        entered.append((len(params), modifier_rank))
        names = {id(p): n for n, p in model.named_parameters()}
        for p in params:
            p.data = full[names[id(p)]]
        yield
        for p in params:
            p.data = torch.empty(0)

    return types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=gathered))


class _Processor:
    def save_pretrained(self, path):
        open(os.path.join(path, "processor.json"), "w").write("{}")


def test_the_adapter_is_saved_from_gathered_zero3_weights(tmp_path, monkeypatch):
    import transformers.integrations
    from safetensors.torch import load_file

    from medzoo.train.trainer import gathered_adapter, save_adapter

    model, full = _partitioned_peft_model()
    entered: list = []
    monkeypatch.setitem(sys.modules, "deepspeed", _fake_deepspeed(model, full, entered))

    # Without ZeRO-3 it is a no-op: the shards themselves are saved (what rank 0 did alone).
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: False)
    with pytest.warns(UserWarning, match="invalid shape"), gathered_adapter(model):
        save_adapter(model, _Processor(), tmp_path / "shards")
    assert entered == []
    assert all(t.numel() == 0 for t in load_file(str(tmp_path / "shards" / "adapter_model.safetensors")).values())

    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    with gathered_adapter(model):
        save_adapter(model, _Processor(), tmp_path / "adapter")
    assert entered == [(len(full), None)]  # only the trainable weights, read-only
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert len(saved) == len(full) and all(t.numel() > 0 for t in saved.values())
    expect = {k.replace(".default", ""): v for k, v in full.items()}
    for k, v in saved.items():
        assert torch.equal(v, expect[k]), k
    assert all(p.numel() == 0 for p in model.parameters() if p.requires_grad)  # partitioned again after


def test_the_gather_also_lets_the_nan_check_see_the_weights(tmp_path, monkeypatch):
    import transformers.integrations

    from medzoo.train.trainer import TrainingDiverged, gathered_adapter, save_adapter

    model, full = _partitioned_peft_model()
    next(iter(full.values()))[0, 0] = float("nan")
    monkeypatch.setitem(sys.modules, "deepspeed", _fake_deepspeed(model, full, []))
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    with pytest.raises(TrainingDiverged), gathered_adapter(model):
        save_adapter(model, _Processor(), tmp_path / "adapter")


@pytest.mark.parametrize("on_cuda, expect", [(True, {"": 1}), (False, None)])
def test_qlora_loads_onto_the_local_ranks_gpu(monkeypatch, on_cuda, expect):
    """Without a device_map bitsandbytes' quantizer uses torch.cuda.current_device(): cuda:0 on
    every rank, since accelerate sets each rank's device only after the base is loaded."""
    from medzoo.adapters import base_training_kwargs

    monkeypatch.setenv("LOCAL_RANK", "1")
    family = SimpleNamespace(vision_prefixes=["model.visual"])
    kwargs = base_training_kwargs(family, SimpleNamespace(method="qlora"), "fp32", on_cuda=on_cuda)
    assert kwargs.get("device_map") == expect
    lora = base_training_kwargs(family, SimpleNamespace(method="lora"), "fp32", on_cuda=on_cuda)
    assert "device_map" not in lora  # LoRA: the Trainer / DDP / DeepSpeed place it
