"""Serverless worker for OpenAI's gpt-oss models.

Importing this package is instant and pure: no vLLM, torch or runpod import,
no environment read, no GPU probe. Heavy pieces load inside the functions
that need them.
"""

__version__ = "0.1.0"
VLLM_VERSION = "0.32.0"
