"""Comfy Dispatch: a queue-driven distributed job dispatcher for ComfyUI workflows."""

__version__ = "0.1.0"
