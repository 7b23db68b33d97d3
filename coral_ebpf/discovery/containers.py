"""Container names from the runtimes' own metadata files, looked up by the container id in a cgroup path.

Each runtime keeps a file per container that names it; reading that file needs no daemon and no
socket. A runtime that is not installed simply has no file: the lookup returns None, never an
error. `root` is the filesystem root the runtimes' paths hang from (`/` on a host; a test passes
a directory holding the same layout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Podman's (and CRI-O's) container store: one JSON list of {id, names}.
_PODMAN_STORES = ("var/lib/containers/storage/overlay-containers/containers.json",)
# containerd keeps each running task's OCI bundle under <namespace>/<id>/config.json.
_CONTAINERD_TASKS = "run/containerd/io.containerd.runtime.v2.task"
_CONTAINERD_NAME_ANNOTATIONS = ("io.kubernetes.cri.container-name", "nerdctl/name", "io.kubernetes.container.name")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _docker(root: Path, container_id: str) -> str | None:
    config = _json(root / "var/lib/docker/containers" / container_id / "config.v2.json")
    if isinstance(config, dict) and isinstance(config.get("Name"), str):
        return config["Name"].lstrip("/") or None
    return None


def _podman(root: Path, container_id: str) -> str | None:
    for store in _PODMAN_STORES:
        containers = _json(root / store)
        if not isinstance(containers, list):
            continue
        for container in containers:
            if isinstance(container, dict) and container.get("id") == container_id:
                names = container.get("names")
                if isinstance(names, list) and names and isinstance(names[0], str):
                    return names[0]
    return None


def _containerd(root: Path, container_id: str) -> str | None:
    try:
        namespaces = list((root / _CONTAINERD_TASKS).iterdir())
    except OSError:
        return None
    for namespace in namespaces:
        spec = _json(namespace / container_id / "config.json")
        if not isinstance(spec, dict):
            continue
        annotations = spec.get("annotations")
        if isinstance(annotations, dict):
            for key in _CONTAINERD_NAME_ANNOTATIONS:
                if isinstance(annotations.get(key), str) and annotations[key]:
                    return str(annotations[key])
    return None


def container_name(container_id: str, root: Path = Path("/")) -> str | None:
    """The name Docker, Podman or containerd gave the container, or None when no runtime's files tell."""
    for lookup in (_docker, _podman, _containerd):
        name = lookup(root, container_id)
        if name:
            return name
    return None
