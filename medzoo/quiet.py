"""Third-party messages that tell a medzoo user nothing they can act on, silenced in medzoo's
processes: vLLM's start-up chatter on CPU (thread binding, tcmalloc / libiomp preloading, NUMA,
Triton, its own FutureWarnings), bitsandbytes' note that an optional kernel download failed. Errors
still show. `medzoo --verbose` (MEDZOO_VERBOSE=1, inherited by launched processes) shows everything.
"""

from __future__ import annotations

import logging
import os
import warnings


def verbose() -> bool:
    return os.environ.get("MEDZOO_VERBOSE") == "1"


def vllm_log_level() -> str:
    return "INFO" if verbose() else "ERROR"


def quiet_third_party() -> None:
    if verbose():
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", vllm_log_level())  # read when vLLM is imported
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ warnings (NUMA binding), read at import
    # Some messages are logged while vLLM is imported, before it configures its own logger.
    logging.getLogger("vllm").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm(\.|$)")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"vllm(\.|$)")
