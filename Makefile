# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
MEDZOO := $(VENV)/bin/medzoo
# Built zoo models and datasets live here (override to share a cache between checkouts).
export MEDZOO_HOME ?= $(CURDIR)/.medzoo
# The embedded default needs no hub: fail fast instead of retrying. A default only: a real recipe
# (`make export RECIPE=medgemma-kvasir-vqa HF_HUB_OFFLINE=0`, or HF_HUB_OFFLINE=0 in the environment)
# downloads its base model.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false
PYTEST_ARGS ?=
# Two workers on the 2-core CI machine; each test module stays on one worker (module fixtures are
# built once), in the order tests/conftest.py gives (the long learning trainings first).
PYTEST_WORKERS ?= 2
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: venv demo test test-fast lint format lock export bench-startup bench-train bench-eval bench-serve bench-export clean

venv:
	@bash tools/bootstrap.sh

demo: venv
	$(MEDZOO) zoo list
	$(MEDZOO) zoo build tiny-qwen2.5-vl
	$(MEDZOO) zoo build tiny-gemma3
	test -d $(MEDZOO_HOME)/demo-phantom || $(MEDZOO) data phantom --task vqa,distance,angle,detection,lesion-size \
	  --n 20 --n-val 5 --n-test 5 --format llava --out $(MEDZOO_HOME)/demo-phantom
	$(MEDZOO) recipes list
	$(MEDZOO) generate phantom-tiny --engine hf,vllm
	$(MEDZOO) generate phantom-tiny-gemma --engine hf,vllm
	# --resume: trains on the first run, reuses the finished adapter afterwards.
	$(MEDZOO) train phantom-tiny --resume
	$(MEDZOO) train phantom-tiny-gemma --resume
	# Base vs tuned x three prompt modes in one vLLM engine (resumes / reuses finished results).
	$(MEDZOO) bench phantom-tiny
	$(MEDZOO) bench phantom-tiny-gemma
	$(MAKE) export RECIPE=phantom-tiny
	$(MEDZOO) publish phantom-tiny --repo medzoo/phantom-tiny --what adapter,gguf --dry-run

# Train (if there is no adapter yet), merge and export GGUF (f16, q8_0, q4_k_m + mmproj, Modelfile,
# parity check against the merged model): make export RECIPE=phantom-tiny-gemma
# The tiny models' LM head is most of their weights and has a large random init; quantised, it
# flips answers (q8_0: 2 of 50 on tiny Qwen2.5-VL), so the demo keeps it f16 (llama-quantize's flag).
RECIPE ?= phantom-tiny
EXPORT_FLAGS ?= --leave-output-tensor
export: venv
	$(MEDZOO) train $(RECIPE) --resume
	$(MEDZOO) merge $(RECIPE)
	$(MEDZOO) export $(RECIPE) --gguf --quant f16,q8_0,q4_k_m $(EXPORT_FLAGS)

# Lint + format check, then every test (unit and end to end): what CI runs via .ci/run.
test: venv lint
	$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# The unit tests only (tests/unit, ~1 min): no training runs, no vLLM start.
test-fast: venv
	$(PY) -m pytest tests/unit $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Re-pin requirements/cpu.lock from the current .venv (after deliberately changing a version).
lock: venv
	{ sed -n '1,2p' requirements/cpu.lock; $(VENV)/bin/pip freeze --exclude-editable | grep -v '^medzoo'; \
	  echo "torchaudio==2.11.0"; echo "torchcodec==0.17.0"; } > requirements/cpu.lock.new
	mv requirements/cpu.lock.new requirements/cpu.lock

bench-startup: venv
	$(PY) benchmarks/cli_startup.py

bench-train: venv
	$(PY) benchmarks/train_throughput.py

bench-eval: venv
	$(PY) benchmarks/bench_throughput.py

# Requests/s through `medzoo serve` (vLLM, base + LoRA) vs `vllm serve` of a merged copy, same requests
bench-serve: venv
	$(PY) benchmarks/bench_serving.py

# GGUF size per quantisation vs f16 and llama.cpp answers/s vs the merged HF model (exports first if needed)
bench-export: venv
	$(PY) benchmarks/export_size_speed.py $(RECIPE)

clean:
	rm -rf $(MEDZOO_HOME) runs
