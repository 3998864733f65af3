"""REST service and dashboard (FastAPI) over the library: see behaviorlm.serving.app."""
