"""Job environments: the Python environment a job's processes run in, built with uv on each node and cached."""
