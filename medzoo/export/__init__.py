"""`medzoo export --gguf`: merged model -> GGUF text model + mmproj, quantised, checked against HF.

- convert: llama.cpp's converter (with medzoo's corrections in gguf_convert) and quantiser;
- parity: the merged transformers model vs each GGUF on the bench examples, and the template checks;
- ollama: the Modelfile; commands: the llama.cpp / Ollama commands printed, served and tested;
- runner: the command as one call.

On CPUs with AMX, llama.cpp's weight-repacking buffer types crash on quantised models (a segfault
while loading): models are loaded with `use_extra_bufts=False`, and the printed commands pass `-nr`.
"""

from medzoo.export.commands import run_commands
from medzoo.export.convert import LLAMA_CPP_PYTHON, QUANTS, ExportError, convert, converter_dir, quantize
from medzoo.export.ollama import OLLAMA_TEMPLATES, modelfile
from medzoo.export.parity import (
    F16_MIN_AGREEMENT,
    NEAR_TIE_LOGITS,
    answer_margin,
    gguf_chat_template,
    gguf_tokenization_mismatch,
    render_with_template,
)
from medzoo.export.runner import ExportResult, export_gguf

__all__ = [
    "F16_MIN_AGREEMENT",
    "LLAMA_CPP_PYTHON",
    "NEAR_TIE_LOGITS",
    "OLLAMA_TEMPLATES",
    "QUANTS",
    "ExportError",
    "ExportResult",
    "answer_margin",
    "convert",
    "converter_dir",
    "export_gguf",
    "gguf_chat_template",
    "gguf_tokenization_mismatch",
    "modelfile",
    "quantize",
    "render_with_template",
    "run_commands",
]
