"""Harmony, the gpt-oss format: conversation -> prompt tokens, output tokens -> events,
and one choice's generation in Harmony phases. Below it is only the engine interface."""
