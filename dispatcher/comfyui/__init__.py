"""Speaking ComfyUI's protocol: HTTP calls, the websocket event stream, and what events mean."""
