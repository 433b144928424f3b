"""End to end (slow): FLARE-style two-image examples at the FLARE25 recipe's own max_pixels (1003520:
~970 tokens per image for Qwen3-VL's 32 px tokens) through vLLM in `medzoo bench` and through
`medzoo serve`'s real vLLM server. Two such images and a prompt exceed vLLM's old fixed context of
2048 tokens, where vLLM refused the whole chunk; the context and the images per prompt now come
from the data."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time

import pytest
from conftest import MEDZOO, run_medzoo

pytestmark = pytest.mark.slow


# A FLARE-style instruction: with two images at 980 tokens each, the prompt passes 2048 tokens.
QUESTION = (
    "You are given two ultrasound frames of the same patient, acquired at the first visit and at the "
    "follow-up visit. Compare the highlighted lesion in both frames. Consider its position relative to "
    "the surrounding tissue, its outline, its echogenicity and its size along the longest axis. Report "
    "whether the lesion in the second frame is larger than in the first frame, answering with yes or no "
    "only, without any explanation. If the lesion is not visible in one of the frames, answer no. "
) * 2


def _flare_style_data(folder, n: int = 4) -> None:
    """Two 1280 x 960 images per record (smooth, so the PNGs stay small), conversation JSON."""
    import numpy as np
    from PIL import Image, ImageDraw

    (folder / "images").mkdir(parents=True)
    y, x = np.mgrid[0:960, 0:1280]
    records = []
    for i in range(n):
        for k in range(2):
            arr = np.stack([(x * (i + 1) // 10) % 256, (y // 4 + 40 * k) % 256, (x + y) // 9 % 256], -1)
            image = Image.fromarray(arr.astype("uint8"))
            ImageDraw.Draw(image).ellipse([300 + 100 * i, 200, 500 + 100 * i, 400], fill=(200, 30, 30))
            image.save(folder / "images" / f"{i}-{k}.png")
        records.append(
            {
                "id": i,
                "image": [f"{i}-0.png", f"{i}-1.png"],
                "conversations": [
                    {"from": "human", "value": "<image>\n<image>\n" + QUESTION},
                    {"from": "gpt", "value": "no"},
                ],
            }
        )
    (folder / "two.json").write_text(json.dumps(records))


def _recipe(tmp_path):
    _flare_style_data(tmp_path / "data", n=30)  # 20+ records: a test split is carved (3 here)
    recipe = tmp_path / "flare-two-images.yaml"
    recipe.write_text(
        "extends: qwen3vl-flare25-tiny\n"
        f"run_dir: {tmp_path / 'run'}\n"
        f"data: {{path: {tmp_path / 'data'}, registry: {{two: {{annotation: two.json, images: images}}}}, mix: two}}\n"
        "image: {max_pixels: 1003520, min_pixels: 3136}\n"  # qwen3vl-flare25's own image settings
    )
    return recipe


def test_two_large_images_per_prompt_pass_through_bench_and_serve(tmp_path):
    recipe = _recipe(tmp_path)
    bench = run_medzoo("bench", str(recipe), "--models", "base", "--engine", "vllm", "--prompts", "none")
    out = tmp_path / "run" / "bench" / "test-vllm"
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert records and all(r["prompt"].count("<|vision_start|>") == 2 for r in records)
    assert all(r["prediction"] is not None for r in records), "vLLM answered every two-image prompt"
    context = int(bench.stdout.split("vLLM context ")[1].split(" ")[0])
    assert context > 2048, bench.stdout  # 2 x ~970 image tokens + text + answer

    served = subprocess.run(
        [str(MEDZOO), "serve", str(recipe), "--print-only"], capture_output=True, text=True, timeout=300
    )
    assert served.returncode == 0, served.stderr
    argv = shlex.split(next(line for line in served.stdout.splitlines() if " serve " in line))
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1])["image"] == 2, served.stdout
    assert int(argv[argv.index("--max-model-len") + 1]) >= context

    from medzoo.serve import free_port

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(MEDZOO), "serve", str(recipe), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.time() + 600
        while "serving base" not in (tmp_path / "serve.log").read_text() and time.time() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
        openai = run_medzoo(
            "bench",
            str(recipe),
            "--models",
            "base",
            "--engine",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{port}/v1",
            "--prompts",
            "none",
        )
        served_records = (tmp_path / "run" / "bench" / "test-openai" / "records.jsonl").read_text().splitlines()
        answers = {json.loads(line)["id"]: json.loads(line)["prediction"] for line in served_records}
        assert answers == {r["id"]: r["prediction"] for r in records}, openai.stdout
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(180)
