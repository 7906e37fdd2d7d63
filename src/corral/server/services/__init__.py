"""Server logic, one module per resource; routers call these and nothing else."""
