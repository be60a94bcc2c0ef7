"""3-D meshes and their GLB files, as ComfyUI 0.3.64's ``VoxelToMeshBasic`` and ``SaveGLB`` make them.

The fake's voxel grids are solid blocks, so every mesh is a cube: six faces of two triangles each, four
vertices per face (``voxel_to_mesh`` gives every exposed face its own corners), centred on the origin.
:func:`encode_glb` lays the file out as ComfyUI's ``save_glb`` (comfy_extras/nodes_hunyuan3d.py) does: a glTF 2.0
JSON chunk (positions as FLOAT VEC3, indices as UNSIGNED_INT) and one binary chunk.
"""

from __future__ import annotations

import json
import struct
from typing import Any

Vertex = tuple[float, float, float]
Face = tuple[int, int, int]

_CORNERS = (  # each face of the unit cube: four corners, counter-clockwise seen from outside
    ((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)),
    ((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)),
    ((0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)),
    ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)),
    ((1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)),
    ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)),
)


def cube(size: float = 1.0) -> tuple[list[Vertex], list[Face]]:
    """A cube of edge ``size`` centred on the origin: 24 vertices, 12 triangles."""
    vertices: list[Vertex] = []
    faces: list[Face] = []
    for corners in _CORNERS:
        base = len(vertices)
        vertices.extend(tuple((c - 0.5) * size for c in corner) for corner in corners)  # type: ignore[misc]
        faces.extend(((base, base + 1, base + 2), (base, base + 2, base + 3)))
    return vertices, faces


def _pad(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


def encode_glb(vertices: list[Vertex], faces: list[Face], metadata: dict[str, str] | None = None) -> bytes:
    """A binary glTF (GLB) of one triangle mesh; ``metadata`` goes to ``asset.extras`` as ComfyUI puts it."""
    positions = struct.pack(f"<{3 * len(vertices)}f", *(c for v in vertices for c in v))
    indices = struct.pack(f"<{3 * len(faces)}I", *(i for f in faces for i in f))
    buffer = _pad(positions, b"\x00") + _pad(indices, b"\x00")
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "ComfyUI"},
        "buffers": [{"byteLength": len(buffer)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": len(positions), "target": 34962},
            {"buffer": 0, "byteOffset": len(_pad(positions, b"\x00")), "byteLength": len(indices), "target": 34963},
        ],
        "accessors": [
            {
                "bufferView": 0,
                "byteOffset": 0,
                "componentType": 5126,
                "count": len(vertices),
                "type": "VEC3",
                "max": [max(v[i] for v in vertices) for i in range(3)],
                "min": [min(v[i] for v in vertices) for i in range(3)],
            },
            {"bufferView": 1, "byteOffset": 0, "componentType": 5125, "count": 3 * len(faces), "type": "SCALAR"},
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1, "mode": 4}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }
    if metadata is not None:
        gltf["asset"]["extras"] = metadata
    document = _pad(json.dumps(gltf).encode("utf8"), b" ")
    total = 12 + 8 + len(document) + 8 + len(buffer)
    return (
        struct.pack("<4sII", b"glTF", 2, total)
        + struct.pack("<II", len(document), 0x4E4F534A)  # JSON
        + document
        + struct.pack("<II", len(buffer), 0x004E4942)  # BIN
        + buffer
    )
