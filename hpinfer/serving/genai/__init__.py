"""``hpinfer genai-server``: the recogniser tier of two-tier document parsing (PaddleOCR-VL), behind an
OpenAI-compatible API. ``app`` (routes), ``schemas`` (the OpenAI models), ``backends`` (native, proxy),
``launchers`` (vLLM, SGLang, llama.cpp servers started behind the proxy)."""
