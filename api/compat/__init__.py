"""Compatibility routes: thin adapters that serve other products' APIs over the same run operations."""
