"""The server package does not need the client package: only ``run`` and ``batch`` import it, when they run."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_and_the_api_imports_no_client_package() -> None:
    code = (
        "import sys, dispatcher.cli, api.app\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('comfy_dispatch_client'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
