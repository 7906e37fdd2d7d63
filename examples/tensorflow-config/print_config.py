"""Print the TF_CONFIG this task sees, and keep a copy in the output directory.

No TensorFlow needed: this is what ``tf.distribute`` would read. Each task writes
``<type>-<index>.json`` to ``CORRAL_OUTPUT_CONFIGS`` so the whole cluster's view
can be checked side by side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def main() -> None:
    config = json.loads(os.environ["TF_CONFIG"])
    task = config["task"]
    print(f"{task['type']} {task['index']}: TF_CONFIG = {json.dumps(config)}", flush=True)
    for name in ("CORRAL_CHIEF_HOST", "CORRAL_WORKER_HOSTS", "CORRAL_PS_HOSTS", "CORRAL_TASK_INDEX"):
        print(f"  {name}={os.environ.get(name, '')}", flush=True)
    out = Path(os.environ["CORRAL_OUTPUT_CONFIGS"])
    (out / f"{task['type']}-{task['index']}.json").write_text(json.dumps(config, indent=1))


if __name__ == "__main__":
    main()
