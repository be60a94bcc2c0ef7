"""The HTTP API of Comfy Dispatch: native v1 routes and compatibility routes over the same run operations."""
