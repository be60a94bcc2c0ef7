"""The worker's one websocket notices a ComfyUI gone without a word (a half-open connection): no frame, not
even the pong to its ping, and every subscriber hears it is disconnected."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading

from dispatcher.comfyui.stream import DISCONNECTED, EventHub

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def silent_server() -> tuple[socket.socket, threading.Event]:
    """Accepts one websocket handshake, then reads nothing and answers nothing, as a peer that vanished."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(":", 1)[1].strip()
            for line in request.decode().split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        conn.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        done.wait(30)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, done


def test_a_silent_peer_is_found_dead_by_a_ping_left_unanswered() -> None:
    server, done = silent_server()
    port = server.getsockname()[1]
    hub = EventHub(f"ws://127.0.0.1:{port}/ws", "worker-a", connect_timeout=5, read_timeout=0.2)
    try:
        with hub.subscribe("p") as subscription:
            assert subscription.get(timeout=5) is DISCONNECTED
        assert not hub.connected
    finally:
        done.set()
        hub.close()
        server.close()
