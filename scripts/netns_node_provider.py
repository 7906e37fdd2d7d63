"""A node provider for Ray's autoscaler whose machines are network-namespace hosts on this machine.

The autoscaler (in the Ray head that ``scripts/netns-cluster.sh up`` starts) asks it for machines of a node type
and it makes them with ``netns-cluster.sh add`` (a namespace with its own address and node disk, and a Ray worker
offering the type's resources) and switches them off with ``netns-cluster.sh remove``. So Corral's clusters on
those machines grow and shrink the way they would on a cloud: Corral asks Ray (``request_resources``), Ray's
autoscaler starts and stops machines. A machine's id is its address (what the autoscaler matches Ray's nodes by).

For tests and trying things out on one machine only: the machines it made are kept in memory, so a restarted
autoscaler forgets them (``netns-cluster.sh down`` removes them all).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from typing import Any

from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

log = logging.getLogger(__name__)


class NetnsNodeProvider(NodeProvider):  # type: ignore[misc]
    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self.script = os.environ["NETNS_SCRIPT"]
        self.lock = threading.Lock()
        self.machines: dict[str, dict[str, str]] = {  # address -> tags; the head is the script's, not ours
            provider_config["head_ip"]: {
                TAG_RAY_NODE_KIND: NODE_KIND_HEAD,
                TAG_RAY_USER_NODE_TYPE: "ray.head.default",
                TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
            }
        }

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        with self.lock:
            return [ip for ip, tags in self.machines.items() if all(tags.get(k) == v for k, v in tag_filters.items())]

    def is_running(self, node_id: str) -> bool:
        with self.lock:
            return node_id in self.machines

    def is_terminated(self, node_id: str) -> bool:
        return not self.is_running(node_id)

    def node_tags(self, node_id: str) -> dict[str, str]:
        with self.lock:
            return dict(self.machines[node_id])

    def internal_ip(self, node_id: str) -> str:
        return node_id

    def external_ip(self, node_id: str) -> str:
        return node_id

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self.lock:
            self.machines[node_id].update(tags)

    def create_node_with_resources_and_labels(
        self,
        node_config: dict[str, Any],
        tags: dict[str, str],
        count: int,
        resources: dict[str, float],
        labels: dict[str, str],
    ) -> None:
        custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory", "object_store_memory")}
        for _ in range(count):
            made = subprocess.run(
                ["bash", self.script, "add", json.dumps(custom), str(int(resources.get("CPU", 1)))],
                capture_output=True,
                text=True,
                check=False,
            )
            if made.returncode != 0:
                raise RuntimeError(f"netns-cluster.sh add failed: {made.stderr.strip()[-2000:]}")
            ip = made.stdout.strip().splitlines()[-1]
            log.info("made host %s for %s", ip, tags)
            up = {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE}
            with self.lock:
                self.machines[ip] = {**tags, **up}

    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int) -> None:
        self.create_node_with_resources_and_labels(node_config, tags, count, {}, {})

    def terminate_node(self, node_id: str) -> None:
        log.info("switching host %s off", node_id)
        subprocess.run(["bash", self.script, "remove", node_id], capture_output=True, check=False)
        with self.lock:
            self.machines.pop(node_id, None)
