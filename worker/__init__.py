"""The worker: an RQ worker bound to one ComfyUI, executing runs under a lease."""
