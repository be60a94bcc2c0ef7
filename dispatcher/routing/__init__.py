"""Which ComfyUI can run a run: capabilities of workers, needs of runs."""
