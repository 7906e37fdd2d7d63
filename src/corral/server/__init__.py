"""The Corral server: FastAPI app, settings, services, the control loop's host."""
