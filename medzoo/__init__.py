"""medzoo: a model zoo for fine-tuning, benchmarking and shipping medical vision-language models.

The package is a library first; `medzoo.cli` is a thin click layer over it. Heavy libraries
(torch, transformers, vllm) are imported inside the functions that need them, so importing medzoo
and `medzoo --help` stay instant.
"""

__version__ = "0.1.0"
